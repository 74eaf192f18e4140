"""Pre-training samples: one image, several captions, ITM negatives and MLM masks, all decided per sample.

Everything random about what a sample sees (which captions, which negatives, which tokens are masked, which
pixels are sampled) comes from its key (`records.sample_rng`), so a sample is the same in any batch, rank or worker
and after a resume. `PretrainDataModule` reads COCO (Karpathy train + restval) and Visual Genome in their published
formats, dropping every VG image that is a Karpathy val/test (or Flickr30K val/test) image; streaming.py serves the
same samples from shards.

An epoch of pre-training is every (image, caption) pair, as in the paper and ViLT (`CaptionPairIndex`): an item is
one image with some of its captions, so the CNN runs once for all of them.

Shapes: n images, r = n * captions_per_image text rows, t tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.base import PixelBertDataModule
from pixelbert_pl.data.captions import (
    EVAL_SPLITS,
    PRETRAIN_SPLITS,
    ImageCaptions,
    karpathy_coco_ids,
    karpathy_flickr_ids,
    read_karpathy,
    read_visual_genome,
    to_hf_dataset,
)
from pixelbert_pl.data.records import (
    ArrowRecords,
    CaptionPairDataset,
    negative_caption,
    sample_rng,
    split_key,
)
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.batches import IGNORE_INDEX, collate_pretrain
from pixelbert_pl.processing.items import PretrainItem


def matched_rows(captions_per_image: int) -> int:
    """Matched caption rows of a pre-training item: all but half of its rows (rounded down), which are ITM negatives;
    a single row is matched (a coin flip makes it a negative in half the epochs)."""
    return captions_per_image - captions_per_image // 2 if captions_per_image > 1 else 1


class CaptionPretrainDataset(CaptionPairDataset[PretrainItem]):
    """Item = one image (decoded, resized, normalised) with `captions_per_image` caption rows.

    Half of each item's rows (rounded down; a coin flip when there is one row) carry a caption of another image that
    is not also one of this image's captions: the ITM negatives, as many as the matched rows. The matched rows are
    the item's captions in a `CaptionPairIndex`, so an epoch (`epoch="pairs"`, for training) has every image-caption
    pair in a matched row once (COCO's 5 per image, VG's dozens of region phrases); `epoch="images"` (validation) has
    one item per image. Matched and unmatched rows are masked alike, so `[MASK]` betrays nothing about matching; the
    MLM loss reads matched rows only, since a caption of another image cannot be reconstructed from this image's
    pixels.

    `hard_negatives` ((image_id, caption) -> false captions one word away from it) with `hard_negative_probability`
    p makes each negative row, with probability p, a false twin of one of the item's matched captions instead: a
    model that matches on one kind of word alone (colour, say) cannot tell such a pair apart, while another image's
    caption usually differs in several. The words where a twin differs from its caption are never masked, so the row
    always says something false about the image.
    """

    def __init__(
        self,
        records: Sequence[ImageCaptions],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        max_text_length: int = 40,
        captions_per_image: int = 2,
        mlm_probability: float = 0.15,
        seed: int = 0,
        mlm_word_probabilities: Mapping[str, float] | None = None,
        epoch: Literal["pairs", "images"] = "pairs",
        caption_counts: Sequence[int] | None = None,
        hard_negatives: Mapping[tuple[str, str], Sequence[str]] | None = None,
        hard_negative_probability: float = 0.0,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image={captions_per_image}: expected >= 1 caption rows per image")
        if epoch not in ("pairs", "images"):
            raise ValueError(f"epoch={epoch!r}: expected 'pairs' or 'images'")
        super().__init__(
            records, transform, tokenizer, max_text_length, seed, per_item=matched_rows(captions_per_image),
            one_per_image=epoch == "images", caption_counts=caption_counts,
        )  # fmt: skip
        self.captions_per_image = captions_per_image
        self.num_negative = captions_per_image // 2 if captions_per_image > 1 else None  # None: the coin flip
        self.mlm_probability = mlm_probability
        self.word_probability = self._word_probabilities(tokenizer, mlm_word_probabilities or {})
        self.special_ids = set(tokenizer.all_special_ids)
        self.mask_id = int(tokenizer.mask_token_id)
        if not 0 <= hard_negative_probability <= 1:
            raise ValueError(f"hard_negative_probability={hard_negative_probability}: expected a probability in [0, 1]")
        if hard_negative_probability > 0 and not hard_negatives:
            raise ValueError(
                f"hard_negative_probability={hard_negative_probability} needs hard_negatives "
                "((image_id, caption) -> false twins)"
            )
        self.hard_negatives = hard_negatives or {}
        self.hard_negative_probability = hard_negative_probability
        if hard_negative_probability > 0:
            self._check_twins_meet_records(records)

    def _check_twins_meet_records(self, records: Sequence[ImageCaptions]) -> None:
        """Twins keyed other than the records (another id scheme, edited captions) would leave every negative
        another image's caption, silently: the run would train without what it asked for."""
        if any((r.image_id, c) in self.hard_negatives for r in records for c in r.captions):
            return
        record_key = (records[0].image_id, records[0].captions[0]) if records else None
        raise ValueError(
            f"hard_negatives: no key matches a record's (image_id, caption); a record has {record_key!r}, "
            f"hard_negatives has {next(iter(self.hard_negatives))!r}: key the twins by the records' image ids and "
            "exact caption texts"
        )

    @staticmethod
    def _word_probabilities(tokenizer: PreTrainedTokenizerBase, words: Mapping[str, float]) -> dict[int, float]:
        """Token id -> masking probability for words masked more (or less) often than the rest."""
        out: dict[int, float] = {}
        for word, probability in words.items():
            token = cast(int | None, tokenizer.convert_tokens_to_ids(word))  # one token string: one id (or None)
            if token is None or token == tokenizer.unk_token_id:
                raise ValueError(f"mlm_word_probabilities: {word!r} is not one token of the tokenizer's vocabulary")
            if not 0 <= probability <= 1:
                raise ValueError(f"mlm_word_probabilities[{word!r}]={probability}: expected a probability in [0, 1]")
            out[int(token)] = float(probability)
        return out

    def load(self, key: tuple[int, int] | int) -> PretrainItem:
        epoch, index = split_key(key)
        rng = sample_rng(self.seed, epoch, index)
        record_index, chosen = self.pairs.captions(index, epoch, self.seed)
        record = self.records[record_index]
        captions = record.captions
        n_negative = self.num_negative if self.num_negative is not None else int(rng.random() < 0.5)
        own = set(captions)
        # With one row the coin flip's negative stands in for the pair (seen as a positive in half the epochs).
        texts = [captions[c] for c in chosen[: self.captions_per_image - n_negative]]
        twin_of = [self._twin_source(record.image_id, texts, rng) for _ in range(n_negative)]
        texts += [
            negative_caption(self.records, record_index, own, rng)
            if source is None
            else self._twin(record.image_id, source, rng)
            for source in twin_of
        ]
        matched = [1] * (len(texts) - n_negative) + [0] * n_negative
        encoded = self.token_ids(texts)
        sources = [None] * (len(texts) - n_negative) + twin_of
        keep = [self._swapped(ids, source) for ids, source in zip(encoded, sources, strict=True)]
        input_ids, labels = [], []
        for ids, m, kept in zip(encoded, matched, keep, strict=True):
            masked, mlm = self._mask(ids, rng, kept)
            input_ids.append(masked)
            labels.append(mlm if m else [IGNORE_INDEX] * len(ids))
        return {
            "pixel_values": self.image(record.image_path),
            "input_ids": input_ids,
            "mlm_labels": labels,
            "itm_labels": matched,
            "pixel_sample_seeds": [int(s) for s in rng.integers(0, 2**62, size=self.captions_per_image)],
            "sample_id": index,
        }

    def _twin_source(self, image_id: str, matched: Sequence[str], rng: np.random.Generator) -> str | None:
        """The matched caption whose false twin a negative row carries, or None for another image's caption. Draws
        nothing when hard negatives are off, so that those runs' samples stay what they were."""
        if self.hard_negative_probability <= 0 or rng.random() >= self.hard_negative_probability:
            return None
        with_twins = [text for text in matched if self.hard_negatives.get((image_id, text))]
        return with_twins[int(rng.integers(len(with_twins)))] if with_twins else None

    def _twin(self, image_id: str, caption: str, rng: np.random.Generator) -> str:
        twins = self.hard_negatives[(image_id, caption)]
        return twins[int(rng.integers(len(twins)))]

    def _swapped(self, ids: list[int], source: str | None) -> set[int]:
        """Positions where a twin's tokens differ from its caption's (all of them if the lengths differ)."""
        if source is None:
            return set()
        original = self.token_ids([source])[0]
        if len(original) != len(ids):
            return set(range(len(ids)))
        return {i for i, (a, b) in enumerate(zip(ids, original, strict=True)) if a != b}

    def _mask(
        self, ids: list[int], rng: np.random.Generator, keep: AbstractSet[int] = frozenset()
    ) -> tuple[list[int], list[int]]:
        """BERT masking: each real token with `mlm_probability` (at least one); of those 80% -> [MASK],
        10% -> a random non-special token, 10% unchanged. Labels hold IGNORE_INDEX where nothing is masked.
        Words in `mlm_word_probabilities` use their own probability (one random draw per token either way, so the
        default draws exactly what plain BERT masking draws). Positions in `keep` are never masked."""
        candidates = [i for i, tok in enumerate(ids) if tok not in self.special_ids and i not in keep]
        labels = [IGNORE_INDEX] * len(ids)
        masked = list(ids)
        if not candidates:
            return masked, labels
        if self.mlm_probability <= 0:  # MLM switched off (an ITM-only run): captions stay intact
            return masked, labels
        p = self.word_probability
        draws = rng.random(len(candidates))  # the same numbers as one rng.random() per candidate, in one call
        chosen = [i for i, d in zip(candidates, draws, strict=True) if d < p.get(ids[i], self.mlm_probability)]
        chosen = chosen or [int(rng.choice(candidates))]
        for i in chosen:
            labels[i] = ids[i]
            roll = rng.random()
            if roll < 0.8:
                masked[i] = self.mask_id
            elif roll < 0.9:
                masked[i] = self._random_token(rng)
        return masked, labels

    def _random_token(self, rng: np.random.Generator) -> int:
        while True:
            token = int(rng.integers(len(self.tokenizer)))
            if token not in self.special_ids:
                return token


