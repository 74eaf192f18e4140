"""Pre-training on a user's `datasets` source of (image, caption) rows (`HFPretrainDataModule`): map-style, as the
other task DataModules read it, or streamed (`source.streaming: true`, hf_streaming.py): corpora too large for a
map-style table, whose length need not be known in advance.

Streamed, a block of rows is the shuffle buffer: its image-caption pairs are served with ITM negatives from the
block's other images and masking, negatives and pixel sampling as in-memory pre-training (`CaptionPretrainDataset`
over the block's records, its `image_bytes` the block's image bytes); with fixed padded shapes, batches of one
shape bucket from the sizes in the image headers of the block's bytes (or files).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from torch.utils.data import DataLoader

from pixelbert_pl.data.captions import ImageCaptions, to_hf_dataset
from pixelbert_pl.data.hf import INTEGERS, KARPATHY_SPLIT_VALUES, SIZE_COLUMNS, HFCaptionData, caption_records
from pixelbert_pl.data.hf_streaming import BlockStream, StreamOptions
from pixelbert_pl.data.pretraining import PretrainSplits
from pixelbert_pl.data.records import ArrowRecords
from pixelbert_pl.data.sources import (
    SourceError,
    image_reference,
    load_split,
    require_columns,
    undecoded_images,
)
from pixelbert_pl.data.streaming import (
    StreamSettings,
    size_buckets,
    stream_loader,
    stream_parts,
    warn_unused_image_cache,
)
from pixelbert_pl.processing.images import UnreadableImageError, image_size


@dataclass
class CaptionRows:
    """How rows of a stream become image-caption records: the columns read, the folder image paths are relative
    to, where the rows are (for messages) and, with `split_column`, the values of it whose rows are kept."""

    image: str
    caption: str
    image_id: str | None
    root: str
    where: str
    split_column: str | None = None
    split_values: Sequence[str] = ()
    sized: bool = False  # the rows have `height` / `width` columns: the images' sizes, no header read

    def columns(self) -> list[str]:
        sizes = SIZE_COLUMNS if self.sized else ()
        return [c for c in (self.image, self.caption, self.image_id, self.split_column, *sizes) if c]

    def read(
        self, rows: Mapping[str, list[Any]], first_row: int
    ) -> tuple[list[str], list[Any], dict[str, bytes], dict[str, tuple[int, int]]]:
        """Each kept row's image key and caption cell (`rows`: a batch of columns, its first row `first_row` of
        the stream's), and the bytes and sizes (where the rows give them) of the images, by key. Rows of one
        `image_id` whose bytes the data holds share a key; an image file's key is its path."""
        keys, captions, images, sizes = [], [], {}, {}
        for i, value in enumerate(rows[self.image]):
            if self.split_column and rows[self.split_column][i] not in self.split_values:
                continue
            try:
                key, data = image_reference(value, self.root)
            except SourceError as err:
                raise SourceError(f"{self.where}[{first_row + i}].{self.image}: {err}") from err
            if data is not None:
                key = f"{self.where} image {rows[self.image_id][i]}" if self.image_id else key
                images[key] = data
            keys.append(key)
            captions.append(rows[self.caption][i])
            height, width = (rows[c][i] for c in SIZE_COLUMNS) if self.sized else (None, None)
            if height and width:  # a missing size (None) is read from the header
                sizes[key] = (int(height), int(width))
        return keys, captions, images, sizes

    def records(
        self, rows: Mapping[str, list[Any]], first_row: int
    ) -> tuple[list[ImageCaptions], dict[str, bytes], dict[str, tuple[int, int]]]:
        """The records of these rows (one per image, with all its captions here), their images' bytes and sizes."""
        keys, captions, images, sizes = self.read(rows, first_row)
        records = caption_records(keys, captions, f"{self.where} from row {first_row}: row") if keys else []
        return records, images, sizes


class CaptionBlockStream(BlockStream):
    """Training batches of pre-training items from a `datasets` stream (`BlockStream`): a block's image-caption
    pairs, with ITM negatives from the block's other images."""

    settings: StreamSettings

    def __init__(
        self, stream: datasets.IterableDataset, rows: CaptionRows, batches_per_epoch: int, block_size: int, **slots: Any
    ) -> None:
        """`slots`: `SlotStream`'s arguments but the shard count and messages (`stream_parts`)."""
        super().__init__(stream, rows.where, batches_per_epoch, block_size, **slots)
        self.rows = rows

    def block_batches(
        self, epoch: int, shard: int, block: int, cycle: int, rows: dict[str, list[Any]]
    ) -> tuple[Any, list[list[int]]]:
        reader = CaptionRows(**{**vars(self.rows), "where": f"{self.rows.where} shard {shard}"})
        records, images, known = reader.records(rows, block * self.block_size)
        if len(records) < 2:  # no negatives within the block (a shard's last rows, say): nothing to serve
            return None, []
        # Item ids unique over the stream: shard, block and item in its bits (a block holds < 2**20 items).
        dataset = self.settings.dataset(records, images, (shard << 40) + (block << 20), [shard, block, cycle], True)
        if self.skip_counter is not None:
            dataset.skip_unreadable(self.skip_counter)  # as in-memory training: the next readable item stands in
        buckets = None
        if self.shapes is not None:
            sizes = [known.get(r.image_path) or _image_size(r.image_path, images) for r in records]
            buckets = size_buckets(self.shapes, self.settings.transform, sizes)[np.asarray(dataset.item_records())]
        return dataset, self.block_order(epoch, shard, block, cycle, buckets, len(dataset))


