"""Pre-training corpora as sharded Parquet files that Hugging Face `datasets` streams, from a local folder or an
object store: `datasets.load_dataset("parquet", data_files=read_shard_index(url).urls(), streaming=True,
split="train")`.

`write_shards` takes records from the readers in `captions` (or `PretrainDataModule.split_records`, whose leak
filters then hold for the shards too) and stores each image's file bytes, unchanged, next to its captions. Every
split gets an index, `{split}.index.json`, naming its shards and the caption count of each row, so a reader knows
the corpus's size without opening a shard. The index holds file names relative to its folder: a folder written
locally can be copied to `s3://...` as it is.

Readers for CC3M-style corpora (`read_caption_tsv`, `read_caption_folder`) give the same `ImageCaptions` records.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pixelbert_pl.data.annotations import AnnotationError, DirectoryIndex, PathLike, absolute_path, drop_missing
from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.processing.images import UnreadableImageError, image_size

logger = logging.getLogger(__name__)

FORMAT, VERSION = "pixelbert-shards", 1
SHARD_COLUMNS = ("image_id", "source", "captions", "image", "image_path")
SHARD_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("source", pa.string()), ("captions", pa.list_(pa.string())),
     ("image", pa.binary()), ("image_path", pa.string())]
)  # fmt: skip
# Streaming reads a row group at a time: small groups bound a reader's memory whatever the shard size.
ROW_GROUP_RECORDS = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INDEX_FORMAT = (
    '{"format": "pixelbert-shards", "version": 1, "split", "shards": [{"file", "records", "caption_counts", '
    '"image_sizes" (optional)}]}'
)


class ShardIndexError(ValueError):
    """A shard index that does not match its format; the message names the file and the field."""


class ShardError(ValueError):
    """A shard that cannot be read, or whose rows are not what its index lists; the message names the shard, the
    index listing it, what was expected and the fix."""


def shard_error(url: str, index_url: str | None, found: str, expected: str) -> ShardError:
    """The `ShardError` for shard `url` (listed in `index_url`): what was `found` there, what was `expected`."""
    listed = f" (listed in {index_url})" if index_url else ""
    # One message argument: a DataLoader worker's error is re-raised in the main process as `type(err)(message)`.
    return ShardError(f"{url}{listed}: {found}; expected {expected}: write the split again with pixelbert-make-shards")


@dataclass(frozen=True)
class ShardInfo:
    file: str  # relative to the index's folder
    records: int
    caption_counts: tuple[int, ...]  # captions of each record, in row order
    # (height, width) of each record's image as `load_image` decodes it, (0, 0) if unreadable; () in indexes
    # written before bucketed batches, which need them (`ShardStream`).
    image_sizes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ShardIndex:
    root: str  # the folder or URL prefix holding the index and its shards
    split: str
    shards: tuple[ShardInfo, ...]

    @property
    def url(self) -> str:
        """The index file's own path or URL."""
        return _index_url(self.root, self.split)

    def urls(self) -> list[str]:
        """Each shard's path or URL, in order: what `datasets.load_dataset("parquet", data_files=...)` takes."""
        if "://" in self.root:
            return [f"{self.root.rstrip('/')}/{shard.file}" for shard in self.shards]
        return [os.path.join(self.root, shard.file) for shard in self.shards]

    @property
    def num_records(self) -> int:
        return sum(shard.records for shard in self.shards)

    @property
    def num_pairs(self) -> int:
        """Image-caption pairs: a pre-training epoch's length."""
        return sum(sum(shard.caption_counts) for shard in self.shards)


def _index_name(split: str) -> str:
    return f"{split}.index.json"


def _index_url(root: str, split: str) -> str:
    return f"{root}/{_index_name(split)}"


def _image_bytes(record: ImageCaptions) -> bytes:
    try:
        return Path(record.image_path).read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{record.image_path}: image file of record {record.image_id!r} not found") from e


def _size(path: str, data: bytes) -> tuple[int, int]:
    try:
        return image_size(path, data=data)
    except UnreadableImageError:
        return (0, 0)  # training substitutes the next readable image, as for files


