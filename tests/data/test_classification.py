"""The generic (image, text) -> class data: SNLI-VE's released jsonl read by the defaults, other field names by
arguments, errors that name the file, line and value, batches that share an image among its texts, the DataModule."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser

from corpora import LANDSCAPE, PORTRAIT, write_image
from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.data.classification import (
    SNLI_VE_LABELS,
    ImageTextClassificationDataModule,
    ImageTextClassificationDataset,
    read_image_text_jsonl,
)
from pixelbert_pl.processing import ImageTransform, load_tokenizer, write_wordpiece_vocab
from pixelbert_pl.processing.batches import ImageTextClassificationBatch, collate_image_text

SMALL = {"image_min_size": 32, "image_max_size": 64, "size_divisor": 8, "num_workers": 0}


def _snli_ve_row(image: str, caption: int, hypothesis: int, label: str, premise: str, text: str) -> dict[str, Any]:
    """A row as snli_ve_*.jsonl has it: SNLI's fields, keys sorted, plus the image's file name as Flikr30kID."""
    parse = "( " + " ".join(text.rstrip(".").split()) + " . )"
    row = {
        "Flikr30kID": image,
        "annotator_labels": [label] * 3,
        "captionID": f"{image}#{caption}",
        "gold_label": label,
        "pairID": f"{image}#{caption}r{hypothesis}{label[0]}",
        "sentence1": premise,
        "sentence1_binary_parse": parse,
        "sentence1_parse": f"(ROOT {parse})",
        "sentence2": text,
        "sentence2_binary_parse": parse,
        "sentence2_parse": f"(ROOT {parse})",
    }
    return dict(sorted(row.items()))


HORSE, KIDS = "3416050480.jpg", "2267923837.jpg"
HORSE_PREMISE = "A person on a horse jumps over a broken down airplane."
KIDS_PREMISE = "Children smiling and waving at camera"
TRAIN = [
    _snli_ve_row(HORSE, 4, 1, "neutral", HORSE_PREMISE, "A person is training his horse for a competition."),
    _snli_ve_row(HORSE, 4, 1, "contradiction", HORSE_PREMISE, "A person is at a diner, ordering an omelette."),
    _snli_ve_row(HORSE, 4, 1, "entailment", HORSE_PREMISE, "A person is outdoors, on a horse."),
    _snli_ve_row(KIDS, 2, 1, "neutral", KIDS_PREMISE, "They are smiling at their parents"),
]
DEV = [
    _snli_ve_row(KIDS, 2, 1, "entailment", KIDS_PREMISE, "There are children present"),
    _snli_ve_row(KIDS, 2, 1, "contradiction", KIDS_PREMISE, "The kids are frowning"),
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def snli_ve_root(tmp_path: Path) -> Path:
    """SNLI-VE as released: three jsonl files and the Flickr30K images folder; the test split has no labels."""
    write_image(tmp_path / "flickr30k-images" / HORSE, LANDSCAPE, (200, 40, 40))
    write_image(tmp_path / "flickr30k-images" / KIDS, PORTRAIT, (40, 200, 40))
    _write_jsonl(tmp_path / "snli_ve_train.jsonl", TRAIN)
    _write_jsonl(tmp_path / "snli_ve_dev.jsonl", DEV)
    _write_jsonl(tmp_path / "snli_ve_test.jsonl", [{k: v for k, v in TRAIN[2].items() if k != "gold_label"}])
    texts = [row["sentence2"] for row in TRAIN + DEV]
    write_wordpiece_vocab(texts, tmp_path / "vocab.txt")
    return tmp_path


def _module(root: Path, **kwargs: Any) -> ImageTextClassificationDataModule:
    arguments = {
        "train_file": str(root / "snli_ve_train.jsonl"),
        "val_file": str(root / "snli_ve_dev.jsonl"),
        "test_file": str(root / "snli_ve_test.jsonl"),
        "labels": list(SNLI_VE_LABELS),
        "image_root": str(root / "flickr30k-images"),
        "tokenizer": str(root / "vocab.txt"),
        **SMALL,
    }
    return ImageTextClassificationDataModule(**{**arguments, **kwargs})


def test_the_defaults_read_snli_ve_as_released(snli_ve_root: Path) -> None:
    records = read_image_text_jsonl(
        snli_ve_root / "snli_ve_train.jsonl", SNLI_VE_LABELS, snli_ve_root / "flickr30k-images"
    )
    assert [r.example_id for r in records] == [row["pairID"] for row in TRAIN]
    assert [r.label for r in records] == [1, 2, 0, 1]
    assert [r.label_name for r in records] == ["neutral", "contradiction", "entailment", "neutral"]
    assert records[2].text == "A person is outdoors, on a horse."
    assert records[0].image_path == str(snli_ve_root / "flickr30k-images" / HORSE)
    (unlabelled,) = read_image_text_jsonl(
        snli_ve_root / "snli_ve_test.jsonl", SNLI_VE_LABELS, snli_ve_root / "flickr30k-images"
    )
    assert unlabelled.label == -1 and unlabelled.label_name == ""


def test_other_field_names_and_patterns(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "007.jpg", LANDSCAPE, (1, 2, 3))
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"image_id": 7, "statement": " a box. ", "answer": "yes"}])
    (record,) = read_image_text_jsonl(
        path, ["no", "yes"], tmp_path, image_pattern="img/{image_id:03d}.jpg", text_field="statement",
        label_field="answer", id_field=None,
    )  # fmt: skip
    assert (record.label, record.text, record.example_id) == (1, "a box.", "mine.jsonl:1")
    assert record.image_path == str(tmp_path / "img" / "007.jpg")


@pytest.mark.parametrize(
    ("edit", "require_labels", "message"),
    [
        (lambda row: row.update(gold_label="-"), False, r"line 2\.gold_label is '-', not one of the labels"),
        (lambda row: row.pop("gold_label"), True, r"line 2 has no field 'gold_label'; every training"),
        (lambda row: row.pop("Flikr30kID"), False, r"line 2 has no field 'Flikr30kID'"),
        (lambda row: row.update(sentence2="  "), False, r"line 2\.sentence2 is empty"),
        (lambda row: row.update(pairID=None), False, r"line 2\.pairID is null .*, should be int or str"),
    ],
)
def test_errors_name_the_file_line_and_value(snli_ve_root: Path, edit, require_labels: bool, message: str) -> None:  # type: ignore[no-untyped-def]
    rows = [dict(row) for row in TRAIN]
    edit(rows[1])
    path = _write_jsonl(snli_ve_root / "snli_ve_train.jsonl", rows)
    with pytest.raises(AnnotationError, match=rf"snli_ve_train\.jsonl: {message}"):
        read_image_text_jsonl(path, SNLI_VE_LABELS, snli_ve_root / "flickr30k-images", require_labels=require_labels)


def test_bad_arguments_fail_before_reading(snli_ve_root: Path) -> None:
    path = snli_ve_root / "snli_ve_train.jsonl"
    with pytest.raises(ValueError, match=r"image_pattern 'x\{\}\.jpg' must name the row fields"):
        read_image_text_jsonl(path, SNLI_VE_LABELS, image_pattern="x{}.jpg")
    with pytest.raises(ValueError, match="expected distinct class names"):
        read_image_text_jsonl(path, ["entailment", "entailment"])
    with pytest.raises(AnnotationError, match=r"line 1 cannot fill image_pattern '\{Flikr30kID:03d\}'"):
        read_image_text_jsonl(path, SNLI_VE_LABELS, image_pattern="{Flikr30kID:03d}")


def test_missing_images_fail_or_are_skipped(snli_ve_root: Path) -> None:
    (snli_ve_root / "flickr30k-images" / KIDS).unlink()
    path, images = snli_ve_root / "snli_ve_train.jsonl", snli_ve_root / "flickr30k-images"
    message = rf"1 of 2 images \(referenced by 1 example\) from .*snli_ve_train\.jsonl.*{KIDS}"
    with pytest.raises(FileNotFoundError, match=message):
        read_image_text_jsonl(path, SNLI_VE_LABELS, images)
    kept = read_image_text_jsonl(path, SNLI_VE_LABELS, images, allow_missing=True)
    assert [r.label for r in kept] == [1, 2, 0]


def test_texts_about_one_image_share_its_pixels(snli_ve_root: Path) -> None:
    records = read_image_text_jsonl(
        snli_ve_root / "snli_ve_train.jsonl", SNLI_VE_LABELS, snli_ve_root / "flickr30k-images"
    )
    tokenizer = load_tokenizer(snli_ve_root / "vocab.txt")
    dataset = ImageTextClassificationDataset(records, ImageTransform(32, 64, size_divisor=8), tokenizer, 16)
    batch = collate_image_text([dataset[(3, i)] for i in range(4)], pad_token_id=tokenizer.pad_token_id)
    assert isinstance(batch, ImageTextClassificationBatch)
    assert batch.pixel_values.shape[0] == 2 and batch.image_index.tolist() == [0, 0, 0, 1]
    assert batch.pixel_mask[0].sum() == LANDSCAPE[0] * LANDSCAPE[1] and batch.pixel_mask[1].sum() == 32 * 40
    assert batch.labels.tolist() == [1, 2, 0, 1] and batch.labels.dtype == torch.long
    assert batch.label_names == ["neutral", "contradiction", "entailment", "neutral"]
    assert batch.example_ids == [row["pairID"] for row in TRAIN]
    assert batch.attention_mask.dtype == torch.bool and torch.equal(batch.attention_mask, batch.input_ids != 0)
    text = tokenizer.decode(batch.input_ids[2][batch.attention_mask[2]])
    assert text == "[CLS] a person is outdoors, on a horse. [SEP]"


def test_datamodule_serves_every_split(snli_ve_root: Path) -> None:
    dm = _module(snli_ve_root, batch_size=2)
    assert dm.num_classes == 3 and dm.labels == list(SNLI_VE_LABELS)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 2 and sorted(i for b in train for i in b.example_ids) == sorted(r["pairID"] for r in TRAIN)
    (val,) = list(dm.val_dataloader())
    assert val.labels.tolist() == [0, 2] and val.pixel_values.shape[0] == 1  # two hypotheses, one image
    dm.setup("test")
    (test,) = list(dm.test_dataloader())
    assert test.labels.tolist() == [-1] and test.label_names == [""]


def test_datamodule_two_ranks_see_each_example_once(snli_ve_root: Path) -> None:
    dm = _module(snli_ve_root, batch_size=1, val_batch_size=1)
    _write_jsonl(snli_ve_root / "snli_ve_dev.jsonl", DEV + TRAIN[:1])
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what Lightning gives a DDP rank
        seen.append([i for batch in dm.val_dataloader() for i in batch.example_ids])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(r["pairID"] for r in [*DEV, TRAIN[0]])


def test_datamodule_checks_its_arguments(snli_ve_root: Path) -> None:
    with pytest.raises(ValueError, match=r"ImageTextClassificationDataModule: labels=\[\]"):
        _module(snli_ve_root, labels=[])
    with pytest.raises(ValueError, match="image_pattern '' must name"):
        _module(snli_ve_root, image_pattern="")
    dm = _module(snli_ve_root, test_file=None)
    with pytest.raises(ValueError, match="no test_file given"):
        dm.setup("test")
    with pytest.raises(AnnotationError, match=r"snli_ve_train\.jsonl: line 1\.gold_label is 'neutral', not one"):
        _module(snli_ve_root, labels=["entailment", "contradiction"]).setup("fit")


def test_cli_parses_the_datamodule(snli_ve_root: Path) -> None:
    # LightningCLI builds its parser like this: labels and the field names come from YAML as typed arguments.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageTextClassificationDataModule, "data")
    config = parser.parse_args(
        [
            "--data.train_file", str(snli_ve_root / "snli_ve_train.jsonl"),
            "--data.val_file", str(snli_ve_root / "snli_ve_dev.jsonl"),
            "--data.labels", "[entailment, neutral, contradiction]",
            "--data.image_root", str(snli_ve_root / "flickr30k-images"),
            "--data.tokenizer", str(snli_ve_root / "vocab.txt"),
        ]
    )  # fmt: skip
    dm = parser.instantiate_classes(config).data
    assert dm.labels == list(SNLI_VE_LABELS) and dm.reader_options["text_field"] == "sentence2" and dm.vocab_size > 5


def test_two_images_a_sample_give_two_text_rows_each_and_train(snli_ve_root: Path) -> None:
    """A statement about an image pair ("second_image_pattern"): each image's [CLS] with the text, side by side."""
    import pytorch_lightning as pl

    from pixelbert_pl.tasks import ImageTextClassificationTask

    pairs = [{**row, "Other": KIDS if row["Flikr30kID"] == HORSE else HORSE} for row in TRAIN]
    _write_jsonl(snli_ve_root / "pairs_train.jsonl", pairs)
    _write_jsonl(snli_ve_root / "pairs_dev.jsonl", pairs[:2])
    files = {"train_file": str(snli_ve_root / "pairs_train.jsonl"), "val_file": str(snli_ve_root / "pairs_dev.jsonl")}
    dm = _module(snli_ve_root, **files, second_image_pattern="{Other}", batch_size=4)
    assert dm.images_per_sample == 2
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert batch.images_per_sample == 2 and batch.labels.shape == (4,) and batch.input_ids.shape[0] == 8
    order = {r["pairID"]: r for r in pairs}
    first = [order[i]["Flikr30kID"] for i in batch.example_ids]
    assert batch.pixel_values.shape[0] == 2  # two distinct images, each encoded once for all its rows
    horse_row = batch.image_index[[2 * k for k in range(4)]].tolist()  # each sample's first-image row
    assert [first[k] == first[0] for k in range(4)] == [horse_row[k] == horse_row[0] for k in range(4)]
    assert torch.equal(batch.input_ids[0::2], batch.input_ids[1::2])  # one text, once per image

    task = ImageTextClassificationTask(labels=list(SNLI_VE_LABELS), images_per_sample=2, preset="pixelbert_tiny",
                                       vocab_size=dm.vocab_size)  # fmt: skip
    assert task.net.inputs == ("image", "second_image", "text")
    task.train()
    loss = task.losses(batch)["loss"]
    loss.backward()
    missing = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert torch.isfinite(loss) and missing == []
    trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(ImageTextClassificationTask(labels=list(SNLI_VE_LABELS), preset="pixelbert_tiny",
                                            vocab_size=dm.vocab_size), datamodule=_module(snli_ve_root))  # fmt: skip
    one_image = ImageTextClassificationTask(labels=list(SNLI_VE_LABELS), preset="pixelbert_tiny",
                                            vocab_size=dm.vocab_size)  # fmt: skip
    with pytest.raises(ValueError, match=r"a batch of 2 image\(s\) a sample for a model of 1"):
        one_image(batch)
