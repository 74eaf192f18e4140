"""NLVR2 reader, samples and collate on the released format and layout (docs/paper_facts.md §7.5) and on ShapesWorld."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from corpora import LANDSCAPE, NLVR2_DEV, NLVR2_TEST1, NLVR2_TRAIN, PORTRAIT
from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.data.nlvr2 import NLVR2Dataset, NLVR2Record, read_nlvr2
from pixelbert_pl.processing import ImageTransform, load_tokenizer
from pixelbert_pl.processing.batches import NLVR2Batch, collate_nlvr2


def test_train_images_live_in_their_directory_folder(nlvr2_root: Path) -> None:
    records = read_nlvr2(nlvr2_root / "data" / "train.json", nlvr2_root / "images")
    assert [r.identifier for r in records] == list(NLVR2_TRAIN)
    folder = nlvr2_root / "images" / "train" / "71"
    assert records[0] == NLVR2Record(
        identifier="train-10171-0-0",
        sentence="One image shows exactly two brown acorns.",
        label=False,
        left_path=str(folder / "train-10171-0-img0.png"),
        right_path=str(folder / "train-10171-0-img1.png"),
    )
    assert records[1].label is True
    assert records[2].left_path == str(nlvr2_root / "images" / "train" / "4" / "train-4-0-img0.png")


def test_dev_is_flat_and_a_hidden_test_split_is_unlabelled(nlvr2_root: Path) -> None:
    records = read_nlvr2(nlvr2_root / "data" / "dev.json", nlvr2_root / "images", labelled=True)
    assert [r.identifier for r in records] == list(NLVR2_DEV)
    assert [r.label for r in records] == [True, False, True]
    assert records[2].right_path == str(nlvr2_root / "images" / "dev" / "dev-3-2-img1.png")
    for labelled in (None, False):
        test1 = read_nlvr2(nlvr2_root / "data" / "test1.json", nlvr2_root / "images", labelled=labelled)
        assert [r.identifier for r in test1] == list(NLVR2_TEST1) and all(r.label is None for r in test1)
    with pytest.raises(AnnotationError, match=r"test1\.json: line 1 has no field 'label' \(2 of 2 lines"):
        read_nlvr2(nlvr2_root / "data" / "test1.json", nlvr2_root / "images", labelled=True)
    with pytest.raises(AnnotationError, match=r"dev\.json: line 1 has a 'label', but this split was read as unlabel"):
        read_nlvr2(nlvr2_root / "data" / "dev.json", nlvr2_root / "images", labelled=False)


@pytest.mark.parametrize("labelled", [True, None])
def test_a_labelled_split_missing_a_label_names_the_file_and_line(nlvr2_root: Path, labelled: bool | None) -> None:
    """A train / dev line without a label is an error: as an unlabelled example it would drop out of the accuracy."""
    path = nlvr2_root / "data" / "dev.json"
    entries = _lines(path)
    del entries[1]["label"]
    _write_lines(path, entries)
    pattern = r"but line 1 has one" if labelled is None else r"1 of 3 lines have none\); every train and dev"
    with pytest.raises(AnnotationError, match=rf"dev\.json: line 2 has no field 'label'.*{pattern}"):
        read_nlvr2(path, nlvr2_root / "images", labelled=labelled)


def test_a_repeated_identifier_names_both_lines(nlvr2_root: Path) -> None:
    path = nlvr2_root / "data" / "train.json"
    entries = _lines(path)
    entries[2]["identifier"] = entries[0]["identifier"]
    _write_lines(path, entries)
    with pytest.raises(AnnotationError, match=r"train\.json: lines 1 and 3 have the same identifier 'train-10171-0-0'"):
        read_nlvr2(path, nlvr2_root / "images")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_lines(path: Path, entries: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda e: e.update(identifier="train-10171-0"), r"line 2\.identifier is 'train-10171-0', not <split>-<set>"),
        (lambda e: e.update(label="yes"), r"line 2\.label is 'yes', should be 'True' or 'False'"),
        (lambda e: e.pop("sentence"), r"line 2 has no field 'sentence'"),
        (lambda e: e.update(directory=[71]), r"line 2\.directory is list \[71\], should be int or str"),
    ],
)
def test_malformed_lines_name_file_line_and_field(nlvr2_root: Path, edit, pattern: str) -> None:  # type: ignore[no-untyped-def]
    path = nlvr2_root / "data" / "train.json"
    entries = _lines(path)
    edit(entries[1])
    _write_lines(path, entries)
    with pytest.raises(AnnotationError, match=rf"train\.json: {pattern}"):
        read_nlvr2(path, nlvr2_root / "images")


def test_invalid_json_and_missing_images(nlvr2_root: Path) -> None:
    path = nlvr2_root / "data" / "train.json"
    path.write_text(path.read_text().replace('"sentence"', "sentence", 1))
    with pytest.raises(AnnotationError, match=r"train\.json: invalid JSON at line 1"):
        read_nlvr2(path, nlvr2_root / "images")
    (nlvr2_root / "images" / "dev" / "dev-850-1-img1.png").unlink()
    message = r"1 of 6 images \(referenced by 1 example\) from .*dev\.json.*dev-850-1-img1\.png"
    with pytest.raises(FileNotFoundError, match=message):
        read_nlvr2(nlvr2_root / "data" / "dev.json", nlvr2_root / "images")
    kept = read_nlvr2(nlvr2_root / "data" / "dev.json", nlvr2_root / "images", allow_missing=True)
    assert [r.identifier for r in kept] == ["dev-850-0-0", "dev-3-2-1"]


def test_pairs_collate_left_then_right_with_masks(nlvr2_root: Path, minilm_path: str) -> None:
    records = read_nlvr2(nlvr2_root / "data" / "dev.json", nlvr2_root / "images")
    dataset_args = (ImageTransform(32, 64, size_divisor=8), load_tokenizer(minilm_path), 16)
    dataset = NLVR2Dataset(records, *dataset_args)
    item = dataset[(5, 0)]  # JPEG bytes in a .png file decode by content
    assert item["label"] == 1 and item["identifier"] == "dev-850-0-0"
    assert dataset.tokenizer.decode(item["input_ids"]) == "[CLS] there are two dogs in total. [SEP]"
    batch = collate_nlvr2([dataset[i] for i in range(3)], pad_token_id=0)
    assert batch.pixel_values.shape == (6, 3, 40, 40) and batch.input_ids.shape[0] == 3
    assert batch.labels.tolist() == [1, 0, 1] and batch.identifiers == list(NLVR2_DEV)
    test1 = NLVR2Dataset(read_nlvr2(nlvr2_root / "data" / "test1.json", nlvr2_root / "images"), *dataset_args)
    assert collate_nlvr2([test1[0], test1[1]]).labels.tolist() == [-1, -1]
    assert torch.equal(batch.attention_mask, batch.input_ids != 0) and batch.attention_mask.dtype == torch.bool
    for row in range(6):  # left images are landscape, right ones portrait
        width, height = (LANDSCAPE, PORTRAIT)[row % 2]
        assert batch.pixel_mask[row].sum() == width * height and batch.pixel_mask[row, :height, :width].all()
    assert isinstance(move_data_to_device(batch, torch.device("cpu")), NLVR2Batch)


def test_shapesworld_layout_is_the_real_one(shapes_root: Path) -> None:
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    for split in ("train", "dev", "test"):
        path = shapes_root / "nlvr2" / f"{split}.json"
        records = read_nlvr2(path, shapes_root / "nlvr2" / "images")  # every image file exists, or this raises
        assert records and all(r.label is not None for r in records)
        # ShapesWorld's left_url / right_url name the files relative to nlvr2/: the reader agrees with them.
        for record, entry in zip(records, _lines(path), strict=True):
            assert record.left_path == str(shapes_root / "nlvr2" / entry["left_url"])
            assert record.right_path == str(shapes_root / "nlvr2" / entry["right_url"])
        encoded = tokenizer([r.sentence for r in records])["input_ids"]
        assert not any(tokenizer.unk_token_id in ids for ids in encoded)
