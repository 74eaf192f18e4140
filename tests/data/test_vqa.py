"""VQA v2 reader, samples and collate on the released formats (docs/paper_facts.md §7.4) and on ShapesWorld."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from corpora import LANDSCAPE, PORTRAIT, VQA_TRAIN
from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.data.vqa import VQADataset, VQARecord, read_vqa
from pixelbert_pl.processing import ImageTransform, load_tokenizer
from pixelbert_pl.processing.batches import VQABatch, collate_vqa

TRAIN_Q = "v2_OpenEnded_mscoco_train2014_questions.json"
TRAIN_A = "v2_mscoco_train2014_annotations.json"
SHAPES_PATTERN = "images/shapes_{image_id:012d}.png"


def test_read_joins_questions_and_annotations(vqa_root: Path) -> None:
    records = read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root)
    assert [r.question_id for r in records] == list(VQA_TRAIN)  # file order
    assert records[1] == VQARecord(
        question_id=9001,
        image_id=9,
        image_path=str(vqa_root / "train2014" / "COCO_train2014_000000000009.jpg"),
        question="How many wheels?",
        answers=["4", "4", "4", "four"] + ["6"] * 6,
        answer_type="number",
        multiple_choice_answer="4",
    )
    assert all(Path(r.image_path).is_file() for r in records)


def test_unannotated_test_dev_with_its_own_image_pattern(vqa_root: Path) -> None:
    # test-dev2015 questions are about test2015 images, so the folder cannot come from data_subtype.
    questions = vqa_root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    with pytest.raises(FileNotFoundError, match=r"test-dev2015/COCO_test-dev2015_000000000077\.jpg"):
        read_vqa(questions, image_root=vqa_root)
    records = read_vqa(questions, image_root=vqa_root, image_pattern="test2015/COCO_test2015_{image_id:012d}.jpg")
    assert [(r.question_id, r.answers, r.answer_type, r.multiple_choice_answer) for r in records] == [
        (77000, [], None, None),
        (78000, [], None, None),
    ]


def test_image_ids_keep_only_those_images(vqa_root: Path) -> None:
    records = read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root, image_ids={9, 30})
    assert [r.question_id for r in records] == [9000, 9001, 30000]


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_missing_image_counts_and_names_its_file_once(vqa_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Image 9 with four questions gone: one image of three, named once, four questions (issue 30, item 8)."""
    extra = [{"image_id": 9, "question": f"Extra question {i}?", "question_id": 9010 + i} for i in range(2)]
    _rewrite(vqa_root / TRAIN_Q, lambda d: d["questions"].extend(extra))
    image = vqa_root / "train2014" / "COCO_train2014_000000000009.jpg"
    image.unlink()
    message = rf"1 of 3 images \(referenced by 4 questions\) from .*{TRAIN_Q}"
    with pytest.raises(FileNotFoundError, match=message) as error:
        read_vqa(vqa_root / TRAIN_Q, image_root=vqa_root)
    assert str(error.value).count(image.name) == 1
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.captions"):
        kept = read_vqa(vqa_root / TRAIN_Q, image_root=vqa_root, allow_missing=True)
    assert [r.question_id for r in kept] == [25000, 30000]
    assert "1 of 3 images (referenced by 4 questions)" in caplog.text and caplog.text.count(image.name) == 1
    assert "Skipping those 4 questions" in caplog.text


def test_missing_annotation_names_the_file_and_question(vqa_root: Path) -> None:
    _rewrite(vqa_root / TRAIN_A, lambda d: d["annotations"].pop(2))
    with pytest.raises(AnnotationError, match=rf"{TRAIN_A}: no annotation for question_id 25000 of .*{TRAIN_Q}"):
        read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["annotations"][1].pop("answers"), r"annotations\[1\] has no field 'answers'"),
        (lambda d: d["annotations"][0].update(answer_type=3), r"annotations\[0\]\.answer_type is int 3, should be str"),
        (lambda d: d["annotations"][3].update(image_id=1), r"annotations\[3\]\.image_id is 1, but question 30000"),
        (
            lambda d: d["annotations"].append(dict(d["annotations"][0])),
            r"annotations\[0\] and annotations\[4\] have the same question_id 9000",
        ),
        (lambda d: d["annotations"][2].update(answers=[]), r"annotations\[2\]\.answers is empty"),
    ],
)
def test_malformed_annotations_name_file_entry_and_field(vqa_root: Path, edit, pattern: str) -> None:  # type: ignore[no-untyped-def]
    _rewrite(vqa_root / TRAIN_A, edit)
    with pytest.raises(AnnotationError, match=rf"{TRAIN_A}: {pattern}"):
        read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root)


def test_repeats_are_errors_even_outside_image_ids(vqa_root: Path) -> None:
    """A repeated question or annotation is an error wherever it is, not only among the questions kept."""
    _rewrite(vqa_root / TRAIN_Q, lambda d: d["questions"][3].update(question_id=25000))  # image 30's question
    with pytest.raises(AnnotationError, match=r"questions\[2\] and questions\[3\] have the same question_id 25000"):
        read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root, image_ids={9})
    _rewrite(vqa_root / TRAIN_Q, lambda d: d["questions"][3].update(question_id=30000))
    _rewrite(vqa_root / TRAIN_A, lambda d: d["annotations"][3].update(question_id=25000))
    with pytest.raises(AnnotationError, match=rf"{TRAIN_A}: annotations\[2\] and annotations\[3\] have the same "):
        read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root, image_ids={9})