def _table(records: Sequence[ImageCaptions]) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The rows of `records` and each image's size, read from the bytes' header."""
    images = [_image_bytes(r) for r in records]
    columns = {
        "image_id": [r.image_id for r in records],
        "source": [r.source for r in records],
        "captions": [list(r.captions) for r in records],
        "image": images,
        "image_path": [r.image_path for r in records],
    }
    sizes = [_size(r.image_path, data) for r, data in zip(records, images, strict=True)]
    return pa.Table.from_pydict(columns, schema=SHARD_SCHEMA), sizes


def write_shards(
    records: Iterable[ImageCaptions],
    out_dir: PathLike,
    split: str = "train",
    records_per_shard: int = 1000,
    seed: int = 0,
) -> ShardIndex:
    """Write `records`, shuffled once with `seed` (so every shard mixes corpora), as
    `out_dir/{split}-{i:05d}-of-{n:05d}.parquet` of `records_per_shard` records each (the last may hold fewer) and
    `out_dir/{split}.index.json`, written last: a folder with an index is complete. Only one row group's image
    bytes are in memory at a time. Shards of an earlier run of the same split are removed first."""
    if records_per_shard < 1:
        raise ValueError(f"records_per_shard is {records_per_shard}; it must be at least 1")
    out = absolute_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # An earlier run with another shard count leaves files a `*.parquet` glob would pick up too; its index goes
    # first, so a run that fails below leaves no index pointing at missing shards.
    (out / _index_name(split)).unlink(missing_ok=True)
    stale = re.compile(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.parquet")
    for old in out.iterdir():
        if stale.fullmatch(old.name):
            old.unlink()
    rows = list(records)  # the records only (paths and captions); image bytes are read per row group below
    random.Random(seed).shuffle(rows)
    count = -(-len(rows) // records_per_shard)
    shards: list[ShardInfo] = []
    for i in range(count):
        chunk = rows[i * records_per_shard : (i + 1) * records_per_shard]
        name = f"{split}-{i:05d}-of-{count:05d}.parquet"
        sizes: list[tuple[int, int]] = []
        with pq.ParquetWriter(out / name, SHARD_SCHEMA) as writer:
            for start in range(0, len(chunk), ROW_GROUP_RECORDS):
                table, group_sizes = _table(chunk[start : start + ROW_GROUP_RECORDS])
                writer.write_table(table)
                sizes += group_sizes
        shards.append(ShardInfo(name, len(chunk), tuple(len(r.captions) for r in chunk), tuple(sizes)))
    entries = [
        {"file": s.file, "records": s.records, "caption_counts": list(s.caption_counts),
         "image_sizes": [list(size) for size in s.image_sizes]}
        for s in shards
    ]  # fmt: skip
    index = {
        "format": FORMAT, "version": VERSION, "split": split, "shards": entries,
        "sources": dict(Counter(r.source for r in rows)),
    }  # fmt: skip
    partial = out / (_index_name(split) + ".partial")
    partial.write_text(json.dumps(index), encoding="utf-8")
    partial.replace(out / _index_name(split))
    return ShardIndex(str(out), split, tuple(shards))


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _check(url: str, value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON `true` is no count
        raise ShardIndexError(f"{url}: {where} is {value!r}, expected {_KINDS[kind]} (format: {INDEX_FORMAT})")
    return value


def read_shard_index(location: str, split: str = "train") -> ShardIndex:
    """The index `write_shards` wrote into `location` (a folder, `file://...` or an object-store URL, read through
    fsspec), checked against its format."""
    root = location.rstrip("/") if "://" in location else location
    url = _index_url(root, split)
    try:
        with fsspec.open(url, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{url}: no shard index for split {split!r} (written by pixelbert-make-shards)") from e
    except json.JSONDecodeError as e:
        raise ShardIndexError(f"{url}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    _check(url, data, dict, "the top level")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ShardIndexError(
            f"{url}: format/version is {data.get('format')!r}/{data.get('version')!r}, expected {FORMAT!r}/{VERSION}"
        )
    if data.get("split") != split:
        raise ShardIndexError(f"{url}: split is {data.get('split')!r}, expected {split!r}")
    shards = []
    for i, entry in enumerate(_check(url, data.get("shards"), list, "shards")):
        where = f"shards[{i}]"
        _check(url, entry, dict, where)
        file = _check(url, entry.get("file"), str, f"{where}.file")
        records = _check(url, entry.get("records"), int, f"{where}.records")
        counts = _check(url, entry.get("caption_counts"), list, f"{where}.caption_counts")
        for j, n in enumerate(counts):
            _check(url, n, int, f"{where}.caption_counts[{j}]")
        if records != len(counts):
            raise ShardIndexError(
                f"{url}: {where}.records is {records}, but caption_counts has {len(counts)} entries (expected equal)"
            )
        sizes = _check(url, entry.get("image_sizes", []), list, f"{where}.image_sizes")
        for j, size in enumerate(sizes):
            if not (isinstance(size, list) and len(size) == 2 and all(type(n) is int and n >= 0 for n in size)):
                raise ShardIndexError(f"{url}: {where}.image_sizes[{j}] is {size!r}, expected [height, width]")
        if sizes and len(sizes) != records:
            raise ShardIndexError(
                f"{url}: {where}.records is {records}, but image_sizes has {len(sizes)} entries (expected equal)"
            )
        shards.append(ShardInfo(file, records, tuple(counts), tuple((h, w) for h, w in sizes)))
    return ShardIndex(root, split, tuple(shards))


def _mismatches(
    info: ShardInfo, where: str, records: Sequence[ImageCaptions], images: Mapping[str, bytes] | None
) -> Iterator[str]:
    if len(records) != info.records:
        yield f"{len(records)} rows, but the index lists {where}.records = {info.records}"
        return
    for row, (record, count) in enumerate(zip(records, info.caption_counts, strict=True)):
        if len(record.captions) != count:
            yield (
                f"row {row} has {len(record.captions)} captions, but the index lists {where}.caption_counts[{row}] "
                f"= {count}"
            )
    if images is None or not info.image_sizes:  # sizes are checked only where the caller has read the images
        return
    for row, (record, size) in enumerate(zip(records, info.image_sizes, strict=True)):
        if (found := _size(record.image_path, images[record.image_path])) != size:
            yield (
                f"row {row}'s image ({record.image_path}) is {list(found)} (height, width), but the index lists "
                f"{where}.image_sizes[{row}] = {list(size)}"
            )


def check_shard(
    index: ShardIndex, shard: int, records: Sequence[ImageCaptions], images: Mapping[str, bytes] | None = None
) -> None:
    """Raise `ShardError`, naming the shard and `index`, where shard `shard`'s rows (`records`, as read) are not what
    the index lists: their number, each row's caption count and, given the image bytes `images` (by `image_path`)
    and an index that records image sizes, each image's size."""
    found = next(_mismatches(index.shards[shard], f"shards[{shard}]", records, images), None)
    if found is not None:
        raise shard_error(index.urls()[shard], index.url, found, "the rows the index lists (one run writes both)")


