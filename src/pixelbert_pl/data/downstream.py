"""LightningDataModules of the fine-tuning tasks (docs/paper_facts.md §3): VQA v2, NLVR2 and image-text retrieval,
on data in the published formats.

Records are read once per split (in `setup`, or earlier when `num_answers` is asked for) and large ones are kept
in Arrow. Training batches are equal in number on every rank; evaluation shards are disjoint and never padded with
repeats, so every question, example and image counts once (docs/paper_facts.md §6).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from pixelbert_pl.data.captions import PRETRAIN_SPLITS, AnnotationFile, read_karpathy, to_hf_dataset
from pixelbert_pl.data.datamodules import ArrowRecords, PixelBertDataModule
from pixelbert_pl.data.nlvr2 import NLVR2Dataset, read_nlvr2
from pixelbert_pl.data.retrieval import RetrievalImageDataset, RetrievalTrainDataset, retrieval_texts
from pixelbert_pl.data.vqa import ANNOTATIONS_FORMAT, COCO_IMAGE_PATTERN, VQADataset, read_vqa
from pixelbert_pl.metrics import build_answer_vocab
from pixelbert_pl.processing.batches import (
    RetrievalTexts,
    collate_nlvr2,
    collate_retrieval_images,
    collate_retrieval_train,
    collate_vqa,
)

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def _files(files: str | Sequence[str]) -> list[str]:
    # One path where a list is expected is a common YAML slip; iterating it would read one file per character.
    return [files] if isinstance(files, str) else list(files)


class SplitDataModule(PixelBertDataModule):
    """Records per split ("train", "val", "test"), read once on first use; a subclass says how to read a split,
    which dataset serves it and how its items are collated. `predict` serves the test split, `test` too."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._records: dict[str, Sequence[Any]] = {}

    def read_split(self, split: str) -> Sequence[Any]:
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        raise NotImplementedError

    def records(self, split: str) -> Sequence[Any]:
        if split not in self._records:
            self._records[split] = self.read_split(split)
        return self._records[split]

    def setup(self, stage: str | None = None) -> None:
        for split in _STAGE_SPLITS.get(stage or "fit", ()):
            self.records(split)

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        """The records of every split `stage` reads, by split name (what `pixelbert-check-data` scans)."""
        return {split: self.records(split) for split in _STAGE_SPLITS.get(stage, ())}

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), self.collate("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"), self.collate("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"), self.collate("test"), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"), self.collate("test"), train=False)


