"""NLVR2 (docs/paper_facts.md §3.2, §7.5): one sentence about a pair of images, True or False.

The "Pair" setting: each example becomes two (image, sentence) rows through Pixel-BERT, left then right, and the
task concatenates their [CLS] outputs. Shapes: b examples, 2b images, t tokens.

Image files are found under `image_root` as the released archives unpack:

    train/<directory>/train-<set>-<pair>-img0.png     train examples carry a `directory` field (0-99)
    dev/dev-<set>-<pair>-img0.png                      the other splits are flat
    test1/test1-<set>-<pair>-img1.png

The folder is the identifier's split prefix and the stem is the identifier minus its sentence number; `left_url`
and `right_url` are web addresses in the release, so they are not used. ViLT's DATA.md keeps train/ inside
images/ and dev/, test1/ beside it: read train with image_root=<root>/images and the others with <root>.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from pixelbert_pl.data.annotations import (
    AnnotationFile,
    DirectoryIndex,
    PathLike,
    UniqueField,
    absolute_path,
    drop_missing,
)
from pixelbert_pl.data.base import SplitDataModule
from pixelbert_pl.data.hf import HFSource
from pixelbert_pl.data.hf_streaming import StreamedTask
from pixelbert_pl.data.records import ArrowRecords, RecordDataset, split_key
from pixelbert_pl.data.sources import DatasetSource, SourceError, require_columns
from pixelbert_pl.processing.batches import collate_nlvr2
from pixelbert_pl.processing.items import NLVR2Item

NLVR2_FORMAT = (
    'NLVR2 JSON lines: {"identifier": "<split>-<set>-<pair>-<sentence>", "sentence", "label": "True"|"False", '
    '"directory" (train only), ...} per line'
)
_LABELS = {"true": True, "false": False}


@dataclass
class NLVR2Record:
    """One example; `label` is None when the file has none (a hidden test split); paths are absolute."""

    identifier: str
    sentence: str
    label: bool | None
    left_path: str
    right_path: str


def read_nlvr2(
    jsonl_file: PathLike, image_root: PathLike, *, labelled: bool | None = None, allow_missing: bool = False
) -> list[NLVR2Record]:
    """The examples of `train.json` / `dev.json` / `test1.json`, in file order, with their two image paths.

    `labelled`: True (train, dev) makes a line without `label` an error, False (a hidden test split) a line with
    one, None accepts either; a file that mixes labelled and unlabelled lines is always an error, and so is a
    repeated `identifier`. A missing image file raises FileNotFoundError; `allow_missing` skips those examples
    instead (with a warning), which breaks the consistency groups they belong to."""
    ann = AnnotationFile(jsonl_file, NLVR2_FORMAT)
    root = absolute_path(image_root)
    lines = ann.load_lines("object")
    records = [_record(ann, number, entry, root) for number, entry in lines]
    identifiers = UniqueField(ann, "identifier", "lines {} and {}")
    for (number, _), record in zip(lines, records, strict=True):
        identifiers.add(record.identifier, number)
    _check_labels(ann, [number for number, _ in lines], records, labelled)
    index = DirectoryIndex()
    missing = [index.absent(r.left_path, r.right_path) for r in records]
    searched = {Path(r.left_path).parent for r in records}
    images = [(r.left_path, r.right_path) for r in records]  # examples of one set share their images
    return drop_missing(records, missing, ann.path, searched, allow_missing, images=images, noun="example")


def _check_labels(ann: AnnotationFile, numbers: list[int], records: list[NLVR2Record], labelled: bool | None) -> None:
    """All of `records` (from lines `numbers`) labelled or none, as `labelled` demands (None: either)."""
    with_label = [n for n, r in zip(numbers, records, strict=True) if r.label is not None]
    without = [n for n, r in zip(numbers, records, strict=True) if r.label is None]
    if labelled and without:
        raise ann.error(
            f"line {without[0]}", f"has no field 'label' ({len(without)} of {len(records)} lines have none); every "
            "train and dev example needs one, only a hidden test split may go without"
        )  # fmt: skip
    if labelled is False and with_label:
        raise ann.error(
            f"line {with_label[0]}", "has a 'label', but this split was read as unlabelled (labelled=False)"
        )
    if with_label and without:
        raise ann.error(
            f"line {without[0]}", f"has no field 'label', but line {with_label[0]} has one ({len(without)} of "
            f"{len(records)} lines have none); a file is either all labelled or, as a hidden test split, not at all"
        )  # fmt: skip


def _record(ann: AnnotationFile, number: int, entry: dict[str, Any], root: Path) -> NLVR2Record:
    where = f"line {number}"
    identifier = ann.field(entry, "identifier", "str", where)
    parts = identifier.split("-")
    if len(parts) != 4 or not all(parts):
        raise ann.error(f"{where}.identifier", f"is {identifier!r}, not <split>-<set>-<pair>-<sentence>")
    label_text = ann.field(entry, "label", "str", where, default=None)
    if label_text is not None and label_text.lower() not in _LABELS:
        raise ann.error(f"{where}.label", f"is {label_text!r}, should be 'True' or 'False'")
    directory = ann.field(entry, "directory", "int or str", where, default=None)
    folder = root / parts[0] if directory is None else root / parts[0] / str(directory)
    stem = "-".join(parts[:3])  # the image id: the identifier minus its sentence number
    return NLVR2Record(
        identifier=identifier,
        sentence=ann.field(entry, "sentence", "str", where),
        label=None if label_text is None else _LABELS[label_text.lower()],
        left_path=str(folder / f"{stem}-img0.png"),
        right_path=str(folder / f"{stem}-img1.png"),
    )


class NLVR2Dataset(RecordDataset[NLVR2Item]):
    """Item = one `NLVR2Record`: both images (decoded by content, since many `.png` files are JPEGs), the
    sentence's token ids, the label as 1 / 0 / -1 (unlabelled) and the identifier."""

    def image_paths(self, record: NLVR2Record) -> list[str]:
        return [record.left_path, record.right_path]

    def load(self, key: tuple[int, int] | int) -> NLVR2Item:
        record = self.records[split_key(key)[1]]
        return {
            "left": self.image(record.left_path),
            "right": self.image(record.right_path),
            "input_ids": self.token_ids([record.sentence])[0],
            "label": -1 if record.label is None else int(record.label),
            "identifier": record.identifier,
        }