def _tsv_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {e.start})") from e
    # Not splitlines(): captions may hold U+2028 and other separators it also splits at.
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield n, line.rstrip("\r")


def read_caption_tsv(
    path: PathLike, image_root: PathLike, source: str = "cc3m", *, allow_missing: bool = False
) -> list[ImageCaptions]:
    """Records from a CC3M-style TSV of `caption<TAB>image` lines (an optional first line `caption<TAB>image` is a
    header), the image relative to `image_root` or absolute. Lines of one image make one record with several
    captions, in file order; id "{source}:{image as first written}". Missing images raise FileNotFoundError
    unless `allow_missing` (then they are skipped, with a warning)."""
    path, root = absolute_path(path), absolute_path(image_root)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    records: dict[Path, ImageCaptions] = {}
    for n, line in _tsv_lines(path):
        fields = line.split("\t")
        if n == 1 and [f.strip().lower() for f in fields] == ["caption", "image"]:
            continue
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise AnnotationError(
                f"{path}: line {n} is {line[:80]!r}, expected a non-empty caption<TAB>image (2 fields, found "
                f"{len(fields)})"
            )
        caption, image = fields[0].strip(), fields[1].strip()
        file = absolute_path(root / image)  # an absolute `image` replaces root
        if file in records:
            records[file].captions.append(caption)
        else:
            records[file] = ImageCaptions(f"{source}:{image}", str(file), [caption], source)
    index = DirectoryIndex()
    rows = list(records.values())
    missing = [index.first_missing(r.image_path) for r in rows]
    return drop_missing(rows, missing, path, [root], allow_missing)


def read_caption_folder(folder: PathLike, source: str = "cc3m") -> list[ImageCaptions]:
    """Records from an img2dataset-style folder: every .jpg/.jpeg/.png (searched recursively) with a caption file
    of the same stem, `.txt` (each non-blank line one caption), id "{source}:{path relative to folder}". Images
    without a caption file are skipped, with a warning counting them."""
    root = absolute_path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    records, uncaptioned = [], 0
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        text_file = image.with_suffix(".txt")
        if not text_file.is_file():
            uncaptioned += 1
            continue
        captions = [line.strip() for _, line in _tsv_lines(text_file)]
        if not captions:
            raise AnnotationError(f"{text_file}: empty caption file (expected a caption for {image.name})")
        records.append(ImageCaptions(f"{source}:{image.relative_to(root).as_posix()}", str(image), captions, source))
    if uncaptioned:
        logger.warning("%s: %d image(s) without a .txt caption file skipped", root, uncaptioned)
    if not records:
        raise FileNotFoundError(f"{root}: no .jpg/.png images with a same-stem .txt caption file")
    return records
