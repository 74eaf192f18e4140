"""A user's dataset, read through Hugging Face `datasets`: where it is (`DatasetSource`), one split of it
(`load_split`), the splits it has (`split_names`), the columns a task needs (`require_columns`) and its images
whatever the image column holds (`image_reference`).

A source is a Hub dataset id, a `save_to_disk` folder, a local folder laid out like a Hub dataset repo, or data files
(Parquet, CSV, JSON lines; local, `file://`, `s3://`... through fsspec). Every mistake is a `SourceError` that names
the path, split or column, says what was expected and which argument sets it: the task DataModules build on this and
`pixelbert-check-data` reports through it.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import fsspec
import pyarrow
from datasets.data_files import DataFilesDict, contains_wildcards, sanitize_patterns
from datasets.exceptions import DatasetGenerationError

# Where the DataModules take these settings; the errors name the flags a user types.
SOURCE_ARGUMENT = "--data.init_args.source"
COLUMNS_ARGUMENT = "--data.init_args.columns"
DEFAULT_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# The loader of each data file suffix; compressed files (.csv.gz, ...) are read by the same loader.
BUILDERS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".json": "json"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes: a DatasetDict, a Dataset
# Top-level keys of the published annotation files (COCO, Karpathy, VQA v2): one JSON object, not records.
PUBLISHED_KEYS = ("images", "annotations", "questions")
# How much of a data file is read to tell its kind; JSON lines rows are far shorter than this.
HEAD_BYTES = 8 << 20
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

FORMS = f"""A source is one of:
  - a Hub dataset id, e.g. HuggingFaceM4/VQAv2 (its config in name): {SOURCE_ARGUMENT}.path
  - a folder written by save_to_disk (holds dataset_dict.json or state.json): {SOURCE_ARGUMENT}.path
  - a folder laid out like a Hub dataset repo (data/train-00000-of-00001.parquet, or train.csv and validation.csv):
    {SOURCE_ARGUMENT}.path
  - data files: Parquet (.parquet), CSV with a header row (.csv) or JSON lines (.jsonl, .json: one object per line
    or a list of objects); a file, a glob, a list, or {{split: file or glob}}; local, file:// or s3://:
    {SOURCE_ARGUMENT}.data_files (a single file or glob may also go in {SOURCE_ARGUMENT}.path)"""


class SourceError(ValueError):
    """A source that cannot be read as given; the message names the path, split or column and the fix."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A path that is no dataset in any form a source may take."""


class SplitNotFoundError(SourceError):
    """A split the source does not have."""


class MissingColumnError(SourceError):
    """A column a task reads that the source does not have."""


@dataclass
class DatasetSource:
    """Where a dataset is. `path`: a Hub dataset id, a save_to_disk folder, a folder laid out like a Hub dataset
    repo, or a single data file / glob; `data_files`: data files, as a list (one split, "train") or as
    {source split: file or glob}, relative to `path` when that is set; `name`: the Hub config; `splits`: our split
    (train / val / test) -> the source's split, each one missing keeping its default; `streaming`: read as an
    `IterableDataset` (training reads it block by block, hf_streaming.py);
    `revision`: the Hub revision; `cache_dir`: where `datasets` caches what it prepares."""

    path: str = ""
    name: str | None = None
    data_files: list[str] | dict[str, str] | None = None
    splits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    streaming: bool = False
    revision: str | None = None
    cache_dir: str | None = None

    def describe(self) -> str:
        """The source in a few words, for messages: "save_to_disk folder data/vqa", "data files a.csv, b.csv"."""
        form = _form(self)
        if form == "files":
            files = self.data_files or [self.path]
            listed = ", ".join(f"{k}: {v}" for k, v in files.items()) if isinstance(files, dict) else ", ".join(files)
            return f"data files {listed}" + (f" (in {self.path})" if self.data_files and self.path else "")
        if form == "disk":
            return f"save_to_disk folder {self.path}"
        return f"dataset {self.path}" + (f" (config {self.name})" if self.name else "")


def _key(source: DatasetSource) -> str:
    return json.dumps(asdict(source), sort_keys=True)


def _form(source: DatasetSource) -> str:
    """The form of the source: "files", "disk" (a save_to_disk folder) or "hub" (a Hub id or Hub-layout folder)."""
    if source.data_files:
        return "files"
    if not source.path:
        raise SourceError(
            f"the source names nothing: set {SOURCE_ARGUMENT}.path or {SOURCE_ARGUMENT}.data_files\n{FORMS}"
        )
    if _is_saved_folder(source.path):
        return "disk"
    if contains_wildcards(source.path) or _suffix(source.path) in BUILDERS or _is_file(source.path):
        return "files"
    return "hub"