class NLVR2Splits(SplitDataModule):
    """What the NLVR2 DataModules share, whatever they read: the "Pair" setting (docs/paper_facts.md §3.2), each
    example's two images through the transformer with its sentence. A subclass reads a split's `NLVR2Record`s."""

    def dataset(self, split: str, records: Sequence[Any] | None = None) -> NLVR2Dataset:
        records = self.records(split) if records is None else records
        return NLVR2Dataset(records, self.transform, self.tokenizer, self.processing.max_text_length)

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        return functools.partial(collate_nlvr2, pad_token_id=self.tokenizer.pad_token_id)


class NLVR2DataModule(NLVR2Splits):
    """NLVR2 in the "Pair" setting (docs/paper_facts.md §3.2): train, dev as "val", and test1 (or test2) as "test".

    Args:
        train_file: JSON-lines file (train.json).
        val_file: as train_file, for validation (dev.json).
        image_root: the folder holding train/<directory>/, and dev/ and test1/ unless eval_image_root is given
            (`read_nlvr2`).
        test_file: as train_file, for testing (test1.json).
        eval_image_root: the folder holding dev/ and test1/ (ViLT's layout keeps them beside images/, which holds
            train/).
        allow_missing: skip examples whose image file is missing (with a warning counting them) instead of failing;
            this breaks their consistency groups.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`).

    Every line of train_file and val_file must have a label; test_file may have none (a hidden test split).
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        image_root: str,
        test_file: str | None = None,
        eval_image_root: str | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.image_root, self.eval_image_root, self.allow_missing = image_root, eval_image_root, allow_missing

    def read_split(self, split: str) -> Sequence[Any]:
        path = self.files[split]
        if path is None:
            raise ValueError("NLVR2DataModule: no test_file given, so there is nothing to test or predict")
        root = self.image_root if split == "train" else self.eval_image_root or self.image_root
        # Only a hidden test split may be unlabelled: an unlabelled training or dev example would count as neither.
        labelled = True if split in ("train", "val") else None
        return ArrowRecords.from_records(read_nlvr2(path, root, labelled=labelled, allow_missing=self.allow_missing))


@dataclass
class PairColumns:
    """The columns of a statement about an image pair (NLVR2-style): its two images, the sentence, the label (a
    bool, "True" / "False", or 1 / 0) and an id (default: the row number)."""

    left: str = "left_image"  # datasets.Image columns, file bytes, or paths relative to image_root
    right: str = "right_image"
    sentence: str = "sentence"
    label: str | None = "label"  # None or absent in a test split: unlabelled
    identifier: str | None = "identifier"


class HFNLVR2DataModule(StreamedTask, NLVR2Splits):
    """NLVR2-style pairs on any `datasets` source (hf.py), read by `columns` with no conversion step.

    Args:
        source: where the data is and which of its splits are train / val / test (`DatasetSource`).
        columns: the columns read (`PairColumns`).
        image_root: the folder image paths are relative to (default: the data files' folder).
        **kwargs: `StreamOptions`' (batches_per_epoch, block_size: a streamed source) and the settings every
            DataModule shares (`PixelBertDataModule`).
    """

    def __init__(
        self, source: DatasetSource, columns: PairColumns | None = None, image_root: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.hf = HFSource(source, image_root)
        self.columns = columns or PairColumns()

    def read_rows(
        self, table: datasets.Dataset, split: str, where: str
    ) -> tuple[list[Any], Mapping[str, bytes], Mapping[str, tuple[int, int]]]:
        c = self.columns
        labelled = bool(c.label) and (split != "test" or c.label in table.column_names)
        wanted = {"left": c.left, "right": c.right, "sentence": c.sentence, "identifier": c.identifier}
        require_columns(table, {**wanted, "label": c.label if labelled else None}, where)
        left, left_bytes, left_sizes = self.hf.images(table, c.left, split, where=where)
        right, right_bytes, right_sizes = self.hf.images(table, c.right, split, where=where)
        ids = table[c.identifier] if c.identifier else [f"{split}-{row}" for row in range(len(table))]
        labels = table[c.label] if labelled and c.label else [None] * len(table)
        records = [
            NLVR2Record(str(i), str(text), pair_label(label, f"{where}[{row}].{c.label}"), l_path, r_path)
            for row, (i, text, label, l_path, r_path) in enumerate(
                zip(ids, table[c.sentence], labels, left, right, strict=True)
            )
        ]
        # ChainMaps: merging into a dict would read every image's bytes now.
        return records, ChainMap(left_bytes, right_bytes), ChainMap(left_sizes, right_sizes)  # type: ignore[arg-type]


def pair_label(value: Any, where: str) -> bool | None:
    """A label cell as True / False (None: unlabelled): a bool, "True" / "False" in any case, or 1 / 0."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _LABELS:
        return _LABELS[value.lower()]
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise SourceError(f"{where}: label {value!r}; expected True / False, 'True' / 'False' or 1 / 0")
