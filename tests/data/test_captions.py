"""Caption-corpus readers on tiny fixtures with the published field names (docs/paper_facts.md §7.1-7.3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.data.captions import (
    EVAL_SPLITS,
    PRETRAIN_SPLITS,
    ImageCaptions,
    karpathy_coco_ids,
    karpathy_flickr_ids,
    read_coco_captions,
    read_karpathy,
    read_visual_genome,
    to_hf_dataset,
)


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), (120, 30, 200)).save(path)
    return path


def _coco_image(image_id: int, split: str = "val2014") -> dict[str, Any]:
    file_name = f"COCO_{split}_{image_id:012d}.jpg"
    return {"license": 3, "file_name": file_name, "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
            "height": 4, "width": 6, "date_captured": "2013-11-14 11:18:45",
            "flickr_url": "http://farm4.staticflickr.com/1/1.jpg", "id": image_id}  # fmt: skip


def _coco_captions(tmp_path: Path, annotations: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    images = [_coco_image(391895), _coco_image(522418), _coco_image(184613)]
    if annotations is None:
        annotations = [
            {"image_id": 391895, "id": 1, "caption": "A man with a red helmet on a small moped.\n"},
            {"image_id": 522418, "id": 2, "caption": "A woman wearing a net on her head cutting a cake."},
            {"image_id": 391895, "id": 3, "caption": " Man riding a motor bike on a dirt road."},
            {"image_id": 391895, "id": 4, "caption": "   "},
        ]
    data = {"info": {"year": 2014, "version": "1.0"}, "licenses": [{"id": 3, "name": "CC", "url": "http://x"}],
            "images": images, "annotations": annotations}  # fmt: skip
    image_dir = tmp_path / "coco" / "val2014"
    for image in images:
        _image(image_dir / image["file_name"])
    return _write_json(tmp_path / "coco" / "annotations" / "captions_val2014.json", data), image_dir


# (cocoid, split); the Karpathy file mixes train2014 and val2014 images, as the real one does.
KARPATHY_COCO = [(9, "train"), (25, "train"), (30, "restval"), (42, "restval"), (391895, "val"), (522418, "test")]
FLICKR = [("1000092795.jpg", "train"), ("10002456.jpg", "train"), ("1000268201.jpg", "val"), ("1000344755.jpg", "test")]


def _sentences(imgid: int, texts: list[str]) -> list[dict[str, Any]]:
    return [
        {"tokens": t.lower().split(), "raw": t, "imgid": imgid, "sentid": 10 * imgid + k} for k, t in enumerate(texts)
    ]


def _karpathy_coco(tmp_path: Path) -> tuple[Path, Path]:
    root, images = tmp_path / "coco", []
    for imgid, (cocoid, split) in enumerate(KARPATHY_COCO):
        filepath = "train2014" if split == "train" else "val2014"
        filename = f"COCO_{filepath}_{cocoid:012d}.jpg"
        sentences = _sentences(imgid, [f"Picture {cocoid} one.", f"Picture {cocoid} two. "])
        images.append({"filepath": filepath, "sentids": [s["sentid"] for s in sentences], "filename": filename,
                       "imgid": imgid, "split": split, "sentences": sentences, "cocoid": cocoid})  # fmt: skip
        _image(root / filepath / filename)
    return _write_json(tmp_path / "karpathy" / "dataset_coco.json", {"images": images, "dataset": "coco"}), root


def _karpathy_flickr(tmp_path: Path) -> tuple[Path, Path]:
    root, images = tmp_path / "flickr30k-images", []
    for imgid, (filename, split) in enumerate(FLICKR):
        sentences = _sentences(imgid, ["Two young guys with shaggy hair.", "A dog runs."])
        images.append({"sentids": [s["sentid"] for s in sentences], "imgid": imgid, "sentences": sentences,
                       "split": split, "filename": filename})  # fmt: skip
        _image(root / filename)
    data = {"images": images, "dataset": "flickr30k"}
    return _write_json(tmp_path / "karpathy" / "dataset_flickr30k.json", data), root


# VG image id -> (coco_id, flickr_id). VG 1 is Karpathy val (391895) and VG 2 Karpathy train (9): the leak fixture.
VG_LINKS = {1: (391895, None), 2: (9, None), 3: (None, 1000268201), 4: (None, None), 2345678: (None, None)}


def _region(region_id: int, image_id: int, phrase: str) -> dict[str, Any]:
    return {"region_id": region_id, "image_id": image_id, "x": 1, "y": 2, "width": 3, "height": 2, "phrase": phrase}


def _visual_genome(tmp_path: Path, *, skip_files: tuple[int, ...] = ()) -> tuple[Path, Path, list[Path]]:
    vg = tmp_path / "vg"
    image_data = [{"image_id": image_id, "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{image_id}.jpg",
                   "width": 6, "height": 4, "coco_id": coco_id, "flickr_id": flickr_id}
                  for image_id, (coco_id, flickr_id) in VG_LINKS.items()]  # fmt: skip
    regions = [
        {"id": 1, "regions": [_region(11, 1, "a man on a moped")]},
        # v1.2 dumps key the entry by "id", others by "image_id"; both must work.
        {"image_id": 2, "regions": [_region(21, 2, "clock on a tower"), _region(22, 2, " clock on a tower ")]},
        {"id": 3, "regions": [_region(31, 3, "dog running"), _region(32, 3, "green grass")]},
        # A region without its own image_id belongs to its entry.
        {
            "id": 4,
            "regions": [_region(41, 4, "  "), _region(42, 4, "white plate"), {"region_id": 43, "phrase": "fork"}],
        },
        {"id": 2345678, "regions": [_region(51, 2345678, "tall building")]},
        {"id": 5, "regions": []},
    ]
    image_data.append({"image_id": 5, "url": "", "width": 6, "height": 4, "coco_id": None, "flickr_id": None})
    dirs = [vg / "VG_100K", vg / "VG_100K_2"]
    for image_id in VG_LINKS:
        if image_id not in skip_files:
            _image(dirs[1 if image_id > 1_000_000 else 0] / f"{image_id}.jpg")
    return _write_json(vg / "region_descriptions.json", regions), _write_json(vg / "image_data.json", image_data), dirs


def test_coco_captions_parse(tmp_path: Path) -> None:
    annotation_file, image_dir = _coco_captions(tmp_path)
    records = read_coco_captions(annotation_file, image_dir)
    assert [r.image_id for r in records] == ["coco:391895", "coco:522418"]  # 184613 has no caption: nothing to learn
    assert records[0].captions == [
        "A man with a red helmet on a small moped.",
        "Man riding a motor bike on a dirt road.",
    ]
    assert records[0].image_path == str(image_dir / "COCO_val2014_000000391895.jpg")
    assert all(Path(r.image_path).is_absolute() and r.source == "coco" for r in records)


def test_empty_captions_are_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    annotation_file, image_dir = _coco_captions(tmp_path)  # one caption of 391895 is only spaces
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.captions"):
        records = read_coco_captions(annotation_file, image_dir)
    assert all(c.strip() for r in records for c in r.captions)
    assert "captions_val2014.json: 1 empty caption(s) dropped (of 4)" in caplog.text
    caplog.clear()
    regions, image_data, dirs = _visual_genome(tmp_path)  # region 41's phrase is blank
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.captions"):
        read_visual_genome(regions, image_data, dirs)
    assert "region_descriptions.json: 1 empty caption(s) dropped" in caplog.text


def test_karpathy_coco_split_filtering(tmp_path: Path) -> None:
    split_file, root = _karpathy_coco(tmp_path)
    records = read_karpathy(split_file, root, PRETRAIN_SPLITS)
    assert [r.image_id for r in records] == ["coco:9", "coco:25", "coco:30", "coco:42"]
    assert records[0].image_path == str(root / "train2014" / "COCO_train2014_000000000009.jpg")
    assert records[2].image_path == str(root / "val2014" / "COCO_val2014_000000000030.jpg")
    assert records[0].captions == ["Picture 9 one.", "Picture 9 two."] and records[0].source == "coco"
    assert [r.image_id for r in read_karpathy(split_file, root, "test")] == ["coco:522418"]
    assert karpathy_coco_ids(split_file) == {391895, 522418}


def test_karpathy_flickr_has_no_filepath_or_cocoid(tmp_path: Path) -> None:
    split_file, root = _karpathy_flickr(tmp_path)
    records = read_karpathy(split_file, root, ["train"])
    assert [r.image_id for r in records] == ["flickr30k:1000092795.jpg", "flickr30k:10002456.jpg"]
    assert records[0].image_path == str(root / "1000092795.jpg") and records[0].source == "flickr30k"
    assert karpathy_flickr_ids(split_file) == {1000268201, 1000344755}
    with pytest.raises(AnnotationError, match=r"images\[2\] has no field 'cocoid'"):
        karpathy_coco_ids(split_file)


def test_karpathy_unknown_split_lists_present_splits(tmp_path: Path) -> None:
    split_file, root = _karpathy_coco(tmp_path)
    with pytest.raises(ValueError, match=r"dataset_coco\.json.*\['trian'\].*\['restval', 'test', 'train', 'val'\]"):
        read_karpathy(split_file, root, ["trian", "restval"])


def _edit_json(path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    return _write_json(path, data)


@pytest.mark.parametrize("sentences", [[], [{"raw": "  \n"}, {"raw": ""}]])
def test_karpathy_eval_image_without_a_sentence_is_an_error(tmp_path: Path, sentences: list) -> None:  # type: ignore[type-arg]
    """The 5K test split must not become 4,999 without a word."""
    split_file, root = _karpathy_coco(tmp_path)
    _edit_json(split_file, lambda d: d["images"][5].update(sentences=sentences))  # cocoid 522418, split "test"
    pattern = r"dataset_coco\.json: images\[5\] \(COCO_val2014_000000522418\.jpg, split 'test'\) has no non-empty"
    for splits in (["test"], EVAL_SPLITS, ["train", "test"]):
        with pytest.raises(AnnotationError, match=pattern):
            read_karpathy(split_file, root, splits)
    assert len(read_karpathy(split_file, root, PRETRAIN_SPLITS)) == 4  # other splits are not affected
    assert karpathy_coco_ids(split_file) == {391895, 522418}  # still held out of pre-training


def test_karpathy_training_image_without_a_sentence_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    split_file, root = _karpathy_coco(tmp_path)

    def empty_two(data: dict[str, Any]) -> None:
        data["images"][1]["sentences"] = [{"raw": " "}]  # cocoid 25, train
        data["images"][3]["sentences"] = []  # cocoid 42, restval

    _edit_json(split_file, empty_two)
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.captions"):
        records = read_karpathy(split_file, root, PRETRAIN_SPLITS)
    assert [r.image_id for r in records] == ["coco:9", "coco:30"]
    assert (
        "dataset_coco.json: 2 training image(s) without a non-empty sentence dropped; first: "
        "images[1] (COCO_train2014_000000000025.jpg), images[3] (COCO_val2014_000000000042.jpg)"
    ) in caplog.text


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["images"][4].update(cocoid=9), r"images\[0\] and images\[4\] have the same cocoid 9"),
        (
            lambda d: d["images"][5].update(filename=d["images"][2]["filename"]),
            r"images\[2\] and images\[5\] have the same filename 'COCO_val2014_000000000030\.jpg'",
        ),
    ],
)
def test_karpathy_repeated_image_names_both_entries(tmp_path: Path, edit, pattern: str) -> None:  # type: ignore[no-untyped-def]
    """A repeat across splits would put an evaluation image into training; within one it counts an image twice."""
    split_file, root = _karpathy_coco(tmp_path)
    _edit_json(split_file, edit)
    for read in (
        lambda: read_karpathy(split_file, root, PRETRAIN_SPLITS),
        lambda: read_karpathy(split_file, root, ["val"]),
        lambda: karpathy_coco_ids(split_file),
    ):
        with pytest.raises(AnnotationError, match=r"dataset_coco\.json: " + pattern):
            read()


def test_coco_and_visual_genome_repeated_ids_name_both_entries(tmp_path: Path) -> None:
    annotation_file, image_dir = _coco_captions(tmp_path)
    _edit_json(annotation_file, lambda d: d["images"][2].update(id=391895))
    pattern = r"captions_val2014\.json: images\[0\] and images\[2\] have the same id 391895"
    with pytest.raises(AnnotationError, match=pattern):
        read_coco_captions(annotation_file, image_dir)

    region_file, image_data_file, dirs = _visual_genome(tmp_path)
    _edit_json(image_data_file, lambda d: d[3].update(image_id=2))
    with pytest.raises(AnnotationError, match=r"image_data\.json: \[1\] and \[3\] have the same image id 2"):
        read_visual_genome(region_file, image_data_file, dirs)
    region_file, image_data_file, dirs = _visual_genome(tmp_path / "again")
    _edit_json(region_file, lambda d: d[4].update(id=1))  # keyed by "id" in one entry, "image_id" in another
    with pytest.raises(AnnotationError, match=r"region_descriptions\.json: \[0\] and \[4\] have the same image id 1"):
        read_visual_genome(region_file, image_data_file, dirs)


def test_pretraining_never_sees_karpathy_eval_images(tmp_path: Path) -> None:
    """docs/prior_art.md L4: COCO train + restval and VG minus Karpathy val/test share no image with val/test."""
    karpathy_file, coco_root = _karpathy_coco(tmp_path)
    flickr_file, _ = _karpathy_flickr(tmp_path)
    region_file, image_data_file, dirs = _visual_genome(tmp_path)
    eval_ids = karpathy_coco_ids(karpathy_file, EVAL_SPLITS)
    vg_to_coco = {f"vg:{vg_id}": f"coco:{coco_id}" for vg_id, (coco_id, _) in VG_LINKS.items() if coco_id is not None}

    def coco_identities(records: list[ImageCaptions]) -> set[str]:
        return {vg_to_coco.get(r.image_id, r.image_id) for r in records}

    leaky = read_visual_genome(region_file, image_data_file, dirs)
    assert "coco:391895" in coco_identities(leaky)  # the fixture does hold a leak for the filter to remove

    vg = read_visual_genome(region_file, image_data_file, dirs, eval_ids, karpathy_flickr_ids(flickr_file))
    pretraining = read_karpathy(karpathy_file, coco_root, PRETRAIN_SPLITS) + vg
    assert coco_identities(pretraining).isdisjoint({f"coco:{i}" for i in eval_ids})
    assert [r.image_id for r in vg] == ["vg:2", "vg:4", "vg:2345678"]  # vg:3 is a Flickr30K val image


def test_visual_genome_regions_become_captions(tmp_path: Path) -> None:
    region_file, image_data_file, dirs = _visual_genome(tmp_path)
    records = {r.image_id: r for r in read_visual_genome(region_file, image_data_file, dirs)}
    assert list(records) == ["vg:1", "vg:2", "vg:3", "vg:4", "vg:2345678"]  # vg:5 has no region
    assert records["vg:2"].captions == ["clock on a tower"]
    assert records["vg:4"].captions == ["white plate", "fork"]
    assert records["vg:1"].image_path == str(dirs[0] / "1.jpg")
    assert records["vg:2345678"].image_path == str(dirs[1] / "2345678.jpg")
    assert {r.source for r in records.values()} == {"vg"}


def test_missing_images_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    region_file, image_data_file, dirs = _visual_genome(tmp_path, skip_files=(3, 4))
    message = r"2 of 5 images \(referenced by 2 records\) from .*region_descriptions\.json.*VG_100K_2.*3\.jpg"
    with pytest.raises(FileNotFoundError, match=message):
        read_visual_genome(region_file, image_data_file, dirs)
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.captions"):
        records = read_visual_genome(region_file, image_data_file, dirs, allow_missing=True)
    assert [r.image_id for r in records] == ["vg:1", "vg:2", "vg:2345678"]
    assert "2 of 5 images" in caplog.text
    # Evaluation images are dropped before files are looked for, so their files need not be there.
    region_file, image_data_file, dirs = _visual_genome(tmp_path / "without-flickr-val", skip_files=(3,))
    assert len(read_visual_genome(region_file, image_data_file, dirs, exclude_flickr_ids={1000268201})) == 4

    annotation_file, image_dir = _coco_captions(tmp_path)
    (image_dir / "COCO_val2014_000000522418.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000522418\.jpg"):
        read_coco_captions(annotation_file, image_dir)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        read_coco_captions(tmp_path / "nowhere.json", image_dir)


@pytest.mark.parametrize(
    ("annotation", "pattern"),
    [
        ({"image_id": 391895, "id": 9}, r"annotations\[3\] has no field 'caption' \(expected COCO captions format"),
        ({"image_id": 391895, "id": 9, "caption": 5}, r"annotations\[3\]\.caption is int 5, should be str"),
        ({"image_id": "391895", "caption": "x"}, r"annotations\[3\]\.image_id is str '391895', should be int"),
        ({"image_id": 7, "caption": "x"}, r"annotations\[3\]\.image_id is 7, which is not the id of any entry"),
        ("a caption", r"annotations\[3\] is str 'a caption', should be object"),
    ],
)
def test_malformed_coco_names_file_entry_and_field(tmp_path: Path, annotation: Any, pattern: str) -> None:
    good = [{"image_id": 391895, "id": k, "caption": "A caption."} for k in range(3)]
    annotation_file, image_dir = _coco_captions(tmp_path, [*good, annotation])
    with pytest.raises(AnnotationError, match=r"captions_val2014\.json: " + pattern):
        read_coco_captions(annotation_file, image_dir)


def test_malformed_json_and_formats(tmp_path: Path) -> None:
    broken = tmp_path / "captions_train2014.json"
    broken.write_text('{"images": [\n  {"id": 1,}\n]}', encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"captions_train2014\.json: invalid JSON at line 2, column 12"):
        read_coco_captions(broken, tmp_path)
    karpathy = _write_json(tmp_path / "dataset_coco.json", [{"split": "train"}])
    with pytest.raises(AnnotationError, match=r"dataset_coco\.json: top level is list .*, should be object"):
        read_karpathy(karpathy, tmp_path, PRETRAIN_SPLITS)
    no_sentences = _write_json(
        tmp_path / "k.json", {"dataset": "coco", "images": [{"split": "train", "filename": "a"}]}
    )
    with pytest.raises(AnnotationError, match=r"k\.json: images\[0\] has no field 'sentences'"):
        read_karpathy(no_sentences, tmp_path, PRETRAIN_SPLITS[:1])

    region_file, image_data_file, dirs = _visual_genome(tmp_path)
    _write_json(image_data_file, [{"image_id": 1, "url": "", "width": 6, "height": 4}])
    with pytest.raises(AnnotationError, match=r"image_data\.json: \[0\] has no field 'coco_id'"):
        read_visual_genome(region_file, image_data_file, dirs)
    _write_json(image_data_file, [{"url": "", "coco_id": None, "flickr_id": None}])
    with pytest.raises(AnnotationError, match=r"\[0\] has no field 'image_id' or 'id'"):
        read_visual_genome(region_file, image_data_file, dirs)
    _write_json(image_data_file, [{"id": 1, "coco_id": None, "flickr_id": None}])
    with pytest.raises(
        AnnotationError, match=r"region_descriptions\.json: \[1\]\.regions\[0\]\.image_id is 2, which has no"
    ):
        read_visual_genome(region_file, image_data_file, dirs)


def _rows(records: list[ImageCaptions]) -> list[dict[str, Any]]:
    return [
        {"image_id": r.image_id, "image_path": r.image_path, "captions": r.captions, "source": r.source}
        for r in records
    ]


def test_hf_datasets_round_trip_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what HF_DATASETS_OFFLINE=1 sets at import
    records = [*read_coco_captions(*_coco_captions(tmp_path)), ImageCaptions("vg:7", "/vg/7.jpg", ["café ☕"], "vg")]
    assert to_hf_dataset(records).to_list() == _rows(records)
    assert [ImageCaptions(**row) for row in to_hf_dataset(records)] == records
    assert len(to_hf_dataset([])) == 0