def _is_file(path: str) -> bool:
    fs, root = fsspec.core.url_to_fs(path)
    return bool(fs.isfile(root))


def _is_saved_folder(path: str) -> bool:
    fs, root = fsspec.core.url_to_fs(path)
    return any(fs.isfile(posixpath.join(root, marker)) for marker in SAVED_MARKERS)


def _suffix(path: str) -> str:
    """The data suffix of a file name, below any compression suffix: "a.csv.gz" -> ".csv"."""
    name = posixpath.basename(path.split("::")[0]).lower()
    for compression in COMPRESSIONS:
        name = name.removesuffix(compression)
    return os.path.splitext(name)[1]


def source_split(source: DatasetSource, split: str) -> str:
    """Our split name (train / val / test) as the source calls it."""
    return source.splits.get(split, DEFAULT_SPLITS.get(split, split))


_SAVED: dict[str, datasets.DatasetDict] = {}
_PREPARED: dict[str, datasets.DatasetDict] = {}
_FILES: dict[str, dict[str, list[str]]] = {}


def split_names(source: DatasetSource) -> list[str]:
    """The splits the source has, as it names them."""
    form = _form(source)
    if source.name and form != "hub":
        raise SourceError(f"name {source.name!r} picks a Hub config; {source.describe()} has none: drop it")
    if form == "disk":
        return list(_load_saved(source))
    if form == "files":
        return list(_data_files(source))
    if _key(source) in _PREPARED:
        return list(_PREPARED[_key(source)])
    builder = _hub_call(source, datasets.load_dataset_builder, cache_dir=source.cache_dir)
    if builder.info.splits:
        return list(builder.info.splits)
    return list(builder.config.data_files or {})


def load_split(source: DatasetSource, split: str) -> datasets.Dataset | datasets.IterableDataset:
    """Our split (train / val / test) of the source: a `Dataset`, or an `IterableDataset` with `streaming`.

    Map-style sources are loaded once per process (all splits, as `datasets` prepares them all anyway)."""
    wanted = source_split(source, split)
    present = split_names(source)
    if wanted not in present:
        raise SplitNotFoundError(_split_message(source, split, wanted, present))
    form = _form(source)
    if form == "disk":
        saved = _load_saved(source)[wanted]
        # One shard per Arrow file, as a folder of Parquet files streams, so that DataLoader workers share them.
        shards = max(1, min(len(saved.cache_files), len(saved)))
        return saved.to_iterable_dataset(num_shards=shards) if source.streaming else saved
    if source.streaming:
        return _load(source, wanted)
    if _key(source) not in _PREPARED:
        _PREPARED[_key(source)] = _load(source, None)
    return _PREPARED[_key(source)][wanted]


def _load(source: DatasetSource, split: str | None) -> Any:
    """`load_dataset` for data files or a Hub id / Hub-layout folder: all splits with `split=None`."""
    if _form(source) == "hub":
        return _hub_call(
            source, datasets.load_dataset, split=split, streaming=source.streaming, cache_dir=source.cache_dir
        )
    files = _data_files(source)
    builder = BUILDERS[_suffix(next(iter(files.values()))[0])]
    try:
        return datasets.load_dataset(
            builder, data_files=files, split=split, streaming=source.streaming, cache_dir=source.cache_dir
        )
    except (DatasetGenerationError, pyarrow.ArrowException) as e:
        cause = e.__cause__ or e  # datasets wraps the reader's own error, which says what is wrong where
        problem = f"not readable as {builder} ({type(cause).__name__}: {str(cause).strip()})"
        raise SourceError(f"{source.describe()}: {problem}; {_EXPECTED[builder]}") from e


def _hub_call(source: DatasetSource, function: Any, **kwargs: Any) -> Any:
    """`function(path, name, revision=...)` of `datasets`, its "not found" errors turned into ones that teach."""
    path = source.path
    try:
        return function(path, source.name, revision=source.revision, **kwargs)
    except (FileNotFoundError, ConnectionError) as e:
        if os.path.isdir(path):
            problem = f"{path} is a folder, but no dataset: no save_to_disk files and no data files in it ({e})"
        elif HUB_ID.match(path):
            problem = f"{path}: no such local file or folder, and the Hub did not give it ({type(e).__name__}: {e})"
        else:
            problem = f"{path}: no such file or folder ({e})"
        raise SourceNotFoundError(f"{problem}\n{FORMS}") from e
    except ValueError as e:
        if "BuilderConfig" not in str(e):
            raise
        raise SourceError(
            f"{source.describe()}: no config {source.name!r} ({e}); set it with {SOURCE_ARGUMENT}.name"
        ) from e


def _load_saved(source: DatasetSource) -> datasets.DatasetDict:
    """A save_to_disk folder as a DatasetDict; a folder of one Dataset is one split, named as it was saved or
    "train"."""
    key = _key(source)
    if key not in _SAVED:
        loaded = datasets.load_from_disk(source.path)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
        _SAVED[key] = loaded
    return _SAVED[key]


