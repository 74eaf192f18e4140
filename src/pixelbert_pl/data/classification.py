"""(image, text) -> class benchmarks from a JSON-lines file, so that a new one (visual entailment, ...) needs no data
code: only its files, its field names and its class names (`ImageTextClassificationDataModule`).

The defaults read SNLI-VE (Xie et al. 2019) as released, `snli_ve_{train,dev,test}.jsonl` with one example a line:

    {"Flikr30kID": "2248275918.jpg", "gold_label": "entailment", "pairID": "2248275918.jpg#4r1e",
     "sentence1": "<the SNLI premise caption>", "sentence2": "<the hypothesis>", "annotator_labels": [...], ...}

The image field is spelt "Flikr30kID" in the release and holds the file name, ".jpg" included, under the
flickr30k-images/ folder (`image_root`). Another benchmark sets `image_pattern` (the file under `image_root`, filled
with the row's own fields by name: "{image_id}.jpg", "{split}/{image_id:012d}.png"), `text_field`, `label_field`
and `id_field`.

Shapes: n distinct images, b rows (texts), t tokens.
"""

from __future__ import annotations

import functools
import string
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from torch.utils.data import Dataset

from pixelbert_pl.data.annotations import AnnotationFile, DirectoryIndex, PathLike, absolute_path, drop_missing
from pixelbert_pl.data.base import SplitDataModule
from pixelbert_pl.data.hf import HFSource
from pixelbert_pl.data.hf_streaming import StreamedTask
from pixelbert_pl.data.records import ArrowRecords, RecordDataset, split_key
from pixelbert_pl.data.sources import DatasetSource, SourceError, require_columns
from pixelbert_pl.processing.batches import UNLABELLED, check_labels, collate_image_text
from pixelbert_pl.processing.items import ImageTextClassificationItem

SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
SNLI_VE_IMAGE_PATTERN = "{Flikr30kID}"


@dataclass
class ImageTextRecord:
    """One example; `image_path` is absolute, `label` the class index (UNLABELLED and `label_name` "" when the row
    has no label, as in a hidden test split)."""

    example_id: str
    image_path: str
    text: str
    label: int
    label_name: str
    second_image_path: str | None = None  # the second image of a two-image example (`second_image_pattern`)


def _pattern_fields(image_pattern: str) -> list[str]:
    """The row fields `image_pattern` is filled with; a pattern naming none would give every row one image."""
    fields = [name for _, name, _, _ in string.Formatter().parse(image_pattern) if name is not None]
    roots = [name.split(".")[0].split("[")[0] for name in fields]
    if not roots or not all(roots):
        raise ValueError(
            f"image_pattern {image_pattern!r} must name the row fields it uses, e.g. {SNLI_VE_IMAGE_PATTERN!r} "
            "or '{image_id}.jpg'"
        )
    return list(dict.fromkeys(roots))


def read_image_text_jsonl(
    jsonl_file: PathLike,
    labels: Sequence[str],
    image_root: PathLike | None = None,
    *,
    image_pattern: str = SNLI_VE_IMAGE_PATTERN,
    second_image_pattern: str | None = None,
    text_field: str = "sentence2",
    label_field: str = "gold_label",
    id_field: str | None = "pairID",
    require_labels: bool = False,
    allow_missing: bool = False,
) -> list[ImageTextRecord]:
    """The examples of a JSON-lines file, in file order (defaults: SNLI-VE; see the module docstring).

    An image's file is `image_root / image_pattern.format(**row)` (and, for two-image examples, its second's
    `second_image_pattern`'s); `image_root` defaults to the file's folder. A row
    without `label_field` is unlabelled unless `require_labels` (training and validation data), and a label that is
    not one of `labels` is an error naming the file and line. Without `id_field` an example's id is "<file>:<line>".
    A missing image file raises FileNotFoundError; `allow_missing` skips those examples instead (with a warning)."""
    class_names = check_labels(labels, "read_image_text_jsonl")
    patterns = [image_pattern, *([second_image_pattern] if second_image_pattern is not None else [])]
    fields = list(dict.fromkeys(f for pattern in patterns for f in _pattern_fields(pattern)))
    expected = (
        f'JSON lines: {{"{text_field}": str, "{label_field}": one of {class_names}'
        + "".join(f', "{f}"' for f in [*fields, *([id_field] if id_field else [])])
        + f"}} per line, the image{'s' * (len(patterns) > 1)} at image_root/{' and '.join(patterns)}"
    )
    ann = AnnotationFile(jsonl_file, expected)
    root = absolute_path(image_root if image_root is not None else ann.path.parent)
    index_of = {name: i for i, name in enumerate(class_names)}
    records = []
    for number, entry in ann.load_lines("object"):
        where = f"line {number}"
        for name in fields:
            ann.field(entry, name, "int or str", where)
        images = []
        for option, pattern in zip(("image_pattern", "second_image_pattern"), patterns, strict=False):
            try:
                images.append(str(root / pattern.format_map(entry)))
            except (KeyError, IndexError, AttributeError, ValueError) as e:
                raise ann.error(where, f"cannot fill {option} {pattern!r} ({type(e).__name__}: {e})") from e
        text = ann.field(entry, text_field, "str", where).strip()
        if not text:
            raise ann.error(f"{where}.{text_field}", "is empty; a text of only [CLS] [SEP] says nothing")
        label_name = ann.field(entry, label_field, "str", where, default=None)
        if label_name is None and require_labels:
            raise ann.error(where, f"has no field '{label_field}'; every training and validation example needs one")
        if label_name is not None and label_name not in index_of:
            raise ann.error(f"{where}.{label_field}", f"is {label_name!r}, not one of the labels {class_names}")
        example_id = ann.field(entry, id_field, "int or str", where) if id_field else f"{ann.path.name}:{number}"
        records.append(
            ImageTextRecord(
                example_id=str(example_id),
                image_path=images[0],
                second_image_path=images[1] if len(images) > 1 else None,
                text=text,
                label=UNLABELLED if label_name is None else index_of[label_name],
                label_name=label_name or "",
            )
        )
    directories = DirectoryIndex()
    paths = [[p for p in (r.image_path, r.second_image_path) if p is not None] for r in records]
    missing = [[m for p in ps if (m := directories.first_missing(p)) is not None] for ps in paths]
    searched = {Path(p).parent for ps in paths for p in ps}
    # SNLI-VE has several hypotheses per premise image: the count is of distinct files.
    files = [tuple(ps) for ps in paths]
    return drop_missing(records, missing, ann.path, searched, allow_missing, images=files, noun="example")


