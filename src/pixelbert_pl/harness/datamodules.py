"""LightningDataModules over the embedded ShapesWorld corpus: pre-training (`ShapesWorldDataModule`) and the
fine-tuning tasks (`ShapesWorldVQADataModule`, `ShapesWorldNLVR2DataModule`, `ShapesWorldRetrievalDataModule`).

Each generates the corpus into `root` on first use and only points the library DataModule it extends at files
there: the corpus is written in the published formats and goes through the same readers as real data; all that
differs are paths, the image pattern and defaults sized for a 96-pixel corpus of a few thousand images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixelbert_pl.data import NLVR2DataModule, PretrainDataModule, RetrievalDataModule, VQADataModule
from pixelbert_pl.data.captions import karpathy_coco_ids
from pixelbert_pl.harness.shapes import HARD_NEGATIVE_KINDS


class ShapesWorldCorpus:
    """For DataModules over the embedded ShapesWorld corpus in `self.root`, generated there on first use.

    Their constructors spell out the arguments whose ShapesWorld default differs from real data's (not left in
    **kwargs): LightningCLI passes every parent argument explicitly, with the parent's default."""

    root: Path

    def open_corpus(
        self,
        root: str,
        num_images: int,
        image_size: int,
        seed: int,
        holdout: Sequence[str],
        tokenizer: str | None,
        max_objects: int = 4,
        num_nlvr2: int | None = None,
    ) -> str:
        """Point `root` at the corpus, generating it if needed; returns the tokenizer (default: its vocab.txt)."""
        self.root = Path(root)
        self.ensure_corpus(num_images, image_size, seed, tuple(holdout), max_objects, num_nlvr2)
        return tokenizer or str(self.root / "vocab.txt")

    def ensure_corpus(
        self,
        num_images: int,
        image_size: int,
        seed: int,
        holdout: tuple[str, ...],
        max_objects: int = 4,
        num_nlvr2: int | None = None,
    ) -> None:
        """Generate the corpus unless `root` already holds one (deterministic, so regenerating is never needed)."""
        if (self.root / "karpathy.json").exists() and (self.root / "vocab.txt").exists():
            return
        from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate

        nlvr2: dict[str, Any] = {} if num_nlvr2 is None else {"num_nlvr2": num_nlvr2}
        config = ShapesWorldConfig(
            num_images=num_images, image_size=image_size, heldout=holdout, max_objects=max_objects, **nlvr2
        )
        generate(self.root, config, seed)


class ShapesWorldDataModule(PretrainDataModule, ShapesWorldCorpus):
    """Pre-training on the embedded ShapesWorld corpus, generated into `root` on first use.

    The corpus is written in the published COCO / Karpathy formats, so it goes through the same readers as
    real data; only its location and its generated WordPiece vocabulary are special. `max_objects=1` gives
    one-shape scenes, where every colour or shape word names the only object: the demo's warm-up corpus (its
    vocabulary comes from the grammar, so it equals the full corpus's and checkpoints carry over). `num_nlvr2`
    sets how many NLVR2 examples a newly generated corpus gets (None: the generator's default); pre-training reads
    none of them, so a corpus only pre-trained on can skip them (0), saving their generation time.
    `hard_negative_probability` makes that share of training's ITM negatives a false twin of a matched caption
    (`hard_negatives.json`, the `hard_negative_kinds` of swap) instead of another image's caption.
    """

    def __init__(
        self,
        root: str = "data/shapesworld",
        num_images: int = 2000,
        image_size: int = 96,
        generator_seed: int = 0,
        holdout: Sequence[str] = (),
        max_objects: int = 4,
        num_nlvr2: int | None = None,
        tokenizer: str | None = None,
        train_splits: Sequence[str] = ("train",),
        image_min_size: int = 96,
        image_max_size: int = 96,
        max_text_length: int = 24,
        hard_negative_probability: float = 0.0,
        hard_negative_kinds: Sequence[str] = ("colour", "shape"),
        **kwargs: Any,
    ) -> None:
        vocab = self.open_corpus(
            root, num_images, image_size, generator_seed, holdout, tokenizer, max_objects, num_nlvr2
        )
        super().__init__(
            tokenizer=vocab,
            karpathy_file=str(self.root / "karpathy.json"),
            image_root=str(self.root),
            train_splits=train_splits,  # ShapesWorld has no Karpathy "restval" split
            image_min_size=image_min_size,
            image_max_size=image_max_size,
            max_text_length=max_text_length,
            **kwargs,
        )
        unknown = set(hard_negative_kinds) - set(HARD_NEGATIVE_KINDS)
        if unknown:
            raise ValueError(f"hard_negative_kinds: {sorted(unknown)} unknown; expected some of {HARD_NEGATIVE_KINDS}")
        self.hard_negative_probability, self.hard_negative_kinds = hard_negative_probability, tuple(hard_negative_kinds)

    def hard_negatives(self) -> dict[tuple[str, str], list[str]]:
        """(image_id, caption) -> the caption's false twins of `hard_negative_kinds`, from hard_negatives.json; ids
        as `read_karpathy` gives them ("coco:<cocoid>")."""
        coco = json.loads((self.root / "captions.json").read_text())
        text = {a["id"]: a["caption"].strip() for a in coco["annotations"]}
        twins: dict[tuple[str, str], list[str]] = {}
        for entry in json.loads((self.root / "hard_negatives.json").read_text())["hard_negatives"]:
            found = [n["caption"] for n in entry["negatives"] if n["kind"] in self.hard_negative_kinds]
            if found:
                twins[(f"coco:{entry['image_id']}", text[entry["caption_id"]])] = found
        return twins