def source_stamp(source: DatasetSource) -> list[Any]:
    """What changes when the source's data does, for keys of caches built from it: its settings and, for files
    and save_to_disk folders, each file's size and modification time (a Hub id: its revision, in the settings)."""
    form = _form(source)
    if form == "hub":
        return [asdict(source)]
    files = [f for split in _data_files(source).values() for f in split] if form == "files" else [source.path]
    if form == "disk":
        fs, root = fsspec.core.url_to_fs(source.path)
        files = [f"{source.path}/{posixpath.relpath(f, root)}" for f in sorted(fs.find(root))]
    stamps = []
    for file in files:
        fs, path = fsspec.core.url_to_fs(file)
        info = fs.info(path)
        changed = info.get("mtime") or info.get("LastModified") or info.get("updated")  # local, S3, GCS
        stamps.append([file, info.get("size"), str(changed)])
    return [asdict(source), stamps]


def _data_files(source: DatasetSource) -> dict[str, list[str]]:
    """{split: resolved files}, globs expanded, every split's files checked to be of one kind this reads."""
    key = _key(source)
    if key in _FILES:
        return _FILES[key]
    patterns = sanitize_patterns(source.data_files or source.path)
    base = source.path if source.data_files else ""
    resolved: dict[str, list[str]] = {}
    for split, split_patterns in patterns.items():
        for pattern in split_patterns:
            _check_not_folder(pattern, base)
        try:
            # A glob that matches nothing is no error to `datasets`: it is dropped, so an empty list is checked too.
            resolved[split] = list(DataFilesDict.from_patterns({split: split_patterns}, base or os.getcwd())[split])
            cause = ""
        except FileNotFoundError as e:
            cause = f" ({e})"
        if not resolved.get(split):
            missing = ", ".join(split_patterns)
            raise SourceNotFoundError(f"{missing}: no such file (or nothing matches the glob){cause}\n{FORMS}")
    kinds = {_suffix(f) for files in resolved.values() for f in files}
    for kind in sorted(kinds - set(BUILDERS)):
        wrong = next(f for files in resolved.values() for f in files if _suffix(f) == kind)
        expected = ", ".join(BUILDERS)
        raise SourceError(f"{wrong}: a {kind or 'suffix-less'} file is no data file this reads ({expected})\n{FORMS}")
    if len({BUILDERS[k] for k in kinds}) > 1:
        raise SourceError(f"{source.describe()}: files of different kinds ({', '.join(sorted(kinds))}); give one kind")
    for files in resolved.values():
        _check_head(files[0])
    _FILES[key] = resolved
    return resolved


def _check_not_folder(pattern: str, base: str) -> None:
    path = pattern if not base or "://" in pattern or os.path.isabs(pattern) else posixpath.join(base, pattern)
    if contains_wildcards(path) or not fsspec.core.url_to_fs(path)[0].isdir(path):
        return
    fix = f"give the folder in {SOURCE_ARGUMENT}.path" if _is_saved_folder(path) else "name its files or a glob"
    raise SourceError(f"{path} is a folder, and data_files takes files: {fix}\n{FORMS}")


_EXPECTED = {
    "parquet": f"expected a Parquet file (.parquet), read through {SOURCE_ARGUMENT}.data_files",
    "csv": f"expected CSV: UTF-8 text with a header row naming the columns, read through {SOURCE_ARGUMENT}.data_files",
    "json": (
        "expected JSON lines (one JSON object per line, each a row) or a JSON list of such objects, read through"
        f" {SOURCE_ARGUMENT}.data_files"
    ),
}


def _check_head(path: str) -> None:
    """Refuse a file whose first bytes show it is not of the kind its suffix says, before `datasets` reads it."""
    builder = BUILDERS[_suffix(path)]
    with fsspec.open(path, "rb", compression="infer" if builder != "parquet" else None) as f:
        head = f.read(4) if builder == "parquet" else _first_line(f)
    if builder == "parquet":
        if head != b"PAR1":
            raise SourceError(f"{path}: not a Parquet file (it starts with {head!r}); {_EXPECTED[builder]}")
        return
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False).lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text (byte {e.start}); {_EXPECTED[builder]}") from e
    if builder == "json":
        _check_json_records(path, text, whole_line=len(head) < HEAD_BYTES or head.endswith(b"\n"))


def _first_line(f: Any) -> bytes:
    """The first line of an open file, with its newline, or its first HEAD_BYTES when the line is longer."""
    head = b""
    while b"\n" not in head and len(head) < HEAD_BYTES and (chunk := f.read(1 << 16)):
        head += chunk
    return head.split(b"\n", 1)[0] + b"\n" if b"\n" in head else head[:HEAD_BYTES]