class ImageTextClassificationDataset(RecordDataset[ImageTextClassificationItem]):
    """Item = one `ImageTextRecord`: its image (decoded, resized, normalised) and the image path as the key that
    lets the collate share it among the texts about it, the text's token ids, the label and the id."""

    def image_paths(self, record: ImageTextRecord) -> list[str]:
        return [record.image_path, *([record.second_image_path] if record.second_image_path else [])]

    def load(self, key: tuple[int, int] | int) -> ImageTextClassificationItem:
        record = self.records[split_key(key)[1]]
        item: ImageTextClassificationItem = {
            "pixel_values": self.image(record.image_path),
            "image_key": record.image_path,
            "input_ids": self.token_ids([record.text])[0],
            "label": record.label,
            "label_name": record.label_name,
            "example_id": record.example_id,
        }
        if record.second_image_path is not None:
            item["second_pixel_values"] = self.image(record.second_image_path)
            item["second_image_key"] = record.second_image_path
        return item


class ClassificationSplits(SplitDataModule):
    """What the (image, text) -> class DataModules share, whatever they read: the class names (`labels`, index =
    class; the CLI links them to the task's head) and one or two images a sample. A subclass reads a split's
    `ImageTextRecord`s and says `images_per_sample`."""

    def __init__(self, labels: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = check_labels(labels, type(self).__name__)

    @property
    def images_per_sample(self) -> int:
        """1, or 2 for statements about image pairs; the CLI links it to the task's."""
        return 1

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def dataset(self, split: str, records: Sequence[Any] | None = None) -> Dataset:
        return ImageTextClassificationDataset(
            self.records(split) if records is None else records, self.transform, self.tokenizer,
            self.processing.max_text_length,
        )  # fmt: skip

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        return functools.partial(collate_image_text, pad_token_id=self.tokenizer.pad_token_id)


class ImageTextClassificationDataModule(ClassificationSplits):
    """Any (image, text) -> class benchmark in JSON lines; the defaults read SNLI-VE (module docstring).

    Args:
        train_file: JSON-lines file whose every row has a label (SNLI-VE: snli_ve_train.jsonl).
        val_file: as train_file, for validation (SNLI-VE: snli_ve_dev.jsonl).
        labels: the class names as the files write them, index = class (SNLI-VE: entailment, neutral,
            contradiction); the task's head must use the same order.
        test_file: the rows `test_dataloader` and `predict_dataloader` serve; labels optional (-1 where absent).
        image_root: the folder `image_pattern` is relative to (SNLI-VE: flickr30k-images/); default: each file's.
        image_pattern: an example's image file, filled with its row's fields by name.
        second_image_pattern: the second image's, for examples of two images (a statement about an image pair, as
            NLVR2's); each image goes through the transformer with the text and the two [CLS] vectors are classified.
        text_field: the field holding the text.
        label_field: the field holding the class name.
        id_field: the field that identifies an example (predictions carry it); None: "<file>:<line>".
        allow_missing: skip examples whose image file is missing (with a warning) instead of failing.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`: tokenizer, image sizes, batches).
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        labels: list[str],
        test_file: str | None = None,
        image_root: str | None = None,
        image_pattern: str = SNLI_VE_IMAGE_PATTERN,
        second_image_pattern: str | None = None,
        text_field: str = "sentence2",
        label_field: str = "gold_label",
        id_field: str | None = "pairID",
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(labels=labels, **kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.image_root = image_root
        # What `read_image_text_jsonl` takes as is, by its own argument names.
        self.reader_options: dict[str, Any] = dict(
            image_pattern=image_pattern, second_image_pattern=second_image_pattern, text_field=text_field,
            label_field=label_field, id_field=id_field, allow_missing=allow_missing,
        )  # fmt: skip
        for pattern in (image_pattern, second_image_pattern):  # a bad pattern fails here, not at the first batch
            if pattern is not None:
                _pattern_fields(pattern)

    @property
    def images_per_sample(self) -> int:
        """1, or 2 with `second_image_pattern`; the CLI links it to the task's."""
        return 1 if self.reader_options["second_image_pattern"] is None else 2

    def read_split(self, split: str) -> Sequence[Any]:
        path = self.files[split]
        if path is None:
            raise ValueError(f"{type(self).__name__}: no test_file given, so there is nothing to test or predict")
        records = read_image_text_jsonl(
            path, self.labels, self.image_root, require_labels=split != "test", **self.reader_options
        )
        return ArrowRecords.from_records(records)


@dataclass
class ClassificationColumns:
    """The columns of (image, text) -> class data; the defaults read SNLI-VE as on the Hub (`Flickr30K_ID`,
    `gold_label`, `image`, `sentence`). Labels are class names (one of `labels`), or class indices (a ClassLabel
    column's, or into `labels`); -1 or a missing label column in a test split: unlabelled."""

    image: str = "image"  # a datasets.Image column, file bytes, or paths relative to image_root
    text: str = "sentence"
    label: str | None = "gold_label"
    example_id: str | None = None  # None: "<split>:<row>"
    second_image: str | None = None  # a second image column: statements about image pairs


class HFClassificationDataModule(StreamedTask, ClassificationSplits):
    """Any (image, text) -> class benchmark on any `datasets` source (hf.py), read by `columns` with no conversion.

    Args:
        source: where the data is and which of its splits are train / val / test (`DatasetSource`).
        labels: the class names, index = class (SNLI-VE: entailment, neutral, contradiction).
        columns: the columns read (`ClassificationColumns`; the defaults read SNLI-VE as on the Hub).
        image_root: the folder image paths are relative to (default: the data files' folder).
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`).
    """

    def __init__(
        self,
        source: DatasetSource,
        labels: list[str],
        columns: ClassificationColumns | None = None,
        image_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(labels=labels, **kwargs)
        self.hf = HFSource(source, image_root)
        self.columns = columns or ClassificationColumns()

    @property
    def images_per_sample(self) -> int:
        return 1 if self.columns.second_image is None else 2

    def read_rows(
        self, table: datasets.Dataset, split: str, where: str
    ) -> tuple[list[Any], Mapping[str, bytes], Mapping[str, tuple[int, int]]]:
        c = self.columns
        labelled = bool(c.label) and (split != "test" or c.label in table.column_names)
        wanted = {"image": c.image, "text": c.text, "example_id": c.example_id, "second_image": c.second_image}
        require_columns(table, {**wanted, "label": c.label if labelled else None}, where)
        keys, first_bytes, first_sizes = self.hf.images(table, c.image, split, where=where)
        held: Mapping[str, bytes] = first_bytes
        sizes: Mapping[str, tuple[int, int]] = first_sizes
        second: list[str | None] = [None] * len(table)
        if c.second_image:
            second_keys, second_bytes, second_sizes = self.hf.images(table, c.second_image, split, where=where)
            second = list(second_keys)
            # ChainMaps: merging into a dict would read every image's bytes now.
            held = ChainMap(first_bytes, second_bytes)  # type: ignore[arg-type]
            sizes = ChainMap(first_sizes, second_sizes)  # type: ignore[arg-type]
        feature = table.features.get(c.label) if labelled and c.label else None
        names = feature.names if isinstance(feature, datasets.ClassLabel) else self.labels
        labels = table[c.label] if labelled and c.label else [None] * len(table)
        ids = table[c.example_id] if c.example_id else [f"{split}:{row}" for row in range(len(table))]
        records = []
        for row, (key, text, label, example_id) in enumerate(zip(keys, table[c.text], labels, ids, strict=True)):
            name = self._label_name(label, names, f"{where}[{row}].{c.label}", require=split != "test")
            index = UNLABELLED if name is None else self.labels.index(name)
            records.append(ImageTextRecord(str(example_id), key, str(text).strip(), index, name or "", second[row]))
        return records, held, sizes

    def _label_name(self, value: Any, names: Sequence[str], where: str, require: bool) -> str | None:
        """A label cell as one of `labels` (None: unlabelled, allowed outside training and validation)."""
        name = names[value] if isinstance(value, int) and 0 <= value < len(names) else value
        if name is None or value == -1:
            if require:
                raise SourceError(f"{where}: no label; every training and validation example needs one")
            return None
        if name not in self.labels:
            raise SourceError(f"{where}: label {value!r}; expected one of the labels {self.labels} or its index")
        return str(name)
