"""VQA v2 (docs/paper_facts.md §3.1, §7.4): questions joined with their annotations, one sample per question, and a
collate that gives each distinct image of a batch one row of pixels, so the CNN runs once for all questions about it.

Shapes: n distinct images, b questions, t tokens, a answer classes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.annotations import (
    AnnotationError,
    AnnotationFile,
    DirectoryIndex,
    PathLike,
    UniqueField,
    absolute_path,
    drop_missing,
)
from pixelbert_pl.data.base import SplitDataModule, as_list
from pixelbert_pl.data.hf import HFSource, list_value
from pixelbert_pl.data.hf_streaming import StreamedTask
from pixelbert_pl.data.records import ArrowRecords, RecordDataset, split_key
from pixelbert_pl.data.sources import DatasetSource, SourceError, require_columns, source_stamp
from pixelbert_pl.metrics import build_answer_vocab, vqa_soft_targets
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.batches import collate_vqa
from pixelbert_pl.processing.items import VQAItem

# Where the official release puts images: train2014/COCO_train2014_000000000009.jpg. test-dev2015 questions are
# about test2015 images, so their pattern must name the folder: "test2015/COCO_test2015_{image_id:012d}.jpg".
COCO_IMAGE_PATTERN = "{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg"
QUESTIONS_FORMAT = "VQA v2 questions format: {data_subtype, questions: [{question_id, image_id, question}]}"
ANNOTATIONS_FORMAT = (
    "VQA v2 annotations format: {annotations: [{question_id, image_id, answer_type, multiple_choice_answer, "
    "answers: [{answer, ...}]}]}"
)


@dataclass
class VQARecord:
    """One question. `answers` are the raw human answers (10 in VQA v2, 1 in GQA-style data), [] with `answer_type`
    and `multiple_choice_answer` None when the split is unannotated (test-dev, test-std); `image_path` is absolute."""

    question_id: int
    image_id: int
    image_path: str
    question: str
    answers: list[str]
    answer_type: str | None
    multiple_choice_answer: str | None


def _image_name(pattern: str, data_subtype: str, image_id: int) -> str:
    try:
        return pattern.format(data_subtype=data_subtype, image_id=image_id)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"image_pattern {pattern!r} cannot be filled ({type(e).__name__}: {e}); it may use only "
            "{data_subtype} and {image_id}, e.g. " + repr(COCO_IMAGE_PATTERN)
        ) from e


def read_vqa(
    questions_file: PathLike,
    annotations_file: PathLike | None = None,
    image_root: PathLike | None = None,
    image_pattern: str = COCO_IMAGE_PATTERN,
    image_ids: Collection[int] | None = None,
    *,
    allow_missing: bool = False,
) -> list[VQARecord]:
    """The questions of `v2_OpenEnded_mscoco_<subtype>_questions.json`, in file order, joined on `question_id` with
    `v2_mscoco_<subtype>_annotations.json` when given (every question must have an annotation).

    An image's file is `image_root / image_pattern.format(data_subtype=<the questions file's data_subtype>,
    image_id=...)`; `image_root` defaults to the questions file's folder. `image_ids` keeps only questions about
    those images (e.g. to hold out part of val). A missing image file raises FileNotFoundError; `allow_missing`
    skips those questions instead, which makes an accuracy over the result unofficial (docs/paper_facts.md §6.1,
    item 8).
    """
    ann = AnnotationFile(questions_file, QUESTIONS_FORMAT)
    data = ann.load("object")
    subtype = ann.field(data, "data_subtype", "str", "")
    _image_name(image_pattern, subtype, 0)  # a bad pattern fails here, before the loop, with the pattern named
    root = absolute_path(image_root if image_root is not None else ann.path.parent)
    records: dict[int, VQARecord] = {}
    question_ids = UniqueField(ann, "question_id", "questions[{}] and questions[{}]")
    for i, entry in enumerate(ann.field(data, "questions", "list", "")):
        where = f"questions[{i}]"
        question_id = ann.field(entry, "question_id", "int", where)
        image_id = ann.field(entry, "image_id", "int", where)
        question = ann.field(entry, "question", "str", where)
        question_ids.add(question_id, i)  # every question, also those `image_ids` leaves out
        if image_ids is None or image_id in image_ids:
            path = str(root / _image_name(image_pattern, subtype, image_id))
            records[question_id] = VQARecord(question_id, image_id, path, question, [], None, None)
    if annotations_file is not None:
        _annotate(records, annotations_file, ann.path)
    questions = list(records.values())
    index = DirectoryIndex()
    missing = [index.first_missing(r.image_path) for r in questions]
    searched = {Path(r.image_path).parent for r in questions}
    images = [(r.image_path,) for r in questions]  # many questions share an image: count and name each file once
    return drop_missing(questions, missing, ann.path, searched, allow_missing, images=images, noun="question")


def _annotate(records: dict[int, VQARecord], annotations_file: PathLike, questions_file: Path) -> None:
    """Fill in answers, answer_type and multiple_choice_answer of `records` (by question_id) from the file."""
    ann = AnnotationFile(annotations_file, ANNOTATIONS_FORMAT)
    data = ann.load("object")
    annotated: set[int] = set()
    question_ids = UniqueField(ann, "question_id", "annotations[{}] and annotations[{}]")
    for i, entry in enumerate(ann.field(data, "annotations", "list", "")):
        where = f"annotations[{i}]"
        question_id = ann.field(entry, "question_id", "int", where)
        question_ids.add(question_id, i)
        record = records.get(question_id)
        if record is None:  # a question left out by `image_ids`
            continue
        image_id = ann.field(entry, "image_id", "int", where)
        if image_id != record.image_id:
            raise ann.error(
                f"{where}.image_id", f"is {image_id}, but question {question_id} of {questions_file} is about image "
                f"{record.image_id}; are the questions and annotations of the same split?"
            )  # fmt: skip
        answers = ann.field(entry, "answers", "list", where)
        if not answers:
            raise ann.error(f"{where}.answers", "is empty; the accuracy needs the human answers")
        record.answers = [ann.field(a, "answer", "str", f"{where}.answers[{j}]") for j, a in enumerate(answers)]
        record.answer_type = ann.field(entry, "answer_type", "str", where)
        record.multiple_choice_answer = ann.field(entry, "multiple_choice_answer", "str", where)
        annotated.add(question_id)
    if len(annotated) < len(records):
        missing = [question_id for question_id in records if question_id not in annotated]
        raise AnnotationError(
            f"{ann.path}: no annotation for question_id {missing[0]} of {questions_file} ({len(missing)} of "
            f"{len(records)} questions have none); are the questions and annotations of the same split?"
        )


class VQADataset(RecordDataset[VQAItem]):
    """Item = one question: its image (decoded, resized, normalised), token ids, soft targets over `answer_vocab`
    ({label: score}, `vqa_soft_targets`: the official ones with 3+ answers, 1.0 per answer with fewer), raw answers,
    answer type, question id, and the image path as the key that lets the collate share one image among its
    questions."""

    def __init__(
        self,
        records: Sequence[VQARecord],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        answer_vocab: Sequence[str],
        max_text_length: int = 40,
    ) -> None:
        super().__init__(records, transform, tokenizer, max_text_length)
        self.answer_to_index = {answer: label for label, answer in enumerate(answer_vocab)}

    @property
    def num_answers(self) -> int:
        return len(self.answer_to_index)

    def load(self, key: tuple[int, int] | int) -> VQAItem:
        record = self.records[split_key(key)[1]]
        return {
            "pixel_values": self.image(record.image_path),
            "image_key": record.image_path,
            "input_ids": self.token_ids([record.question])[0],
            "targets": vqa_soft_targets(record.answers, self.answer_to_index),
            "answers": list(record.answers),
            "answer_type": record.answer_type,
            "question_id": record.question_id,
        }


class VQASplits(SplitDataModule):
    """What the VQA DataModules share, whatever they read: classification over `answer_vocab` with soft targets
    (docs/paper_facts.md §3.1, §6.2), training batches grouped by image. A subclass reads a split's `VQARecord`s.

    Args:
        answer_min_count: questions an answer needs to become a class (as `multiple_choice_answer`).
        questions_per_image: training batches hold the questions of an image this many at a time
            (`GroupedEpochKeyedSampler`), so the CNN runs once for them; 2 halves the CNN's work per batch (VQA v2 has
            5.4 questions per image). Every question is still seen once per epoch. Must divide batch_size.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`: tokenizer, image sizes, batches).
    """

    def __init__(self, answer_min_count: int = 9, questions_per_image: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if questions_per_image < 1 or self.batch_size % questions_per_image:
            raise ValueError(
                f"questions_per_image={questions_per_image}: expected >= 1 and a divisor of "
                f"batch_size={self.batch_size}"
            )
        if self.padding.shapes is not None and questions_per_image > 1:
            # Pure runs give batch_size / questions_per_image images, a run of leftovers more: pad the count to a
            # multiple of the former, so the CNN meets two batch sizes, not every count in between.
            multiple = self.batch_size // questions_per_image
            self.padding = dataclasses.replace(self.padding, image_multiple=multiple)
        self.answer_min_count, self.questions_per_image = answer_min_count, questions_per_image

    def answer_entries(self) -> list[dict[str, Any]]:
        """The {question_id, multiple_choice_answer} entries the answer classes are counted from: the train and val
        questions read."""
        # Read from the Arrow columns: building 650K record objects only to count answers is slow.
        columns = ["question_id", "multiple_choice_answer"]
        tables = [self.records(split).table.select_columns(columns) for split in ("train", "val")]  # type: ignore[attr-defined]
        return [row for table in tables for row in table.to_list()]

    @functools.cached_property
    def answer_vocab(self) -> list[str]:
        """The answer classes: label i is `answer_vocab[i]`, most frequent first (`build_answer_vocab`)."""
        vocab = build_answer_vocab(self.answer_entries(), self.answer_min_count)
        if not vocab:
            raise ValueError(
                f"no answer is the multiple_choice_answer of {self.answer_min_count}+ questions: lower answer_min_count"
            )
        return vocab

    @property
    def num_answers(self) -> int:
        """How many answer classes (the CLI links `answer_vocab` itself to `VQATask`)."""
        return len(self.answer_vocab)

    def test_dataloader(self) -> DataLoader:
        if not any(record.answers for record in self.records("test")):
            raise ValueError("VQA test questions without annotations are scored by the evaluation server: predict them")
        return super().test_dataloader()

    def train_dataloader(self) -> DataLoader:
        keys = [record.image_id for record in self.records("train")]
        k = self.questions_per_image
        return self.loader(self.served("train"), self.collate("train"), train=True, group_keys=keys, group_size=k)

    def dataset(self, split: str, records: Sequence[Any] | None = None) -> VQADataset:
        records = self.records(split) if records is None else records
        return VQADataset(records, self.transform, self.tokenizer, self.answer_vocab, self.processing.max_text_length)

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        return functools.partial(collate_vqa, num_answers=self.num_answers, pad_token_id=self.tokenizer.pad_token_id)


class VQADataModule(VQASplits):
    """VQA v2 as classification over `answer_vocab` with soft targets (docs/paper_facts.md §3.1, §6.2).

    Args:
        train_questions: questions files for training (v2_OpenEnded_mscoco_train2014_questions.json; add val2014
            for a test-dev submission).
        train_annotations: the annotation files of train_questions, pairwise (v2_mscoco_train2014_annotations.json;
            add val2014 for a test-dev submission).
        val_questions: as train_questions, for validation.
        val_annotations: as train_annotations, for validation.
        test_questions: the questions `predict_dataloader` serves (test-dev2015 or test2015: no annotations).
        test_annotations: their annotations where there are any; `test_dataloader` needs them.
        image_root: the folder holding train2014/, val2014/, test2015/ (default: each questions file's folder).
        image_pattern: an image's file under image_root, filled with the questions file's `data_subtype` and the
            `image_id` (`read_vqa`).
        test_image_pattern: the same for test_questions (default: image_pattern); test-dev2015 questions are about
            test2015 images: "test2015/COCO_test2015_{image_id:012d}.jpg".
        answer_vocab_annotations: annotation files whose `multiple_choice_answer`s make the answer classes;
            default: the train and val questions read (train2014 + val2014 and min count 9 give the usual 3,129).
        train_image_ids: keep only training questions about these images.
        val_image_ids: as train_image_ids, for validation.
        test_image_ids: as train_image_ids, for testing.
        allow_missing: skip questions whose image file is missing (with a warning counting them) instead of failing;
            an accuracy over what is left is not the official one.
        **kwargs: `VQASplits`' (answer_min_count, questions_per_image) and the settings every DataModule shares.
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
        train_image_ids: Sequence[int] | None = None,
        val_image_ids: Sequence[int] | None = None,
        test_image_ids: Sequence[int] | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # (questions file, annotations file or None) per split.
        self.files: dict[str, list[tuple[str, str | None]]] = {
            "test": [(test_questions, test_annotations)] if test_questions is not None else []
        }
        for split, question_files, annotation_files in (
            ("train", as_list(train_questions), as_list(train_annotations)),
            ("val", as_list(val_questions), as_list(val_annotations)),
        ):
            if len(question_files) != len(annotation_files):
                raise ValueError(
                    f"{split}_questions has {len(question_files)} files and {split}_annotations "
                    f"{len(annotation_files)}: expected one annotations file per questions file, in the same order"
                )
            self.files[split] = list(zip(question_files, annotation_files, strict=True))
        self.test_questions, self.test_annotations = test_questions, test_annotations
        self.image_root, self.image_pattern, self.test_image_pattern = image_root, image_pattern, test_image_pattern
        self.answer_vocab_annotations = None if answer_vocab_annotations is None else as_list(answer_vocab_annotations)
        self.image_ids = {"train": train_image_ids, "val": val_image_ids, "test": test_image_ids}
        self.allow_missing = allow_missing

    def read_split(self, split: str) -> Sequence[Any]:
        if split == "test" and self.test_questions is None:
            raise ValueError("VQADataModule: no test_questions given, so there is nothing to test or predict")
        pattern = (self.test_image_pattern or self.image_pattern) if split == "test" else self.image_pattern
        ids = None if self.image_ids[split] is None else set(self.image_ids[split] or ())
        files = self.files[split]
        if not files:
            # An empty list (the recipes' default) would only fail later, as a missing column deep in `datasets`.
            raise ValueError(
                f"VQADataModule: {split}_questions and {split}_annotations are empty; expected VQA v2 questions files "
                f"and their annotation files, pairwise (e.g. v2_OpenEnded_mscoco_{split}2014_questions.json and "
                f"v2_mscoco_{split}2014_annotations.json)"
            )
        return ArrowRecords.from_records(
            [
                r
                for q, a in files
                for r in read_vqa(q, a, self.image_root, pattern, ids, allow_missing=self.allow_missing)
            ]
        )

    def answer_entries(self) -> list[dict[str, Any]]:
        if self.answer_vocab_annotations is None:
            return super().answer_entries()
        entries = []
        for path in self.answer_vocab_annotations:
            ann = AnnotationFile(path, ANNOTATIONS_FORMAT)
            entries += ann.field(ann.load("object"), "annotations", "list", "")
        return entries

    def test_dataloader(self) -> DataLoader:
        if self.test_annotations is None:
            raise ValueError("VQA test questions without annotations are scored by the evaluation server: predict them")
        return super().test_dataloader()


@dataclass
class VQAColumns:
    """The columns of VQA data; the defaults read VQA v2 as on the Hub (`question`, `answers`: [{answer,
    answer_confidence, answer_id}], `multiple_choice_answer`, `question_id`, `image_id`, `answer_type`, `image`).
    GQA-style data with one answer a question names its answer column in `answers` (a string, or a list)."""

    image: str = "image"  # a datasets.Image column, file bytes, or paths relative to image_root
    question: str = "question"
    answers: str | None = "answers"  # None: unannotated (a test split)
    multiple_choice_answer: str | None = "multiple_choice_answer"  # None or absent: the most given answer
    question_id: str | None = "question_id"  # None: the row number
    image_id: str | None = "image_id"  # None or absent: rows with one image file or bytes are one image
    answer_type: str | None = "answer_type"


class HFVQADataModule(StreamedTask, VQASplits):
    """VQA on any `datasets` source (hf.py): a Hub id, a save_to_disk folder, Parquet, CSV or JSON lines of
    questions, read by `columns` with no conversion step. Questions with one or two answers train on them and score
    exact match; with three or more, the official soft targets and accuracy (metrics/vqa.py).

    Args:
        source: where the data is and which of its splits are train / val / test (`DatasetSource`).
        columns: the columns read (`VQAColumns`; the defaults read VQA v2 as on the Hub).
        image_root: the folder image paths are relative to (default: the data files' folder).
        answer_vocab_file: the answer classes, one per line (or a JSON list), instead of counting the train and val
            answers (`answer_min_count`; a streamed source's are counted in one pass over its answer columns,
            cached under the `datasets` cache by the source's files and settings).
        **kwargs: `StreamOptions`' (batches_per_epoch, block_size: a streamed source), `VQASplits`'
            (answer_min_count, questions_per_image) and the settings every DataModule shares.
    """

    def __init__(
        self,
        source: DatasetSource,
        columns: VQAColumns | None = None,
        image_root: str | None = None,
        answer_vocab_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hf = HFSource(source, image_root)
        self.columns = columns or VQAColumns()
        self.answer_vocab_file = answer_vocab_file

    def read_rows(
        self, table: datasets.Dataset, split: str, where: str
    ) -> tuple[list[Any], Mapping[str, bytes], Mapping[str, tuple[int, int]]]:
        c = self.columns
        present = set(table.column_names)
        wanted = {"image": c.image, "question": c.question, "question_id": c.question_id, "answer_type": c.answer_type}
        if c.answers and (split != "test" or c.answers in present):  # a test split may come unannotated
            wanted["answers"] = c.answers
        require_columns(table, wanted, where)

        def cells(name: str | None) -> list[Any] | None:
            return table[name] if name and name in present else None

        image_ids = cells(c.image_id)
        keys, held, sizes = self.hf.images(table, c.image, split, image_ids, where)
        number = {key: i for i, key in enumerate(dict.fromkeys(keys))}  # an image id where the data has none
        questions, question_ids, types = table[c.question], cells(c.question_id), cells(c.answer_type)
        answer_cells, chosen = cells(wanted.get("answers")), cells(c.multiple_choice_answer)
        records = []
        for row, key in enumerate(keys):
            answers = list_value(answer_cells[row]) if answer_cells is not None else []
            records.append(
                VQARecord(
                    question_id=_question_id(question_ids[row], f"{where}[{row}].{c.question_id}")
                    if question_ids is not None
                    else row,
                    image_id=image_ids[row]
                    if image_ids is not None and isinstance(image_ids[row], int)
                    else number[key],
                    image_path=key,
                    question=str(questions[row]),
                    answers=answers,
                    answer_type=types[row] if types is not None else None,
                    multiple_choice_answer=_chosen(answers, chosen[row] if chosen is not None else None),
                )
            )
        return records, held, sizes

    def answer_entries(self) -> list[dict[str, Any]]:
        if not self.hf.source.streaming:
            return super().answer_entries()
        return [*_stream_answers(self, "train"), *_stream_answers(self, "val")]

    @functools.cached_property
    def answer_vocab(self) -> list[str]:
        if self.answer_vocab_file is None and self.hf.source.streaming:
            return self._streamed_answer_vocab()
        if self.answer_vocab_file is None:
            return super().answer_vocab
        text = Path(self.answer_vocab_file).read_text(encoding="utf-8")
        vocab = json.loads(text) if text.lstrip().startswith("[") else [line.strip() for line in text.splitlines()]
        vocab = [answer for answer in vocab if answer]
        if not vocab or len(set(vocab)) != len(vocab):
            raise ValueError(f"answer_vocab_file {self.answer_vocab_file}: expected distinct answers, one per line")
        return vocab

    def _streamed_answer_vocab(self) -> list[str]:
        """`answer_vocab` of a streamed source: one pass over its answer columns, then read from the cache."""
        key = Hasher.hash([source_stamp(self.hf.source), dataclasses.asdict(self.columns), self.answer_min_count])
        cache = Path(self.hf.source.cache_dir or datasets.config.HF_DATASETS_CACHE) / "pixelbert_answer_vocab"
        path = cache / f"{key}.json"
        if path.is_file():
            return list(json.loads(path.read_text(encoding="utf-8")))
        vocab = VQASplits.answer_vocab.func(self)  # type: ignore[attr-defined]  # counted from answer_entries
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(vocab), encoding="utf-8")
        partial.replace(path)  # whole or absent, should another rank read it meanwhile
        return vocab


def _chosen(answers: list[str], chosen: Any) -> str | None:
    """A question's `multiple_choice_answer`: the column's where the source has one, else the most given answer."""
    if chosen is not None and answers:
        return str(chosen)
    return max(dict.fromkeys(answers), key=answers.count) if answers else None


def _stream_answers(module: HFVQADataModule, split: str) -> Iterator[dict[str, Any]]:
    """The {multiple_choice_answer} of each question of a split's stream, read from its answer columns alone."""
    c = module.columns
    stream = module.stream(split)
    names = set(stream.column_names or ())
    columns = [name for name in (c.answers, c.multiple_choice_answer) if name and (not names or name in names)]
    if c.answers not in columns:
        raise SourceError(f"{module.hf.where(split)}: no answers column {c.answers!r} to count the answers of")
    for batch in stream.select_columns(columns).iter(batch_size=4096):
        chosen = batch.get(c.multiple_choice_answer or "", [None] * len(batch[c.answers]))
        for cell, pick in zip(batch[c.answers], chosen, strict=True):
            yield {"multiple_choice_answer": _chosen(list_value(cell), pick)}


def _question_id(value: Any, where: str) -> int:
    """An integer question id (VQA's results files and `question_ids` in batches are keyed by them)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SourceError(
            f"{where}: {value!r} is no integer question id; number the rows instead with"
            " --data.init_args.columns.question_id null"
        ) from None