def _check_json_records(path: str, first_line: str, whole_line: bool) -> None:
    """JSON lines or a list of records; a published annotation file is one JSON object, which `datasets` would read
    as one row."""
    if first_line.startswith("["):
        return
    error = ""
    try:
        first = json.loads(first_line) if whole_line else None
    except ValueError as e:
        first, error = None, f"{e}; "
    if isinstance(first, dict):
        keys = [k for k in PUBLISHED_KEYS if isinstance(first.get(k), list)]
        if not keys:
            return
        problem = f"one JSON object holding lists ({', '.join(keys)}): a published annotation file, not rows"
    elif not whole_line:
        problem = f"no line break in the first {HEAD_BYTES >> 20} MiB: one JSON object, not one per line"
    else:
        problem = f"line 1 is no whole JSON object ({error}one JSON value spread over lines?)"
    raise SourceError(
        f"{path}: {problem}; {_EXPECTED['json']}. A published COCO / Karpathy / VQA v2 file is read by the task's"
        " published-format DataModule instead"
    )


def _split_message(source: DatasetSource, split: str, wanted: str, present: list[str]) -> str:
    """The missing split, the splits present, and the `splits` mapping that would read one of them."""
    # Prefer a split no other of ours reads, then any but the training one: never validate on training rows unasked.
    taken = {source_split(source, s) for s in DEFAULT_SPLITS if s != split}
    ranked = sorted(present, key=lambda s: (s in taken, s == source_split(source, "train")))
    choice = ranked[0] if ranked else wanted
    mapping = {s: source_split(source, s) for s in {**DEFAULT_SPLITS, **source.splits}} | {split: choice}
    listed = ", ".join(f"{ours}: {theirs}" for ours, theirs in mapping.items())
    return (
        f"{source.describe()} has no split {wanted!r} (splits: {', '.join(present) or 'none'}); map yours with"
        f" splits: {{{split}: {choice}}} (in full: {{{listed}}}; on the command line"
        f" {SOURCE_ARGUMENT}.splits.{split} {choice})"
    )


def column_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """The columns of a dataset; a stream whose features are unknown (CSV) shows them in its first row."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset), {}))


def require_columns(
    dataset: datasets.Dataset | datasets.IterableDataset,
    wanted: Mapping[str, str | None],
    source_description: str,
    argument: str = COLUMNS_ARGUMENT,
) -> None:
    """Raise `MissingColumnError` unless every column of `wanted` (role -> column name: "image" -> "img"; None or ""
    for a role not read) is in `dataset`, naming the columns present and the argument that sets each."""
    present = column_names(dataset)
    missing = [(role, column) for role, column in wanted.items() if column and column not in present]
    if not missing:
        return
    lines = []
    for role, column in missing:
        close = difflib.get_close_matches(column, present, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"no column {column!r} for the {role} (set it with {argument}.{role}){hint}")
    raise MissingColumnError(f"{source_description}: {'; '.join(lines)}; columns present: {', '.join(present)}")


def undecoded_images(
    dataset: datasets.Dataset | datasets.IterableDataset, columns: list[str]
) -> datasets.Dataset | datasets.IterableDataset:
    """`dataset` with each `datasets.Image` column of `columns` left undecoded ({"bytes", "path"}), so that images are
    read by `image_reference` and decoded where the package decodes them."""
    features = dataset.features or {}
    for column in columns:
        if isinstance(features.get(column), datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def image_reference(value: Any, image_root: str = "") -> tuple[str, bytes | None]:
    """(key, bytes) of a row's image, whatever the column holds: an undecoded `datasets.Image` value ({"bytes",
    "path"}), raw bytes, or a path, relative to `image_root` unless absolute or a URL.

    The key is stable: the path, or a content hash of embedded bytes. Bytes are None for a local file (read it by
    its key, as `load_image` does); a URL (s3://, file://, https://) is read here through fsspec."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return _content_key(value["bytes"]), bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _content_key(value), bytes(value)
    if not isinstance(value, str) or not value:
        raise SourceError(
            f"image value {value!r:.80}: expected a datasets.Image column (cast with Image(decode=False)), bytes, or"
            f" a path relative to image_root"
        )
    if "://" in value:
        path = value
    elif os.path.isabs(value) or not image_root:
        path = os.path.expanduser(value)
    else:
        path = posixpath.join(image_root, value) if "://" in image_root else os.path.join(image_root, value)
    if "://" not in path:
        return path, None
    with fsspec.open(path, "rb") as f:
        return path, f.read()


def _content_key(data: bytes | bytearray | memoryview) -> str:
    return "sha1:" + hashlib.sha1(data).hexdigest()