class PretrainSplits(PixelBertDataModule):
    """What the in-memory pre-training DataModules share, whatever they read: MLM + ITM items over image-caption
    records (`CaptionPretrainDataset`). A subclass reads the records of "train" and "val" (`read_split`).

    Args:
        captions_per_image: caption rows per item (half of them, rounded down, ITM negatives); the CNN runs once for
            all of them. An epoch is every image-caption pair in a matched row once (`CaptionPairIndex`).
        mlm_probability: BERT's masking rate (0.15); 0 switches MLM masking off (an ITM-only run).
        mlm_word_probabilities: words masked at their own rate instead, e.g. {red: 0.5, circle: 0.5} to mask
            visually grounded words more often (off by default; the paper masks every word alike).
        max_val_images: validate on the first N val images only (all 5,000 at 800 px are slow).
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`: tokenizer, image sizes, batches).
    """

    def __init__(
        self,
        captions_per_image: int = 2,
        mlm_probability: float = 0.15,
        mlm_word_probabilities: dict[str, float] | None = None,
        max_val_images: int | None = None,
        **kwargs: Any,
    ) -> None:
        # jsonargparse follows **kwargs to `PixelBertDataModule`'s signature, so the CLI and YAMLs see them by name.
        super().__init__(**kwargs)
        self.captions_per_image, self.mlm_probability = captions_per_image, mlm_probability
        self.mlm_word_probabilities, self.max_val_images = mlm_word_probabilities, max_val_images
        self.train_records: Sequence[ImageCaptions] = []
        self.val_records: Sequence[ImageCaptions] = []
        # A subclass whose corpus has false twins of its captions sets this and `hard_negatives` (ShapesWorld does).
        self.hard_negative_probability = 0.0

    def read_split(self, split: str) -> Sequence[ImageCaptions]:
        raise NotImplementedError(f"{type(self).__name__} must implement read_split(split)")

    def hard_negatives(self) -> Mapping[tuple[str, str], Sequence[str]] | None:
        """(image_id, caption) -> false captions one word away from it, for training's ITM negatives (none by
        default); keyed by image, since a twin false for one scene may be true for another with the same caption."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if not len(self.train_records) and stage in (None, "fit"):
            self.train_records = self.read_split("train")
        if not len(self.val_records) and stage in (None, "fit", "validate", "predict"):
            val = self.read_split("val")
            self.val_records = val[: self.max_val_images] if self.max_val_images else val

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        self.setup(stage)
        return {"train": self.train_records, "val": self.val_records} if stage == "fit" else {"val": self.val_records}

    def dataset(self, records: Sequence[ImageCaptions], train: bool = True) -> CaptionPretrainDataset:
        """Training: an epoch is every image-caption pair; validation: one item per image (`max_val_images` bounds
        its cost, whatever the captions per image)."""
        dataset = CaptionPretrainDataset(
            records,
            self.transform,
            self.tokenizer,
            max_text_length=self.processing.max_text_length,
            captions_per_image=self.captions_per_image,
            mlm_probability=self.mlm_probability,
            mlm_word_probabilities=self.mlm_word_probabilities,
            seed=self.seed,
            epoch="pairs" if train else "images",
            # Validation keeps other images' captions, the negatives its ITM accuracy is reported on.
            hard_negatives=self.hard_negatives() if train and self.hard_negative_probability else None,
            hard_negative_probability=self.hard_negative_probability if train else 0.0,
        )
        split = "train" if train else "val"
        dataset.image_bytes, dataset.image_sizes = self.image_bytes.get(split), self.image_sizes.get(split)
        return dataset

    def train_dataloader(self) -> DataLoader:
        collate = functools.partial(collate_pretrain, pad_token_id=self.tokenizer.pad_token_id)
        return self.loader(self.dataset(self.train_records), collate, train=True)

    def val_dataloader(self) -> DataLoader:
        collate = functools.partial(collate_pretrain, pad_token_id=self.tokenizer.pad_token_id)
        return self.loader(self.dataset(self.val_records, train=False), collate, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The validation pairs, matched and not (`pixelbert predict` gives each its ITM probability)."""
        return self.val_dataloader()