def test_an_annotation_with_fewer_than_ten_answers_loads_and_is_scored_on_what_it_has(vqa_root: Path) -> None:
    from pixelbert_pl.metrics import vqa_accuracy, vqa_soft_targets

    three = [{"answer": "red", "answer_confidence": "yes", "answer_id": i + 1} for i in range(2)]
    three.append({"answer": "blue", "answer_confidence": "yes", "answer_id": 3})
    _rewrite(vqa_root / TRAIN_A, lambda d: d["annotations"][0].update(answers=three))
    record = read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root)[0]
    assert record.answers == ["red", "red", "blue"]
    assert vqa_soft_targets(record.answers, {"red": 0, "blue": 1}) == {0: 0.6, 1: 0.3}
    # Leave-one-out over 3 annotators: drop a "red" -> 1/3, drop the other "red" -> 1/3, drop "blue" -> 2/3.
    assert vqa_accuracy("red", record.answers) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)


def test_malformed_questions_and_patterns(vqa_root: Path) -> None:
    _rewrite(vqa_root / TRAIN_Q, lambda d: d.pop("data_subtype"))
    with pytest.raises(AnnotationError, match=rf"{TRAIN_Q}: top level has no field 'data_subtype'"):
        read_vqa(vqa_root / TRAIN_Q)
    _rewrite(vqa_root / TRAIN_Q, lambda d: d.update(data_subtype="train2014"))
    _rewrite(vqa_root / TRAIN_Q, lambda d: d["questions"][1].update(question_id=9000))
    pattern = rf"{TRAIN_Q}: questions\[0\] and questions\[1\] have the same question_id 9000"
    with pytest.raises(AnnotationError, match=pattern):
        read_vqa(vqa_root / TRAIN_Q, image_root=vqa_root)
    with pytest.raises(ValueError, match=r"image_pattern '\{split\}/\{image_id\}\.jpg' cannot be filled"):
        read_vqa(vqa_root / TRAIN_Q, image_pattern="{split}/{image_id}.jpg")


@pytest.fixture
def train_dataset(vqa_root: Path, minilm_path: str) -> VQADataset:
    records = read_vqa(vqa_root / TRAIN_Q, vqa_root / TRAIN_A, vqa_root)
    transform = ImageTransform(32, 64, size_divisor=8)
    return VQADataset(records, transform, load_tokenizer(minilm_path), ["red", "yes", "4", "no", "6"], 16)


def test_item_soft_targets_count_raw_answers(train_dataset: VQADataset) -> None:
    item = train_dataset[(3, 1)]  # question 9001: "4" x3, "four" x1, "6" x6
    # Raw answers are counted as given ("four" is not "4"), docs/paper_facts.md §6.2.
    assert item["targets"] == {2: 0.9, 4: 1.0}
    assert train_dataset[0]["targets"] == {0: 1.0}  # "red" x8; "dark red" is not in the vocabulary
    assert item["question_id"] == 9001 and item["answer_type"] == "number" and len(item["answers"]) == 10
    tokenizer = train_dataset.tokenizer
    assert tokenizer.decode(item["input_ids"]) == "[CLS] how many wheels? [SEP]"


def test_collate_shares_an_image_among_its_questions(train_dataset: VQADataset) -> None:
    items = [train_dataset[i] for i in range(4)]  # images 9, 9, 25, 30
    batch = collate_vqa(items, num_answers=train_dataset.num_answers, pad_token_id=0)
    assert batch.pixel_values.shape[0] == 3 and batch.image_index.tolist() == [0, 0, 1, 2]
    assert batch.question_ids.tolist() == list(VQA_TRAIN)
    assert batch.targets.shape == (4, 5) and batch.targets[1].tolist() == pytest.approx([0, 0, 0.9, 0, 1.0])
    assert batch.targets[2].tolist() == [0, 0, 0, 1.0, 0]
    assert batch.answer_types == ["other", "number", "yes/no", "yes/no"]
    assert batch.attention_mask.dtype == torch.bool
    assert torch.equal(batch.attention_mask, batch.input_ids != 0)
    # Images 9 and 25 are portrait, 30 landscape (sizes kept by the transform): the padding differs.
    assert batch.pixel_mask.shape == (3, 40, 40)
    for row, (width, height) in enumerate([PORTRAIT, PORTRAIT, LANDSCAPE]):
        expected = torch.zeros(batch.pixel_mask.shape[1:], dtype=torch.bool)
        expected[:height, :width] = True
        assert torch.equal(batch.pixel_mask[row], expected)
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, VQABatch) and moved.answers == batch.answers


def test_unannotated_questions_get_zero_targets(vqa_root: Path, minilm_path: str) -> None:
    questions = vqa_root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    records = read_vqa(questions, image_root=vqa_root, image_pattern="test2015/COCO_test2015_{image_id:012d}.jpg")
    dataset = VQADataset(records, ImageTransform(32, 64), load_tokenizer(minilm_path), ["yes", "no"])
    batch = collate_vqa([dataset[0], dataset[1]], dataset.num_answers)
    assert not batch.targets.any() and batch.answers == [[], []] and batch.answer_types == [None, None]


def test_shapesworld_reads_through_the_same_reader(shapes_root: Path) -> None:
    questions, annotations = shapes_root / "vqa_questions.json", shapes_root / "vqa_annotations.json"
    records = read_vqa(questions, annotations, shapes_root, SHAPES_PATTERN)
    assert len(records) == 60 * 3 and all(len(r.answers) == 10 for r in records)
    assert {r.answer_type for r in records} == {"yes/no", "number", "other"}
    assert records[0].image_path == str(shapes_root / "images" / "shapes_000000000001.png")
    # The corpus's own vocabulary covers every question whole: no [UNK].
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    encoded = tokenizer([r.question for r in records])["input_ids"]
    assert not any(tokenizer.unk_token_id in ids for ids in encoded)
