"""A user's dataset through `datasets` (sources.py): tiny datasets in the Hub schemas of VQA v2, Flickr30K (Karpathy)
and SNLI-VE, written as a save_to_disk folder, Parquet files, a folder laid out like a Hub dataset repo, CSV and JSON
lines, read back split by split (map-style and streamed), and every mistake's message."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from pixelbert_pl.data import sources
from pixelbert_pl.data.sources import (
    DatasetSource,
    MissingColumnError,
    SourceError,
    SourceNotFoundError,
    SplitNotFoundError,
    image_reference,
    load_split,
    require_columns,
    split_names,
    undecoded_images,
)
from pixelbert_pl.processing.images import image_size, load_image

COLOURS = ["red", "green", "blue", "yellow", "white"]


@pytest.fixture(autouse=True)
def _offline_tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing goes to ~/.cache; each test starts with the per-process caches empty.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    for cache in ("_SAVED", "_PREPARED", "_FILES"):
        monkeypatch.setattr(sources, cache, {})


def _image(i: int) -> Image.Image:
    return Image.new("RGB", (3 + i, 2), COLOURS[i % len(COLOURS)])


def vqa_v2(ids: range) -> datasets.Dataset:
    answer = {"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
              "answer_id": datasets.Value("int64")}  # fmt: skip
    features = datasets.Features({
        "question_type": datasets.Value("string"), "multiple_choice_answer": datasets.Value("string"),
        "answers": datasets.List(answer), "image_id": datasets.Value("int64"),
        "answer_type": datasets.Value("string"), "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"), "image": datasets.Image(),
    })  # fmt: skip
    rows = {
        "question_type": ["what color"] * len(ids),
        "multiple_choice_answer": [COLOURS[i % 5] for i in ids],
        "answers": [[{"answer": COLOURS[i % 5], "answer_confidence": "yes", "answer_id": k} for k in range(1, 11)]
                    for i in ids],
        "image_id": [i // 2 for i in ids],
        "answer_type": ["other"] * len(ids),
        "question_id": [1000 + i for i in ids],
        "question": [f"What color is shape {i}?" for i in ids],
        "image": [_image(i) for i in ids],
    }  # fmt: skip
    return datasets.Dataset.from_dict(rows, features=features)


def flickr30k(ids: range) -> datasets.Dataset:
    features = datasets.Features({
        "image": datasets.Image(), "caption": datasets.List(datasets.Value("string")),
        "sentids": datasets.List(datasets.Value("string")), "split": datasets.Value("string"),
        "img_id": datasets.Value("string"), "filename": datasets.Value("string"),
    })  # fmt: skip
    rows = {
        "image": [_image(i) for i in ids],
        "caption": [[f"shape {i}, caption {k}" for k in range(5)] for i in ids],
        "sentids": [[str(5 * i + k) for k in range(5)] for i in ids],
        "split": ["train"] * len(ids),
        "img_id": [str(i) for i in ids],
        "filename": [f"{100 + i}.jpg" for i in ids],
    }
    return datasets.Dataset.from_dict(rows, features=features)


def snli_ve(ids: range) -> datasets.Dataset:
    features = datasets.Features({
        "Flickr30K_ID": datasets.Value("string"), "gold_label": datasets.Value("string"),
        "image": datasets.Image(), "sentence": datasets.Value("string"),
    })  # fmt: skip
    rows = {
        "Flickr30K_ID": [str(100 + i) for i in ids],
        "gold_label": [["entailment", "neutral", "contradiction"][i % 3] for i in ids],
        "image": [_image(i) for i in ids],
        "sentence": [f"There is shape {i}." for i in ids],
    }
    return datasets.Dataset.from_dict(rows, features=features)


# schema -> (builder, id column, text column)
SCHEMAS: dict[str, tuple[Callable[[range], datasets.Dataset], str, str]] = {
    "vqa_v2": (vqa_v2, "question_id", "question"),
    "flickr30k": (flickr30k, "img_id", "caption"),
    "snli_ve": (snli_ve, "Flickr30K_ID", "sentence"),
}
TRAIN, VALIDATION = range(0, 4), range(4, 6)


def save_to_disk(root: Path, make: Callable[[range], datasets.Dataset]) -> DatasetSource:
    folder = root / "saved"
    datasets.DatasetDict(train=make(TRAIN), validation=make(VALIDATION)).save_to_disk(str(folder))
    return DatasetSource(path=str(folder))


def parquet_files(root: Path, make: Callable[[range], datasets.Dataset]) -> DatasetSource:
    make(TRAIN).to_parquet(str(root / "mine_tr.parquet"))
    make(VALIDATION).to_parquet(str(root / "mine_va.parquet"))
    return DatasetSource(data_files={"train": str(root / "mine_tr.parquet"), "validation": str(root / "mine_va.*")})


def hub_layout(root: Path, make: Callable[[range], datasets.Dataset]) -> DatasetSource:
    # The Hub's own layout, whose split names `datasets` reads from the file names: the Hub-id code path, offline.
    (root / "repo" / "data").mkdir(parents=True)
    make(TRAIN).to_parquet(str(root / "repo" / "data" / "train-00000-of-00001.parquet"))
    make(VALIDATION).to_parquet(str(root / "repo" / "data" / "validation-00000-of-00001.parquet"))
    return DatasetSource(path=str(root / "repo"), cache_dir=str(root / "cache"))


FORMS = {"save_to_disk": save_to_disk, "parquet": parquet_files, "hub_layout": hub_layout}


def ids_of(dataset: Any, column: str) -> list[Any]:
    return [row[column] for row in dataset]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("form", FORMS)
def test_each_form_reads_each_schema_split_by_split(tmp_path: Path, form: str, schema: str) -> None:
    make, id_column, text_column = SCHEMAS[schema]
    source = FORMS[form](tmp_path, make)
    assert split_names(source) == ["train", "validation"]
    train, val = load_split(source, "train"), load_split(source, "val")
    assert isinstance(train, datasets.Dataset)
    assert ids_of(train, id_column) == make(TRAIN)[id_column]
    assert val[text_column] == make(VALIDATION)[text_column]
    assert train.features == make(TRAIN).features  # the Image feature and nested answers survive every form
    assert train[0]["image"].size == (3, 2)

    streamed = load_split(DatasetSource(**{**vars(source), "streaming": True}), "val")
    assert isinstance(streamed, datasets.IterableDataset)
    assert ids_of(streamed, id_column) == make(VALIDATION)[id_column]


def test_map_style_splits_are_loaded_once_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = parquet_files(tmp_path, vqa_v2)
    assert len(load_split(source, "train")) == len(TRAIN)

    def no_second_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("loaded twice")

    monkeypatch.setattr(datasets, "load_dataset", no_second_load)
    assert len(load_split(source, "val")) == len(VALIDATION)


def test_a_readme_with_configs_names_splits_and_name_picks_one(tmp_path: Path) -> None:
    source = hub_layout(tmp_path, snli_ve)
    (tmp_path / "repo" / "small").mkdir()
    snli_ve(range(9, 10)).to_parquet(str(tmp_path / "repo" / "small" / "only.parquet"))
    (tmp_path / "repo" / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "- config_name: small\n  data_files:\n  - split: test\n    path: small/*.parquet\n---\n"
    )
    assert split_names(source) == ["train"]
    small = DatasetSource(path=source.path, name="small", cache_dir=source.cache_dir)
    assert split_names(small) == ["test"]
    assert load_split(small, "test")["Flickr30K_ID"] == ["109"]
    with pytest.raises(SourceError, match=r"no config 'large' .*Available: \['default', 'small'\].*source\.name"):
        load_split(DatasetSource(path=source.path, name="large"), "test")


def test_a_saved_dataset_is_one_split(tmp_path: Path) -> None:
    flickr30k(TRAIN).save_to_disk(str(tmp_path / "one"))
    source = DatasetSource(path=str(tmp_path / "one"), streaming=True)
    assert split_names(source) == ["train"]
    assert ids_of(load_split(source, "train"), "img_id") == ["0", "1", "2", "3"]
    with pytest.raises(SplitNotFoundError, match=r"no split 'validation' \(splits: train\); map yours with splits: "
                       r"\{val: train\}"):  # fmt: skip
        load_split(source, "val")


def write_images(root: Path, names: list[str]) -> None:
    (root / "images").mkdir()
    for i, name in enumerate(names):
        _image(i).save(root / "images" / name)


def test_csv_and_json_lines_with_image_paths_under_an_image_root(tmp_path: Path) -> None:
    write_images(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "train.csv").write_text("image,caption\na.png,a red shape\nb.png,a green shape\n")
    (tmp_path / "val.csv").write_text("image,caption\nc.png,a blue shape\n")
    rows = [{"image": "a.png", "caption": ["red", "a red one"]}, {"image": "c.png", "caption": ["blue"]}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    csv = DatasetSource(path=str(tmp_path), data_files={"train": "train.csv", "validation": "val.csv"})
    assert load_split(csv, "train")["caption"] == ["a red shape", "a green shape"]
    streamed = load_split(DatasetSource(**{**vars(csv), "streaming": True}), "val")
    assert list(streamed) == [{"image": "c.png", "caption": "a blue shape"}]

    jsonl = load_split(DatasetSource(path=str(tmp_path / "captions.jsonl")), "train")  # one file: one split, train
    assert jsonl["caption"] == [["red", "a red one"], ["blue"]]
    key, data = image_reference(jsonl[1]["image"], str(tmp_path / "images"))
    assert (key, data) == (str(tmp_path / "images" / "c.png"), None)
    assert image_size(key, data) == (2, 5)  # (height, width), read by the package's own reader


def test_data_files_as_a_list_a_glob_a_file_url_and_a_json_list(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"part{i}.csv").write_text(f"image,caption\nx{i}.png,caption {i}\n")
    listed = DatasetSource(data_files=[str(tmp_path / "part0.csv"), str(tmp_path / "part1.csv")])
    assert split_names(listed) == ["train"]
    assert load_split(listed, "train")["caption"] == ["caption 0", "caption 1"]
    url = DatasetSource(data_files={"train": f"file://{tmp_path}/part*.csv"}, streaming=True)
    assert [r["caption"] for r in load_split(url, "train")] == ["caption 0", "caption 1"]
    (tmp_path / "records.json").write_text(json.dumps([{"sentence": "a"}, {"sentence": "b"}], indent=2))
    assert load_split(DatasetSource(path=str(tmp_path / "records.json")), "train")["sentence"] == ["a", "b"]


def test_splits_maps_ours_and_keeps_the_defaults_it_does_not_name(tmp_path: Path) -> None:
    source = save_to_disk(tmp_path, snli_ve)
    source.splits = {"test": "validation"}
    assert len(load_split(source, "test")) == len(VALIDATION)
    assert len(load_split(source, "train")) == len(TRAIN)


def test_a_missing_split_lists_the_splits_present_and_the_mapping(tmp_path: Path) -> None:
    source = hub_layout(tmp_path, vqa_v2)
    (tmp_path / "repo" / "data" / "validation-00000-of-00001.parquet").rename(
        tmp_path / "repo" / "data" / "test-00000-of-00001.parquet"
    )
    expected = (
        r"has no split 'validation' \(splits: train, test\); map yours with splits: \{val: test\} \(in full: "
        r"\{train: train, val: test, test: test\}; on the command line --data\.init_args\.source\.splits\.val test\)"
    )
    with pytest.raises(SplitNotFoundError, match=expected):
        load_split(source, "val")
    with pytest.raises(SplitNotFoundError, match=expected):
        load_split(DatasetSource(**{**vars(source), "streaming": True}), "val")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("missing.csv", r"missing\.csv: no such file \(or nothing matches the glob\)"),
        ("nothing_*.parquet", r"nothing_\*\.parquet: no such file"),
        ("empty_folder", r"empty_folder is a folder, but no dataset: no save_to_disk files and no data files"),
        ("/no/such/folder", r"/no/such/folder: no such file or folder"),
    ],
)
def test_a_path_that_is_no_dataset_lists_the_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str,
                                                   expected: str) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(SourceNotFoundError, match=expected) as caught:
        load_split(DatasetSource(path=path), "train")
    message = str(caught.value)
    assert "A source is one of" in message and "save_to_disk" in message
    assert "--data.init_args.source.data_files" in message and "--data.init_args.source.path" in message


def test_a_relative_name_neither_here_nor_on_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceNotFoundError, match=r"mydata/hf_captions: no such local file or folder, and the Hub"):
        split_names(DatasetSource(path="mydata/hf_captions"))


def test_an_empty_source_says_which_fields_to_set() -> None:
    with pytest.raises(SourceError, match=r"names nothing: set --data\.init_args\.source\.path or .*data_files"):
        load_split(DatasetSource(), "train")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.txt", b"hello\n", r"notes\.txt: a \.txt file is no data file this reads \(\.parquet, \.csv"),
        ("shards.parquet", b"not parquet", r"shards\.parquet: not a Parquet file \(it starts with b'not '\); "
                                           r"expected a Parquet file"),
        ("pairs.csv", bytes(range(128, 256)), r"pairs\.csv: not UTF-8 text \(byte 0\); expected CSV"),
        ("coco.json", json.dumps({"info": {}, "images": [{"id": 1}], "annotations": [{"caption": "x"}]}).encode(),
         r"coco\.json: one JSON object holding lists \(images, annotations\): a published annotation file, not rows;"
         r" expected JSON lines .*--data\.init_args\.source\.data_files"),
        ("pretty.json", json.dumps({"image": "a.png", "caption": "x"}, indent=2).encode(),
         r"pretty\.json: line 1 is no whole JSON object \(Expecting property name .*; one JSON value spread over "
         r"lines\?\); expected JSON lines"),
        ("ragged.csv", b"image,caption\na.png,x\nb.png,y,z,w\n",
         r"data files .*ragged\.csv: not readable as csv \(ParserError: .*Expected 2 fields in line 3, saw 4\); "
         r"expected CSV: UTF-8 text with a header row"),
    ],
)  # fmt: skip
def test_a_file_of_the_wrong_kind_says_what_was_expected(tmp_path: Path, name: str, content: bytes,
                                                         expected: str) -> None:  # fmt: skip
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=expected):
        load_split(DatasetSource(data_files=[str(tmp_path / name)]), "train")


def test_data_files_that_name_a_folder_or_mix_kinds(tmp_path: Path) -> None:
    saved = save_to_disk(tmp_path, snli_ve)
    with pytest.raises(SourceError, match=r"saved is a folder, and data_files takes files: give the folder in "
                       r"--data\.init_args\.source\.path"):  # fmt: skip
        split_names(DatasetSource(data_files=[saved.path]))
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(SourceError, match=r"files of different kinds \(\.csv, \.jsonl\); give one kind"):
        split_names(DatasetSource(data_files={"train": str(tmp_path / "a.csv"), "test": str(tmp_path / "b.jsonl")}))
    with pytest.raises(SourceError, match=r"name 'small' picks a Hub config; save_to_disk folder .* has none"):
        split_names(DatasetSource(path=saved.path, name="small"))


def test_a_missing_column_lists_the_columns_present_and_its_argument(tmp_path: Path) -> None:
    source = save_to_disk(tmp_path, vqa_v2)
    train = load_split(source, "train")
    require_columns(train, {"image": "image", "text": "question", "answers": "answers", "label": None}, "vqa")
    expected = (
        r"^vqa: no column 'img' for the image \(set it with --data\.init_args\.columns\.image\); did you mean "
        r"'image'\?; columns present: question_type, multiple_choice_answer, answers, image_id, answer_type, "
        r"question_id, question, image$"
    )
    with pytest.raises(MissingColumnError, match=expected):
        require_columns(train, {"image": "img", "text": "question"}, "vqa")
    # A streamed CSV knows its columns only from its first row.
    (tmp_path / "pairs.csv").write_text("image_path,caption\na.png,x\n")
    stream = load_split(DatasetSource(data_files=[str(tmp_path / "pairs.csv")], streaming=True), "train")
    with pytest.raises(MissingColumnError, match=r"no column 'image' .* columns present: image_path, caption$"):
        require_columns(stream, {"image": "image"}, "pairs.csv")


def _png(i: int) -> bytes:
    out = io.BytesIO()
    _image(i).save(out, format="PNG")
    return out.getvalue()


def test_image_reference_whatever_the_column_holds(tmp_path: Path) -> None:
    train = undecoded_images(load_split(save_to_disk(tmp_path, flickr30k), "train"), ["image", "caption"])
    key, data = image_reference(train[1]["image"])
    assert key.startswith("sha1:") and data is not None
    assert load_image(key, data=data).size == (4, 2)
    assert image_reference(train[1]["image"]) == (key, data)  # stable: the same bytes, the same key
    assert image_reference(_png(1)) == (key, data)  # raw bytes, keyed by content alike

    write_images(tmp_path, ["a.png"])
    local = str(tmp_path / "images" / "a.png")
    assert image_reference("a.png", str(tmp_path / "images")) == (local, None)
    assert image_reference(local, "/elsewhere") == (local, None)  # absolute: as it is
    assert image_reference({"bytes": None, "path": "a.png"}, str(tmp_path / "images")) == (local, None)
    url = f"file://{local}"
    assert image_reference(url) == (url, (tmp_path / "images" / "a.png").read_bytes())  # URLs read through fsspec
    assert image_reference("a.png", f"file://{tmp_path}/images") == (url, (tmp_path / "images" / "a.png").read_bytes())
    with pytest.raises(SourceError, match=r"expected a datasets\.Image column \(cast with Image\(decode=False\)\)"):
        image_reference(_image(0))


def test_the_cli_builds_the_source_from_its_fields() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--source", type=DatasetSource)
    args = parser.parse_args(["--source.path", "HuggingFaceM4/VQAv2", "--source.splits.val", "test",
                              "--source.data_files", "{train: a.csv}", "--source.streaming", "true"])  # fmt: skip
    source = DatasetSource(**vars(args.source))
    assert source.splits == {"train": "train", "val": "test", "test": "test"}
    assert source.data_files == {"train": "a.csv"} and source.streaming is True