def _karpathy_ids(root: Path, karpathy_split: str) -> list[int]:
    return sorted(karpathy_coco_ids(root / "karpathy.json", [karpathy_split]))


class ShapesWorldVQADataModule(VQADataModule, ShapesWorldCorpus):
    """VQA on ShapesWorld (`root`, generated on first use). Its questions and annotations are one file each for
    all images, so an image's Karpathy split decides its questions' split: train -> train, val -> val,
    test -> test and predict (annotated, so both score)."""

    def __init__(
        self,
        root: str = "data/shapesworld",
        num_images: int = 2000,
        image_size: int = 96,
        generator_seed: int = 0,
        holdout: Sequence[str] = (),
        tokenizer: str | None = None,
        image_min_size: int = 96,
        image_max_size: int = 96,
        max_text_length: int = 24,
        # ShapesWorld's answers come from a closed grammar (yes/no, counts, colours, shapes, sizes) with no noisy
        # tail to cut, and a corpus of a few hundred questions would lose real answers to VQA's threshold of 9.
        answer_min_count: int = 1,
        **kwargs: Any,
    ) -> None:
        vocab = self.open_corpus(root, num_images, image_size, generator_seed, holdout, tokenizer)
        questions, annotations = str(self.root / "vqa_questions.json"), str(self.root / "vqa_annotations.json")
        super().__init__(
            train_questions=[questions],
            train_annotations=[annotations],
            val_questions=[questions],
            val_annotations=[annotations],
            test_questions=questions,
            test_annotations=annotations,
            image_root=str(self.root),
            image_pattern="images/shapes_{image_id:012d}.png",
            answer_min_count=answer_min_count,
            train_image_ids=_karpathy_ids(self.root, "train"),
            val_image_ids=_karpathy_ids(self.root, "val"),
            test_image_ids=_karpathy_ids(self.root, "test"),
            tokenizer=vocab,
            image_min_size=image_min_size,
            image_max_size=image_max_size,
            max_text_length=max_text_length,
            **kwargs,
        )


class ShapesWorldNLVR2DataModule(NLVR2DataModule, ShapesWorldCorpus):
    """NLVR2 on ShapesWorld (`root`, generated on first use): nlvr2/{train,dev,test}.json, images in nlvr2/images/.

    A corpus generated without NLVR2 (`num_nlvr2: 0`, as the demo's pre-training writes it) gets `num_nlvr2`
    examples added here (None: the generator's default), from the corpus's own seed and config."""

    def __init__(
        self,
        root: str = "data/shapesworld",
        num_images: int = 2000,
        image_size: int = 96,
        generator_seed: int = 0,
        holdout: Sequence[str] = (),
        num_nlvr2: int | None = None,
        tokenizer: str | None = None,
        image_min_size: int = 96,
        image_max_size: int = 96,
        max_text_length: int = 24,
        **kwargs: Any,
    ) -> None:
        if num_nlvr2 is not None and num_nlvr2 < 2:
            raise ValueError(f"num_nlvr2={num_nlvr2}: an NLVR2 run needs examples; expected >= 2 or None")
        vocab = self.open_corpus(root, num_images, image_size, generator_seed, holdout, tokenizer, num_nlvr2=num_nlvr2)
        nlvr2 = self.root / "nlvr2"
        if not (nlvr2 / "train.json").exists():
            from pixelbert_pl.harness.shapes import add_nlvr2

            add_nlvr2(self.root, num_nlvr2)
        super().__init__(
            train_file=str(nlvr2 / "train.json"),
            val_file=str(nlvr2 / "dev.json"),
            test_file=str(nlvr2 / "test.json"),
            image_root=str(nlvr2 / "images"),
            tokenizer=vocab,
            image_min_size=image_min_size,
            image_max_size=image_max_size,
            max_text_length=max_text_length,
            **kwargs,
        )


class ShapesWorldRetrievalDataModule(RetrievalDataModule, ShapesWorldCorpus):
    """Retrieval on ShapesWorld (`root`, generated on first use): its karpathy.json, trained on "train" only."""

    def __init__(
        self,
        root: str = "data/shapesworld",
        num_images: int = 2000,
        image_size: int = 96,
        generator_seed: int = 0,
        holdout: Sequence[str] = (),
        tokenizer: str | None = None,
        image_min_size: int = 96,
        image_max_size: int = 96,
        max_text_length: int = 24,
        train_splits: Sequence[str] = ("train",),  # ShapesWorld has no Karpathy "restval" split
        **kwargs: Any,
    ) -> None:
        vocab = self.open_corpus(root, num_images, image_size, generator_seed, holdout, tokenizer)
        super().__init__(
            karpathy_file=str(self.root / "karpathy.json"),
            image_root=str(self.root),
            train_splits=train_splits,
            tokenizer=vocab,
            image_min_size=image_min_size,
            image_max_size=image_max_size,
            max_text_length=max_text_length,
            **kwargs,
        )
