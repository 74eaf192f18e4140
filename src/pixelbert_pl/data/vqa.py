"""VQA v2 (docs/paper_facts.md §3.1, §7.4): questions joined with their annotations, one sample per question, and a
collate that gives each distinct image of a batch one row of pixels, so the CNN runs once for all questions about it.

Shapes: n distinct images, b questions, t tokens, a answer classes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import (
    AnnotationError,
    AnnotationFile,
    DirectoryIndex,
    PathLike,
    UniqueField,
    absolute_path,
    drop_missing,
)
from pixelbert_pl.data.pretraining import RecordDataset, split_key
from pixelbert_pl.metrics import vqa_soft_targets
from pixelbert_pl.processing import ImageTransform

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
    """One question. `answers` are the raw human answers (10 in VQA v2), [] with `answer_type` and
    `multiple_choice_answer` None when the split is unannotated (test-dev, test-std); `image_path` is absolute."""

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


class VQADataset(RecordDataset):
    """Item = one question: its image (decoded, resized, normalised), token ids, soft targets over `answer_vocab`
    ({label: score}, `vqa_soft_targets`), raw answers, answer type, question id, and the image path as the key
    that lets the collate share one image among its questions."""

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

    def load(self, key: tuple[int, int] | int) -> dict[str, Any]:
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
