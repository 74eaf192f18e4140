"""Image sizes of a `datasets` source for the bucketed samplers (issue 34): from `height` / `width` columns where the
source has them, else read once from the headers and cached by `datasets`, so a later fit reads no header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest

import hf_corpora
from pixelbert_pl.data import DatasetSource, HFNLVR2DataModule, HFVQADataModule, PairColumns
from pixelbert_pl.data import hf as hf_module
from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule

# Fixed padded shapes (the bucketed sampler): ShapesWorld's images are square, so they fill the square bucket.
BUCKETED: dict[str, Any] = {
    "image_min_size": 64, "image_max_size": 128, "pad_long_sides": [96], "max_text_length": 24, "batch_size": 4,
    "num_workers": 0, "answer_min_count": 1,
}  # fmt: skip


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the image headers the `datasets` sources read (in `RowSizes`' `Dataset.map`)."""
    calls = [0]
    real = hf_module.image_size

    def counted(*args: Any) -> tuple[int, int]:
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(hf_module, "image_size", counted)
    return calls


@pytest.fixture
def saved_vqa(shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    path = tmp_path / "vqa"
    hf_corpora.vqa_v2(shapes_root).save_to_disk(str(path))
    return path


def _members(module: Any) -> dict[int, list[int]]:
    module.setup("fit")
    return module.train_dataloader().sampler.members


def test_sizes_are_read_once_and_a_later_fit_reads_no_header(
    saved_vqa: Path, shapes_root: Path, header_reads: list[int]
) -> None:
    tokenizer = str(shapes_root / "vocab.txt")
    first = _members(HFVQADataModule(DatasetSource(path=str(saved_vqa)), tokenizer=tokenizer, **BUCKETED))
    images = len({r.image_path for r in HFVQADataModule(DatasetSource(path=str(saved_vqa))).records("train")})
    assert header_reads[0] == images > 10  # one header an image, not one a question
    again = _members(HFVQADataModule(DatasetSource(path=str(saved_vqa)), tokenizer=tokenizer, **BUCKETED))
    assert header_reads[0] == images, "the second fit read headers again"
    assert again == first
    # The buckets are those the published files' DataModule reads from the files' headers.
    assert _members(ShapesWorldVQADataModule(root=str(shapes_root), **BUCKETED)) == first


def test_height_and_width_columns_give_the_sizes(saved_vqa: Path, shapes_root: Path, header_reads: list[int]) -> None:
    """Columns saying every image is a landscape (twice as wide as high) put every item in a landscape bucket,
    which the square images' headers would not: the sizes came from the columns, and no header was read."""
    table = datasets.load_from_disk(str(saved_vqa))
    sized = table.map(lambda row: {"height": 100, "width": 200})
    sized.save_to_disk(str(saved_vqa.parent / "sized"))
    source = DatasetSource(path=str(saved_vqa.parent / "sized"))
    module = HFVQADataModule(source, tokenizer=str(shapes_root / "vocab.txt"), **BUCKETED)
    members = _members(module)
    shapes = module.padding.shapes
    assert shapes is not None and header_reads[0] == 0
    assert {shapes.shapes[b] for b in members} == {(64, 128)}, "one landscape bucket (64 x 128 after the resize)"


def test_pairs_keep_their_images_unread_until_a_sample_needs_them(shapes_root: Path, tmp_path: Path) -> None:
    """Two image columns are chained, not merged into a dict (which would read every image's bytes at setup)."""
    table = hf_corpora.snli_ve(shapes_root)["train"].cast_column("image", datasets.Image(decode=False))
    table = table.add_column("right", table["image"]).cast_column("right", datasets.Image())
    pairs = table.rename_columns({"image": "left", "gold_label": "label"}).map(
        lambda row: {"label": row["label"] == "entailment"}
    )
    pairs.save_to_disk(str(tmp_path / "pairs"))
    columns = PairColumns(left="left", right="right", sentence="sentence", label="label", identifier=None)
    module = HFNLVR2DataModule(
        DatasetSource(path=str(tmp_path / "pairs"), splits={"val": "train"}), columns,
        tokenizer=str(shapes_root / "vocab.txt"), **{k: v for k, v in BUCKETED.items() if k != "answer_min_count"},
    )  # fmt: skip
    module.setup("fit")
    held = module.image_bytes["train"]
    assert not isinstance(held, dict) and len(held) > 0
    batch = next(iter(module.train_dataloader()))
    assert batch.pixel_values.shape[0] == 2 * 4