def _image_size(key: str, images: Mapping[str, bytes]) -> tuple[int, int]:
    """(height, width) from the image's header; (0, 0), the fallback bucket, for one that cannot be read."""
    try:
        return image_size(key, images.get(key))
    except UnreadableImageError:
        return 0, 0


def caption_rows(module: HFPretrainDataModule, split: str) -> tuple[datasets.IterableDataset, CaptionRows]:
    """The stream of `split` with the columns the module reads, images undecoded, and how its rows are read."""
    hf, c = module.hf, module.columns
    where = hf.where(split)
    stream = load_split(hf.source, split)
    if not isinstance(stream, datasets.IterableDataset):  # `source.streaming` is what gives a stream
        raise SourceError(f"{where}: expected a stream (source.streaming: true)")
    values = (hf.split_values or KARPATHY_SPLIT_VALUES).get(split, [split]) if hf.split_column else []
    features = stream.features or {}
    sized = all(isinstance(features.get(n), datasets.Value) and features[n].dtype in INTEGERS for n in SIZE_COLUMNS)
    rows = CaptionRows(c.image, c.caption, c.image_id, hf.root(), where, hf.split_column, list(values), sized)
    require_columns(stream, {"image": c.image, "caption": c.caption, "image_id": c.image_id}, where)
    if hf.split_column:
        require_columns(stream, {"split": hf.split_column}, where, "--data.init_args.split_column")
    stream = undecoded_images(stream, [c.image])
    return stream.select_columns(rows.columns()), rows  # type: ignore[union-attr]  # a stream in, a stream out


def read_stream(module: HFPretrainDataModule, split: str, max_images: int | None = None) -> list[ImageCaptions]:
    """An evaluation split read whole from its stream (at most `max_images` images), its image bytes kept in
    `module.image_bytes[split]`: validation is one item per image, in order, as for map-style sources."""
    stream, rows = caption_rows(module, split)
    keys: list[str] = []
    captions: list[Any] = []
    images: dict[str, bytes] = {}
    seen: set[str] = set()
    for batch in stream.iter(batch_size=256):
        k, c, i, _ = rows.read(batch, len(keys))
        keys.extend(k)
        captions.extend(c)
        images.update(i)
        seen.update(k)
        if max_images and len(seen) > max_images:
            break
    module.image_bytes[split] = images
    return caption_records(keys, captions, rows.where)[:max_images]


def train_stream(module: HFPretrainDataModule) -> CaptionBlockStream:
    """The training stream of `module` (`batches_per_epoch` checked by the module)."""
    assert module.batches_per_epoch is not None
    warn_unused_image_cache(module.image_cache_mb, "each block's images are decoded as it is read")
    stream, rows = caption_rows(module, "train")
    return CaptionBlockStream(stream, rows, module.batches_per_epoch, module.block_size, **stream_parts(module, True))


class HFPretrainDataModule(HFCaptionData, StreamOptions, PretrainSplits):
    """MLM + ITM pre-training on any `datasets` source of (image, caption) rows (hf.py): a Hub id, a save_to_disk
    folder, Parquet, CSV or JSON lines, read by `columns` with no conversion step, map-style or streamed; keep
    evaluation images out of it (with `split_column`, its train split is the source's "train" and "restval" rows).
    Its arguments are `HFCaptionData`'s (source, columns, image_root, split_column), `StreamOptions`'
    (batches_per_epoch, block_size) and `PretrainSplits`' (captions_per_image, ...)."""

    def read_split(self, split: str) -> Sequence[ImageCaptions]:
        if self.hf.source.streaming:
            if split != "train":
                return read_stream(self, split, self.max_val_images)
            self.check_streamed(self.hf.where(split))
            return []  # training is streamed (`train_dataloader`)
        records = self.caption_records(split)
        return ArrowRecords(to_hf_dataset(records)) if split == "train" else records

    def stream_blocks(
        self, split: str, block_size: int = 1024
    ) -> Iterator[tuple[list[ImageCaptions], dict[str, bytes]]]:
        """The records of `split`'s stream, in blocks of `block_size` rows read in order, with their images' bytes:
        what `pixelbert-check-data` scans of a stream without holding it whole (an image whose rows straddle two
        blocks is in both)."""
        stream, rows = caption_rows(self, split)
        for number, batch in enumerate(stream.iter(batch_size=block_size)):
            records, images, _ = rows.records(batch, number * block_size)
            yield records, images

    def train_dataloader(self) -> DataLoader:
        if not self.hf.source.streaming:
            return super().train_dataloader()
        self.setup("fit")
        return stream_loader(self, train_stream(self))