class PretrainDataModule(PretrainSplits):
    """Image-caption pairs for MLM + ITM pre-training.

    Args:
        karpathy_file: `dataset_coco.json`; its `train_splits` images are pre-training data, `val_splits` validate.
        image_root: folder holding the Karpathy `filepath` folders (train2014/, val2014/).
        vg_regions: Visual Genome `region_descriptions.json`. VG images whose coco_id is a Karpathy val/test image
            are dropped, so evaluation images never reach pre-training.
        vg_image_data: Visual Genome `image_data.json` (with vg_regions).
        vg_image_dirs: the Visual Genome image folders (VG_100K, VG_100K_2) (with vg_regions).
        flickr30k_file: Flickr30K's `dataset_flickr30k.json`: VG images whose flickr_id is one of its val/test images
            are dropped too, so a model pre-trained here can be evaluated on Flickr30K retrieval.
        allow_missing: skip images whose file is missing (with a warning counting them) instead of failing.
        **kwargs: `PretrainSplits`' (captions_per_image, mlm_probability, mlm_word_probabilities, max_val_images)
            and the settings every DataModule shares, among them tokenizer: HF name or local directory / vocab.txt
            of the BERT WordPiece tokenizer.
    """

    def __init__(
        self,
        karpathy_file: str | None = None,
        image_root: str | None = None,
        train_splits: Sequence[str] = PRETRAIN_SPLITS,
        val_splits: Sequence[str] = ("val",),
        vg_regions: str | None = None,
        vg_image_data: str | None = None,
        vg_image_dirs: Sequence[str] = (),
        flickr30k_file: str | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if karpathy_file is None and vg_regions is None:
            raise ValueError("PretrainDataModule needs a corpus: set karpathy_file and/or vg_regions")
        self.karpathy_file, self.image_root = karpathy_file, image_root
        self.train_splits, self.val_splits = list(train_splits), list(val_splits)
        self.vg_regions, self.vg_image_data, self.vg_image_dirs = vg_regions, vg_image_data, list(vg_image_dirs)
        self.flickr30k_file, self.allow_missing = flickr30k_file, allow_missing

    def read_records(self, splits: Sequence[str], with_vg: bool) -> list[ImageCaptions]:
        records: list[ImageCaptions] = []
        if self.karpathy_file is not None:
            root = self.image_root or str(Path(self.karpathy_file).parent)
            records += read_karpathy(self.karpathy_file, root, splits, allow_missing=self.allow_missing)
        if with_vg and self.vg_regions is not None:
            if self.vg_image_data is None or not self.vg_image_dirs:
                raise ValueError("vg_regions needs vg_image_data and vg_image_dirs as well")
            held_out = karpathy_coco_ids(self.karpathy_file, EVAL_SPLITS) if self.karpathy_file else set()
            flickr = karpathy_flickr_ids(self.flickr30k_file, EVAL_SPLITS) if self.flickr30k_file else set()
            records += read_visual_genome(
                self.vg_regions,
                self.vg_image_data,
                self.vg_image_dirs,
                exclude_coco_ids=held_out,
                exclude_flickr_ids=flickr,
                allow_missing=self.allow_missing,
            )
        return records

    def read_split(self, split: str) -> Sequence[ImageCaptions]:
        if split == "train":
            return ArrowRecords(to_hf_dataset(self.read_records(self.train_splits, True)))
        return self.read_records(self.val_splits, False)
