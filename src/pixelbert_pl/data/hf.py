"""A user's own data through Hugging Face `datasets`, for every task: a source (`sources.py`: a Hub id, a save_to_disk
folder, Parquet / CSV / JSON lines) is read once per split, its rows become the records the task's published-format
reader gives (`VQARecord`, `ImageCaptions`, ...), and from there the task's own dataset, sampler and collate serve
it. Nothing is converted or copied: images the data holds are read from its Arrow table when a sample needs them
(`RowImages`), image paths are files under `image_root`.

Each task's DataModule (`HFVQADataModule` in vqa.py, ...) names the columns it reads in a dataclass whose defaults
read the task's common Hub schema as published; `HFSource` is what they share. A streamed source (`streaming:
true`) is read block by block for training (hf_streaming.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import fsspec
import numpy as np
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.sources import (
    COLUMNS_ARGUMENT,
    DatasetSource,
    SourceError,
    image_reference,
    load_split,
    require_columns,
    source_split,
    undecoded_images,
)
from pixelbert_pl.processing.images import UnreadableImageError, image_size

# What `split_column` picks for each of our splits where the source keeps every split in one table with a column
# saying which (Flickr30K and COCO's Karpathy splits on the Hub: "train", "restval", "val", "test").
KARPATHY_SPLIT_VALUES = {"train": ["train", "restval"], "val": ["val"], "test": ["test"]}


class RowImages(Mapping[str, bytes]):
    """The image bytes an image column holds, by image key, read from the Arrow table row by row when a sample needs
    them (the table is memory-mapped, so DataLoader workers share its pages); a URL key is read through fsspec.

    Keys of local files are not in it: `RecordDataset.decode` reads those as files."""

    def __init__(self, table: datasets.Dataset, column: str, rows: dict[str, int]) -> None:
        self.table, self.column, self.rows = table.select_columns([column]), column, rows

    def __getitem__(self, key: str) -> bytes:
        row = self.rows.get(key)
        if row is None:
            if "://" not in key:
                raise KeyError(key)
            with fsspec.open(key, "rb") as f:
                return bytes(f.read())
        value = self.table[row][self.column]
        return bytes(value["bytes"] if isinstance(value, dict) else value)

    def __contains__(self, key: object) -> bool:
        return key in self.rows or (isinstance(key, str) and "://" in key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


# Columns whose integers give each row's image size (COCO's annotations and many Hub datasets have them).
SIZE_COLUMNS = ("height", "width")
INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


class RowSizes(Mapping[str, tuple[int, int]]):
    """(height, width) of each image key of a table, what the bucketed samplers need before an epoch: from its
    `height` / `width` columns where it has them (the size the image is stored at, EXIF aside), else read once
    from the image headers by `Dataset.map`, whose result `datasets` caches by the table's fingerprint, so a
    later fit of the same source reads no header. (0, 0): an image that cannot be read (the fallback bucket).

    Read on first use: a run without fixed padded shapes never reads them."""

    def __init__(self, table: datasets.Dataset, column: str, rows: dict[str, int], root: str, cache_dir: str | None):
        self.table, self.column, self.rows, self.root, self.cache_dir = table, column, rows, root, cache_dir

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """(height, width) per key, in `rows` order."""
        table = self.table.select(list(self.rows.values()))  # one row per image: VQA has ~5 questions an image
        features = table.features
        if all(isinstance(features.get(c), datasets.Value) and features[c].dtype in INTEGERS for c in SIZE_COLUMNS):
            return np.stack([np.asarray(table[c], dtype=np.int64) for c in SIZE_COLUMNS], axis=1)
        table = table.select_columns([self.column])
        if not table.cache_files:  # in memory (a streamed block, a table built in Python): nothing to cache
            sizes = _header_sizes(table[:], self.column, self.root)
            return np.stack([np.asarray(sizes[c], dtype=np.int64) for c in SIZE_COLUMNS], axis=1).reshape(-1, 2)
        # A table read from files: keep the sizes beside datasets' own cache.
        folder = self.cache_dir or datasets.config.HF_DATASETS_CACHE
        name = Hasher.hash([table._fingerprint, self.column, self.root])
        cache = os.path.join(os.fspath(folder), "pixelbert_image_sizes", f"{name}.arrow")
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        read = table.map(
            _header_sizes,
            batched=True,
            fn_kwargs={"column": self.column, "root": self.root},
            remove_columns=[self.column],
            cache_file_name=cache,
            desc="Reading image sizes",
        )
        return np.stack([np.asarray(read[c], dtype=np.int64) for c in SIZE_COLUMNS], axis=1)

    def __getitem__(self, key: str) -> tuple[int, int]:
        return self._index[key]

    @functools.cached_property
    def _index(self) -> dict[str, tuple[int, int]]:
        return {key: (int(h), int(w)) for key, (h, w) in zip(self.rows, self.sizes, strict=True)}

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _header_sizes(batch: dict[str, list[Any]], column: str, root: str) -> dict[str, list[int]]:
    """`Dataset.map`'s function for `RowSizes`: each row's image (height, width) from its header."""
    sizes = []
    for value in batch[column]:
        try:
            sizes.append(image_size(*image_reference(value, root)))
        except (UnreadableImageError, SourceError, OSError):
            sizes.append((0, 0))
    return {"height": [h for h, _ in sizes], "width": [w for _, w in sizes]}


def image_keys(
    table: datasets.Dataset,
    column: str,
    image_root: str,
    where: str,
    shared_by: Sequence[Any] | None = None,
    source_rows: Sequence[int] | None = None,
    cache_dir: str | None = None,
) -> tuple[list[str], RowImages, RowSizes]:
    """Each row's image key, the bytes of those the table holds, and the images' sizes (`RowSizes`).

    A key is the image's file (a path under `image_root`, or a URL) or, for bytes the table holds, "<where>[row]" or
    "<where> image <id>" where `shared_by` gives each row's image id: rows of one image share a key, so their
    collate gives it one row of pixels and the CNN runs once for all of them (VQA's questions about one image).
    `source_rows` numbers the rows as the source does, where `table` is a selection of its rows."""
    table = undecoded_images(table, [column])  # type: ignore[assignment]  # map-style in, map-style out
    feature = table.features[column]
    values = table.select_columns([column]).with_format("arrow")[column]
    if isinstance(feature, datasets.Image):
        paths = pc.struct_field(values, "path").to_pylist()
        held = pc.is_valid(pc.struct_field(values, "bytes")).to_pylist()
    elif isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"):
        paths, held = [None] * len(table), [True] * len(table)
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        paths, held = values.to_pylist(), [False] * len(table)
    else:
        raise SourceError(
            f"{where}: column {column!r} holds {feature}; expected images (a datasets.Image column), their file bytes,"
            f" or their paths relative to image_root (set the column with {COLUMNS_ARGUMENT}.image)"
        )
    keys: list[str] = []
    rows: dict[str, int] = {}
    first: dict[str, int] = {}  # each image's first row, bytes or file
    for row, (path, has_bytes) in enumerate(zip(paths, held, strict=True)):
        if has_bytes:
            number = row if source_rows is None else source_rows[row]
            key = f"{where} image {shared_by[row]}" if shared_by is not None else f"{where}[{number}].{column}"
            rows.setdefault(key, row)
        elif path:
            key = path if "://" in path or os.path.isabs(path) else os.path.join(image_root, path)
        else:
            raise SourceError(f"{where}[{row}].{column}: no image (neither bytes nor a path)")
        keys.append(key)
        first.setdefault(key, row)
    return keys, RowImages(table, column, rows), RowSizes(table, column, first, image_root, cache_dir)


def list_value(value: Any, field: str = "answer") -> list[str]:
    """A text or answer cell as a list of strings: a string, a list of strings, or a list of {field: ...} records
    (VQA v2's answers on the Hub: [{answer, answer_confidence, answer_id}])."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v[field]) if isinstance(v, dict) else str(v) for v in value]


@dataclass
class HFSource:
    """One source read per split, for the task DataModules: the table of a split (with `split_column`, the rows of
    the source's split whose column names one of ours), where it is in messages, and the folder image paths are
    relative to."""

    source: DatasetSource
    image_root: str | None = None
    split_column: str | None = None
    split_values: Mapping[str, Sequence[str]] | None = None
    # Per split read through `split_column`: the source row of each of its rows, so that messages name the row.
    source_rows: dict[str, list[int]] = field(default_factory=dict)

    def table(self, split: str) -> datasets.Dataset:
        table = load_split(self.source, split)
        if not isinstance(table, datasets.Dataset):  # the DataModules read a stream block by block (hf_streaming.py)
            raise SourceError(f"{self.source.describe()}: streaming: true gives a stream, not a map-style table")
        if self.split_column is None:
            return table
        rows = self.kept_rows(table, split)
        if not rows:
            raise SourceError(f"{self.where(split)}: no row whose {self.split_column!r} is one of {self.wanted(split)}")
        self.source_rows[split] = rows
        return table.select(rows)

    def wanted(self, split: str) -> list[str]:
        """The values of `split_column` whose rows are `split`'s."""
        return sorted((self.split_values or KARPATHY_SPLIT_VALUES).get(split, [split]))

    def kept_rows(self, table: datasets.Dataset, split: str, where: str | None = None) -> list[int]:
        """The rows of `table` (a split, or a streamed block of it) that are `split`'s by `split_column`."""
        assert self.split_column is not None
        where = self.where(split) if where is None else where
        require_columns(table, {"split": self.split_column}, where, "--data.init_args.split_column")
        wanted = set(self.wanted(split))
        return [row for row, value in enumerate(table[self.split_column]) if value in wanted]

    def where(self, split: str) -> str:
        return f"{self.source.describe()} split {source_split(self.source, split)!r}"

    def root(self) -> str:
        """The folder image paths are relative to: `image_root`, else the data files' (or save_to_disk) folder; for a
        Hub id, the working directory (its first part is no folder here)."""
        if self.image_root is not None:
            return self.image_root
        files = self.source.data_files
        first = next(iter(files.values())) if isinstance(files, dict) else (files or [self.source.path])[0]
        base = self.source.path if files and self.source.path else ""
        path = os.path.join(base, first) if base and "://" not in first else first
        if os.path.isdir(path):
            return path
        folder = os.path.dirname(path)
        return folder if "://" in path or os.path.isdir(folder or ".") else ""

    def images(
        self,
        table: datasets.Dataset,
        column: str,
        split: str,
        shared_by: Sequence[Any] | None = None,
        where: str | None = None,
    ) -> tuple[list[str], RowImages, RowSizes]:
        """`image_keys` of a split's table (`where`: of a streamed block of it, whose rows it numbers)."""
        where = self.where(split) if where is None else where
        rows = self.source_rows.get(split) if where == self.where(split) else None
        return image_keys(table, column, self.root(), where, shared_by, rows, self.source.cache_dir)


def caption_records(keys: Sequence[str], captions: Sequence[Any], where: str) -> list[ImageCaptions]:
    """One record per image key, in first-row order, with the captions of all its rows (a cell: one caption or a
    list); an image left without a non-empty caption is an error naming its first row."""
    records: dict[str, ImageCaptions] = {}
    first_row: dict[str, int] = {}
    for row, (key, cell) in enumerate(zip(keys, captions, strict=True)):
        record = records.get(key)
        if record is None:
            record = records[key] = ImageCaptions(key, key, [], "hf")
            first_row[key] = row
        record.captions += [text for text in (t.strip() for t in list_value(cell)) if text]
    if empty := [key for key, record in records.items() if not record.captions]:
        raise SourceError(f"{where}[{first_row[empty[0]]}]: image {empty[0]} has no caption ({len(empty)} such)")
    return list(records.values())


@dataclass
class CaptionColumns:
    """The columns of image-caption data; the defaults read Flickr30K and COCO's Karpathy splits as on the Hub
    (`image`, `caption`: a list of 5, `img_id`, `split`, ...). A CSV of (image path, caption) rows names its
    columns here; rows of one image are one image with all their captions."""

    image: str = "image"  # a datasets.Image column, file bytes, or paths relative to image_root
    caption: str = "caption"  # one caption, or a list of them
    image_id: str | None = None  # rows with one id are one image (default: rows with one image file or bytes)


class HFCaptionData:
    """The image-caption DataModules' `datasets` source (retrieval's and pre-training's): mixed in before their
    DataModule base, which `**kwargs` reaches.

    Args:
        source: where the data is and which of its splits are train / val / test (`DatasetSource`).
        columns: the columns read (`CaptionColumns`; the defaults read Flickr30K / COCO Karpathy as on the Hub).
        image_root: the folder image paths are relative to (default: the data files' folder).
        split_column: a column saying each row's Karpathy split (the Hub's Flickr30K: "split"); our train split is
            then its "train" and "restval" rows, val its "val" rows, test its "test" rows, all read from the source
            split that `source.splits` names.
    """

    image_bytes: dict[str, Mapping[str, bytes]]  # the DataModule base's
    image_sizes: dict[str, Mapping[str, tuple[int, int]]]  # the DataModule base's

    def __init__(
        self,
        source: DatasetSource,
        columns: CaptionColumns | None = None,
        image_root: str | None = None,
        split_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hf = HFSource(source, image_root, split_column)
        self.columns = columns or CaptionColumns()

    def caption_records(self, split: str) -> list[ImageCaptions]:
        """The split's image-caption records (`caption_records`), keeping the image bytes the source holds."""
        table, where = self.hf.table(split), self.hf.where(split)
        records, self.image_bytes[split], self.image_sizes[split] = self.read_rows(table, split, where)
        return records

    def read_rows(
        self, table: datasets.Dataset, split: str, where: str
    ) -> tuple[list[ImageCaptions], RowImages, RowSizes]:
        """The image-caption records of `table`'s rows (`where` names them in messages), their images' bytes and
        sizes."""
        c = self.columns
        require_columns(table, {"image": c.image, "caption": c.caption, "image_id": c.image_id}, where)
        image_ids = table[c.image_id] if c.image_id else None
        keys, held, sizes = self.hf.images(table, c.image, split, image_ids, where)
        return caption_records(keys, table[c.caption], where), held, sizes
