"""Sharded Parquet corpora: what `write_shards` writes streams back through `datasets` as the in-memory records,
from a folder and from a `file://` URL; the CC3M-style readers; a malformed index is named."""

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.shards import (
    SHARD_COLUMNS,
    ShardIndexError,
    read_caption_folder,
    read_caption_tsv,
    read_shard_index,
    write_shards,
)
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule


@pytest.fixture(scope="module")
def shapes_train(shapes_root) -> list[ImageCaptions]:
    return list(ShapesWorldDataModule(root=str(shapes_root), num_workers=0).split_records("fit")["train"])


def _stream(urls: list[str]) -> list[dict]:
    return list(datasets.load_dataset("parquet", data_files=urls, streaming=True, split="train"))


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)


def test_shards_stream_back_every_record_once_with_its_image_bytes(shapes_train, tmp_path) -> None:
    written = write_shards(iter(shapes_train), tmp_path, records_per_shard=7)
    index = read_shard_index(str(tmp_path))
    assert index == written and index.num_records == len(shapes_train) == 48
    assert [s.records for s in index.shards] == [7] * 6 + [6]  # a short last shard
    assert [Path(u).name for u in index.urls()] == [f"train-{i:05d}-of-00007.parquet" for i in range(7)]
    assert index.num_pairs == sum(len(r.captions) for r in shapes_train)

    rows = _stream(index.urls())
    assert list(rows[0]) == list(SHARD_COLUMNS)
    expected = {r.image_id: r for r in shapes_train}
    assert sorted(row["image_id"] for row in rows) == sorted(expected)  # every record exactly once
    for row in rows:
        record = expected[row["image_id"]]
        assert ImageCaptions(row["image_id"], row["image_path"], row["captions"], row["source"]) == record
        assert row["image"] == Path(record.image_path).read_bytes()
    starts = [sum(s.records for s in index.shards[:i]) for i in range(len(index.shards))]
    for shard, start in zip(index.shards, starts, strict=True):
        assert shard.caption_counts == tuple(len(row["captions"]) for row in rows[start : start + shard.records])

    # Shuffled once: no shard is a run of consecutive input records.
    position = {r.image_id: i for i, r in enumerate(shapes_train)}
    for start, shard in zip(starts, index.shards, strict=True):
        places = sorted(position[row["image_id"]] for row in rows[start : start + shard.records])
        assert places != list(range(places[0], places[0] + shard.records))
    info = json.loads((tmp_path / "train.index.json").read_text())
    assert info["format"] == "pixelbert-shards" and info["version"] == 1 and info["sources"] == {"coco": 48}


def test_the_index_read_through_a_url_streams_the_same_rows(shapes_train, tmp_path) -> None:
    write_shards(shapes_train[:10], tmp_path / "a", records_per_shard=4, seed=3)
    local = read_shard_index(str(tmp_path / "a"))
    remote = read_shard_index((tmp_path / "a").as_uri() + "/")
    assert remote.urls() == [Path(u).as_uri() for u in local.urls()]
    assert remote.shards == local.shards
    assert [r["image_id"] for r in _stream(remote.urls())] == [r["image_id"] for r in _stream(local.urls())]
    # Rewriting with another shard count leaves no stale shard behind.
    write_shards(shapes_train[:10], tmp_path / "a", records_per_shard=10, seed=3)
    assert sorted(p.name for p in (tmp_path / "a").glob("*.parquet")) == ["train-00000-of-00001.parquet"]


def test_a_missing_image_names_its_file_and_record(tmp_path) -> None:
    record = ImageCaptions("x:1", str(tmp_path / "gone.png"), ["a caption"], "x")
    with pytest.raises(FileNotFoundError, match=r"gone\.png.*'x:1'"):
        write_shards([record], tmp_path / "out")
    assert not (tmp_path / "out" / "train.index.json").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["shards"][1].update(records=99), r"shards\[1\]\.records is 99"),
        (lambda d: d["shards"][0].pop("file"), r"shards\[0\]\.file is None"),
        (lambda d: d["shards"][0]["caption_counts"].__setitem__(0, "5"), r"shards\[0\]\.caption_counts\[0\]"),
        (lambda d: d.update(version=2), "format/version"),
    ],
)
def test_a_malformed_index_names_the_field(shapes_train, tmp_path, change, field) -> None:
    write_shards(shapes_train[:10], tmp_path, records_per_shard=4)
    path = tmp_path / "train.index.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ShardIndexError, match=field) as err:
        read_shard_index(str(tmp_path))
    assert "train.index.json" in str(err.value)


def test_a_caption_tsv_groups_lines_of_one_image(tmp_path) -> None:
    _png(tmp_path / "img" / "a.png", (255, 0, 0))
    _png(tmp_path / "elsewhere" / "b.png", (0, 255, 0))
    tsv = tmp_path / "captions.tsv"
    tsv.write_text(f"caption\timage\na red square\ta.png\na green one\t{tmp_path}/elsewhere/b.png\nred, again\ta.png\n")
    records = read_caption_tsv(tsv, tmp_path / "img")
    assert records == [
        ImageCaptions("cc3m:a.png", str(tmp_path / "img" / "a.png"), ["a red square", "red, again"], "cc3m"),
        ImageCaptions(f"cc3m:{tmp_path}/elsewhere/b.png", str(tmp_path / "elsewhere" / "b.png"), ["a green one"],
                      "cc3m"),
    ]  # fmt: skip
    tsv.write_text("a red square\ta.png\n \ta.png\n")
    with pytest.raises(AnnotationError, match=r"captions\.tsv: line 2"):
        read_caption_tsv(tsv, tmp_path / "img")
    tsv.write_text("a red square\ta.png\nno image here\n")
    with pytest.raises(AnnotationError, match=r"captions\.tsv: line 2 .*found 1"):
        read_caption_tsv(tsv, tmp_path / "img")
    tsv.write_text("a red square\tmissing.png\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_caption_tsv(tsv, tmp_path / "img")
    assert read_caption_tsv(tsv, tmp_path / "img", allow_missing=True) == []


def test_an_image_folder_pairs_images_with_their_caption_files(tmp_path) -> None:
    _png(tmp_path / "00000" / "000000001.png", (255, 0, 0))
    (tmp_path / "00000" / "000000001.txt").write_text("a red square\n")
    _png(tmp_path / "00001" / "000000002.png", (0, 0, 255))
    (tmp_path / "00001" / "000000002.txt").write_text("blue\na blue square\n")
    _png(tmp_path / "00001" / "000000003.png", (0, 0, 0))  # no caption file: skipped
    records = read_caption_folder(tmp_path, source="web")
    assert [(r.image_id, r.captions, r.source) for r in records] == [
        ("web:00000/000000001.png", ["a red square"], "web"),
        ("web:00001/000000002.png", ["blue", "a blue square"], "web"),
    ]
    (tmp_path / "00000" / "000000001.txt").write_text("\n")
    with pytest.raises(AnnotationError, match=r"000000001\.txt: empty caption file"):
        read_caption_folder(tmp_path)