class VQADataModule(SplitDataModule):
    """VQA v2 as classification over `answer_vocab` with soft targets (docs/paper_facts.md §3.1, §6.2).

    Args:
        train_questions, train_annotations: questions files and their annotation files, pairwise, for training
            (v2_OpenEnded_mscoco_train2014_questions.json, v2_mscoco_train2014_annotations.json; add val2014 for a
            test-dev submission).
        val_questions, val_annotations: the same for validation.
        test_questions: the questions `predict_dataloader` serves (test-dev2015 or test2015: no annotations).
        test_annotations: their annotations where there are any; `test_dataloader` needs them.
        image_root: the folder holding train2014/, val2014/, test2015/ (default: each questions file's folder).
        image_pattern: an image's file under image_root, filled with the questions file's `data_subtype` and the
            `image_id` (`read_vqa`). test_image_pattern: the same for test_questions (default: image_pattern);
            test-dev2015 questions are about test2015 images: "test2015/COCO_test2015_{image_id:012d}.jpg".
        answer_vocab_annotations: annotation files whose `multiple_choice_answer`s make the answer classes;
            default: the train and val questions read (train2014 + val2014 and min count 9 give the usual 3,129).
        answer_min_count: questions an answer needs to become a class.
        train_image_ids, val_image_ids, test_image_ids: keep only questions about these images.
        questions_per_image: training batches hold the questions of an image this many at a time
            (`GroupedEpochKeyedSampler`), so the CNN runs once for them; 2 halves the CNN's work per batch (VQA v2 has
            5.4 questions per image). Every question is still seen once per epoch. Must divide batch_size.
        allow_missing: skip questions whose image file is missing (with a warning counting them) instead of failing;
            an accuracy over what is left is not the official one.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`: tokenizer, image sizes, batches).
    """

    def __init__(
        self,
        train_questions: str | Sequence[str],
        train_annotations: str | Sequence[str],
        val_questions: str | Sequence[str],
        val_annotations: str | Sequence[str],
        test_questions: str | None = None,
        test_annotations: str | None = None,
        image_root: str | None = None,
        image_pattern: str = COCO_IMAGE_PATTERN,
        test_image_pattern: str | None = None,
        answer_vocab_annotations: Sequence[str] | None = None,
        answer_min_count: int = 9,
        train_image_ids: Sequence[int] | None = None,
        val_image_ids: Sequence[int] | None = None,
        test_image_ids: Sequence[int] | None = None,
        questions_per_image: int = 1,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_options(locals())
        if questions_per_image < 1 or self.options.batch_size % questions_per_image:
            raise ValueError(
                f"questions_per_image={questions_per_image}: expected >= 1 and a divisor of "
                f"batch_size={self.options.batch_size}"
            )
        if self.padding.shapes is not None and questions_per_image > 1:
            # Pure runs give batch_size / questions_per_image images, a run of leftovers more: pad the count to a
            # multiple of the former, so the CNN meets two batch sizes, not every count in between.
            multiple = self.options.batch_size // questions_per_image
            self.padding = dataclasses.replace(self.padding, image_multiple=multiple)
        # (questions file, annotations file or None) per split.
        self.files: dict[str, list[tuple[str, str | None]]] = {
            "test": [(test_questions, test_annotations)] if test_questions is not None else []
        }
        for split, question_files, annotation_files in (
            ("train", _files(train_questions), _files(train_annotations)),
            ("val", _files(val_questions), _files(val_annotations)),
        ):
            if len(question_files) != len(annotation_files):
                raise ValueError(
                    f"{split}_questions has {len(question_files)} files and {split}_annotations "
                    f"{len(annotation_files)}: expected one annotations file per questions file, in the same order"
                )
            self.files[split] = list(zip(question_files, annotation_files, strict=True))

    def read_split(self, split: str) -> Sequence[Any]:
        h = self.options
        if split == "test" and h.test_questions is None:
            raise ValueError("VQADataModule: no test_questions given, so there is nothing to test or predict")
        pattern = (h.test_image_pattern or h.image_pattern) if split == "test" else h.image_pattern
        ids = getattr(h, f"{split}_image_ids")
        ids = None if ids is None else set(ids)
        files = self.files[split]
        if not files:
            # An empty list (the recipes' default) would only fail later, as a missing column deep in `datasets`.
            raise ValueError(
                f"VQADataModule: {split}_questions and {split}_annotations are empty; expected VQA v2 questions files "
                f"and their annotation files, pairwise (e.g. v2_OpenEnded_mscoco_{split}2014_questions.json and "
                f"v2_mscoco_{split}2014_annotations.json)"
            )
        return ArrowRecords.from_records(
            [r for q, a in files for r in read_vqa(q, a, h.image_root, pattern, ids, allow_missing=h.allow_missing)]
        )

    @functools.cached_property
    def answer_vocab(self) -> list[str]:
        """The answer classes: label i is `answer_vocab[i]`, most frequent first (`build_answer_vocab`)."""
        h = self.options
        if h.answer_vocab_annotations is None:
            # Read from the Arrow columns: building 650K record objects only to count answers is slow.
            columns = ["question_id", "multiple_choice_answer"]
            tables = [self.records(split).table.select_columns(columns) for split in ("train", "val")]  # type: ignore[attr-defined]
            entries = [row for table in tables for row in table.to_list()]
        else:
            entries = []
            for path in _files(h.answer_vocab_annotations):
                ann = AnnotationFile(path, ANNOTATIONS_FORMAT)
                entries += ann.field(ann.load("object"), "annotations", "list", "")
        vocab = build_answer_vocab(entries, h.answer_min_count)
        if not vocab:
            raise ValueError(
                f"no answer is the multiple_choice_answer of {h.answer_min_count}+ questions: lower answer_min_count"
            )
        return vocab

    @property
    def num_answers(self) -> int:
        """How many answer classes (the CLI links `answer_vocab` itself to `VQATask`)."""
        return len(self.answer_vocab)

    def test_dataloader(self) -> DataLoader:
        if self.options.test_annotations is None:
            raise ValueError("VQA test questions without annotations are scored by the evaluation server: predict them")
        return super().test_dataloader()

    def train_dataloader(self) -> DataLoader:
        keys = [record.image_id for record in self.records("train")]
        k = self.options.questions_per_image
        return self.loader(self.dataset("train"), self.collate("train"), train=True, group_keys=keys, group_size=k)

    def dataset(self, split: str) -> VQADataset:
        return VQADataset(
            self.records(split), self.transform, self.tokenizer, self.answer_vocab, self.processing.max_text_length
        )

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        return functools.partial(collate_vqa, num_answers=self.num_answers, pad_token_id=self.tokenizer.pad_token_id)


class NLVR2DataModule(SplitDataModule):
    """NLVR2 in the "Pair" setting (docs/paper_facts.md §3.2): train, dev as "val", and test1 (or test2) as "test".

    Args:
        train_file, val_file, test_file: JSON-lines files (train.json, dev.json, test1.json).
        image_root: the folder holding train/<directory>/, and dev/ and test1/ unless eval_image_root is given
            (`read_nlvr2`). eval_image_root: the folder holding dev/ and test1/ (ViLT's layout keeps them beside
            images/, which holds train/).
        allow_missing: skip examples whose image file is missing (with a warning counting them) instead of failing;
            this breaks their consistency groups.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`).

    Every line of train_file and val_file must have a label; test_file may have none (a hidden test split).
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        image_root: str,
        test_file: str | None = None,
        eval_image_root: str | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_options(locals())

    def read_split(self, split: str) -> Sequence[Any]:
        h = self.options
        path = getattr(h, f"{split}_file")
        if path is None:
            raise ValueError("NLVR2DataModule: no test_file given, so there is nothing to test or predict")
        root = h.image_root if split == "train" else h.eval_image_root or h.image_root
        # Only a hidden test split may be unlabelled: an unlabelled training or dev example would count as neither.
        labelled = True if split in ("train", "val") else None
        return ArrowRecords.from_records(read_nlvr2(path, root, labelled=labelled, allow_missing=h.allow_missing))

    def dataset(self, split: str) -> NLVR2Dataset:
        return NLVR2Dataset(self.records(split), self.transform, self.tokenizer, self.processing.max_text_length)

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        return functools.partial(collate_nlvr2, pad_token_id=self.tokenizer.pad_token_id)


class RetrievalDataModule(SplitDataModule):
    """Image-text retrieval on a Karpathy split file (docs/paper_facts.md §3.3, §6.4).

    Training batches are `RetrievalTrainBatch`es (each image-caption pair, every one once an epoch, with
    `num_negatives` negative captions).
    Validation and test batches are `RetrievalImageBatch`es over the split's images, each image on one
    rank; every rank scores its images against all of the split's texts, `val_texts` / `test_texts`.

    Args:
        karpathy_file: dataset_coco.json or dataset_flickr30k.json.
        image_root: COCO: the folder holding train2014/ and val2014/; Flickr30K: flickr30k-images/ itself.
        train_splits: Karpathy splits to train on; Flickr30K has no "restval", so give ["train"] there.
        val_split, test_split: the Karpathy splits evaluated (COCO-5K / Flickr30K-1K test: "test").
        num_negatives: negative captions per image-caption pair (the paper's 20).
        max_eval_images: evaluate on the first N images of a split (and their texts) only, for speed.
        allow_missing: skip images whose file is missing (with a warning counting them) instead of failing; recall
            over a smaller split is not comparable to published numbers.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`).
    """

    def __init__(
        self,
        karpathy_file: str,
        image_root: str | None = None,
        train_splits: Sequence[str] = PRETRAIN_SPLITS,
        val_split: str = "val",
        test_split: str = "test",
        num_negatives: int = 20,
        max_eval_images: int | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_options(locals())

    def read_split(self, split: str) -> Sequence[Any]:
        h = self.options
        root = h.image_root or str(Path(h.karpathy_file).parent)
        if split == "train":
            train = read_karpathy(h.karpathy_file, root, h.train_splits, allow_missing=h.allow_missing)
            return ArrowRecords(to_hf_dataset(train))
        split_name = getattr(h, f"{split}_split")
        return read_karpathy(h.karpathy_file, root, [split_name], allow_missing=h.allow_missing)[: h.max_eval_images]

    def dataset(self, split: str) -> Dataset:
        h = self.options
        if split == "train":
            return RetrievalTrainDataset(
                self.records(split),
                self.transform,
                self.tokenizer,
                self.processing.max_text_length,
                h.num_negatives,
                h.seed,
            )
        return RetrievalImageDataset(self.records(split), self.transform)

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        if split == "train":
            return functools.partial(collate_retrieval_train, pad_token_id=self.tokenizer.pad_token_id)
        return collate_retrieval_images

    @functools.cached_property
    def val_texts(self) -> RetrievalTexts:
        """All texts of the val split; `text_to_image` indexes the `image_positions` of the val batches."""
        return retrieval_texts(self.records("val"), self.tokenizer, self.processing.max_text_length)

    @functools.cached_property
    def test_texts(self) -> RetrievalTexts:
        """All texts of the test split; `text_to_image` indexes the `image_positions` of the test batches."""
        return retrieval_texts(self.records("test"), self.tokenizer, self.processing.max_text_length)
