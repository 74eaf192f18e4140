"""Pre-training on a user's `datasets` source of (image, caption) rows (`HFPretrainDataModule`): map-style, as the
other task DataModules read it, or streamed (`source.streaming: true`): corpora too large for a map-style table,
whose length need not be known in advance (JSON lines or Parquet files read as a stream, a Hub dataset streamed
from the Hub).

What the Parquet shards of streaming.py give, over the stream's own shards (`IterableDataset.num_shards`: a file
each, for data files): every (rank, DataLoader worker) slot reads a disjoint share of them (`SlotStream`, the shard
order shuffled by (seed, epoch)), one shard at a time (`IterableDataset.shard`, read with `iter`, which does not
split it again among workers). The length being unknown, an epoch is `batches_per_epoch` batches per rank, split
among its workers: a slot that has read its whole share before it has served its batches reads it again (a
second pass, its own draws), so every rank serves the same number of batches whatever its shards hold, and DDP
never waits on a rank that ran dry.

A shard's rows are read in blocks of `block_size` rows; a block is the shuffle buffer: its image-caption pairs are
served in an order shuffled by (seed, epoch, shard, block), with ITM negatives from the block's other images and
masking, negatives and pixel sampling as in-memory pre-training (`CaptionPretrainDataset` over the block's records,
its `image_bytes` the block's image bytes). With fixed padded shapes (`pad_long_sides`) a block's pairs are cut into
batches of one shape bucket (`bucket_batches`), from the sizes in the image headers of the block's bytes (or
files). Batches never span blocks: a block's last partial batch is dropped.

The state after each batch is (epoch, worker, position in the slot's shards, rows of that shard consumed: the
block's first row, items of the block served, batches served); torchdata's `StatefulDataLoader` collects it from
each worker and Lightning keeps it in checkpoints. A restored slot re-reads its shard, skips to the block
(`IterableDataset.skip`), rebuilds it and its order, and goes on with the next batch: an exact mid-epoch resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from torch.utils.data import DataLoader

from pixelbert_pl.data.captions import ImageCaptions, to_hf_dataset
from pixelbert_pl.data.hf import KARPATHY_SPLIT_VALUES, HFCaptionData, caption_records
from pixelbert_pl.data.pretraining import PretrainSplits
from pixelbert_pl.data.records import ArrowRecords, sample_rng
from pixelbert_pl.data.sources import (
    SourceError,
    image_reference,
    load_split,
    require_columns,
    undecoded_images,
)
from pixelbert_pl.data.streaming import (
    ShardCaptionDataset,
    SlotStream,
    bucket_batches,
    size_buckets,
    stream_loader,
    stream_parts,
    warn_unused_image_cache,
)
from pixelbert_pl.processing.batches import PretrainBatch
from pixelbert_pl.processing.images import UnreadableImageError, image_size

_BLOCK_ORDER_STREAM = 3  # the last key of a block's order shuffle (the shard order's is streaming.py's 2)
BATCHES_ARGUMENT = "--data.init_args.batches_per_epoch"


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

    def columns(self) -> list[str]:
        return [c for c in (self.image, self.caption, self.image_id, self.split_column) if c]

    def read(self, rows: Mapping[str, list[Any]], first_row: int) -> tuple[list[str], list[Any], dict[str, bytes]]:
        """Each kept row's image key and caption cell (`rows`: a batch of columns, its first row `first_row` of
        the stream's), and the bytes of the images the rows hold, by key. Rows of one `image_id` whose bytes the
        data holds share a key; an image file's key is its path."""
        keys, captions, images = [], [], {}
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
        return keys, captions, images

    def records(self, rows: Mapping[str, list[Any]], first_row: int) -> tuple[list[ImageCaptions], dict[str, bytes]]:
        """The records of these rows (one per image, with all its captions here) and their images' bytes."""
        keys, captions, images = self.read(rows, first_row)
        return (caption_records(keys, captions, f"{self.where} from row {first_row}: row") if keys else []), images


class CaptionBlockStream(SlotStream):
    """Training batches of pre-training items from a `datasets` stream, `batches_per_epoch` of them on this rank
    (split among its workers, the first ones taking one more where it does not divide), read in blocks of
    `block_size` rows (module docstring).

    `num_workers` must be the DataLoader's; the stream must have at least ranks x max(1, workers) shards.
    """

    STATE_KEYS = ("epoch", "worker", "position", "rows", "offset", "batches")

    def __init__(
        self, stream: datasets.IterableDataset, rows: CaptionRows, batches_per_epoch: int, block_size: int, **slots: Any
    ) -> None:
        """`slots`: `SlotStream`'s arguments but the shard count and messages (`stream_parts`)."""
        fix = "give the stream more shards (more data files; a save_to_disk folder streams one per Arrow file)"
        super().__init__(shard_count=stream.num_shards, where=rows.where, fix=f"{fix} or use fewer workers", **slots)
        if batches_per_epoch < 1 or block_size < 2:
            raise ValueError(f"batches_per_epoch={batches_per_epoch}, block_size={block_size}: expected >= 1, >= 2")
        self.stream, self.rows, self.batches_per_epoch, self.block_size = stream, rows, batches_per_epoch, block_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def worker_batches(self, worker: int) -> int:
        """The batches worker `worker` of this rank serves an epoch."""
        workers = max(1, self.num_workers)
        return self.batches_per_epoch // workers + (worker < self.batches_per_epoch % workers)

    def finished(self, state: Mapping[str, int]) -> bool:
        return state["batches"] >= self.worker_batches(state["worker"])

    def blocks(self, shard: int, rows: int) -> Iterator[tuple[int, list[ImageCaptions], dict[str, bytes]]]:
        """(block number, records, image bytes) of shard `shard`'s blocks, from its row `rows` (a block's first)."""
        data = self.stream.shard(num_shards=self.shard_count, index=shard, contiguous=True)
        if rows:
            data = data.skip(rows)
        first = rows // self.block_size
        reader = CaptionRows(**{**vars(self.rows), "where": f"{self.rows.where} shard {shard}"})
        for number, batch in enumerate(data.iter(batch_size=self.block_size), start=first):
            yield number, *reader.records(batch, number * self.block_size)

    def block_batches(
        self, epoch: int, shard: int, block: int, cycle: int, records: list[ImageCaptions], images: dict[str, bytes]
    ) -> tuple[ShardCaptionDataset, list[list[int]]]:
        """The block's dataset and its batches of item indices, in serving order (shuffled by (seed, epoch, shard,
        block, pass over the slot's shards))."""
        # Item ids unique over the stream: shard, block and item in its bits (a block holds < 2**20 items).
        dataset = self.settings.dataset(records, images, (shard << 40) + (block << 20), [shard, block, cycle], True)
        if self.skip_counter is not None:
            dataset.skip_unreadable(self.skip_counter)  # as in-memory training: the next readable item stands in
        rng = sample_rng(self.settings.seed, epoch, shard, block, cycle, _BLOCK_ORDER_STREAM)
        size = self.batch_size
        if self.shapes is None:
            order = rng.permutation(len(dataset)).tolist()
            return dataset, [order[i : i + size] for i in range(0, len(order) // size * size, size)]
        sizes = [_image_size(r.image_path, images) for r in records]
        buckets = size_buckets(self.shapes, self.settings.transform, sizes)[np.asarray(dataset.item_records())]
        return dataset, bucket_batches(rng, buckets, size)

    def __iter__(self) -> Iterator[PretrainBatch]:
        workers, worker, state = self.start()
        epoch, quota, served = state["epoch"], self.worker_batches(worker), state["batches"]
        shards = self.slot_shards(epoch, self.rank * workers + worker)
        position, rows, offset = state["position"], state["rows"], state["offset"]
        idle = 0  # shards read in a row that gave no batch
        while served < quota:
            shard, cycle = shards[position % len(shards)], position // len(shards)
            before = served
            for block, records, images in self.blocks(shard, rows):
                if len(records) < 2:  # no negatives within the block (a shard's last rows, say): nothing to serve
                    continue
                dataset, batches = self.block_batches(epoch, shard, block, cycle, records, images)
                for k in range(offset // self.batch_size, len(batches)):
                    items = [dataset[(epoch, i)] for i in batches[k]]
                    served += 1
                    last = k + 1 == len(batches)
                    self._state = {
                        "epoch": epoch, "worker": worker, "position": position,
                        "rows": (block + last) * self.block_size, "offset": 0 if last else (k + 1) * self.batch_size,
                        "batches": served,
                    }  # fmt: skip
                    yield self.collate(items)
                    if served >= quota:
                        return
                offset = 0
            position, rows = position + 1, 0
            idle = 0 if served > before else idle + 1
            if idle >= len(shards):
                raise ValueError(
                    f"{self.rows.where}: the shards {shards} of rank {self.rank}, worker {worker} give no batch of "
                    f"{self.batch_size}: every block of {self.block_size} rows holds fewer pairs of at least 2 images;"
                    " raise block_size or lower batch_size"
                )


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
    rows = CaptionRows(c.image, c.caption, c.image_id, hf.root(), where, hf.split_column, list(values))
    require_columns(stream, {"image": c.image, "caption": c.caption, "image_id": c.image_id}, where)
    if hf.split_column:
        require_columns(stream, {"split": hf.split_column}, where, "--data.init_args.split_column")
    stream = undecoded_images(stream, [c.image])
    return stream.select_columns(rows.columns()), rows  # type: ignore[union-attr]  # a stream in, a stream out


def stream_blocks(
    module: HFPretrainDataModule, split: str, block_size: int = 1024
) -> Iterator[tuple[list[ImageCaptions], dict[str, bytes]]]:
    """The records of `split`'s stream, in blocks of `block_size` rows read in order, with their images' bytes:
    what `pixelbert-check-data` scans of a stream without holding it whole (an image whose rows straddle two
    blocks is in both)."""
    stream, rows = caption_rows(module, split)
    for number, batch in enumerate(stream.iter(batch_size=block_size)):
        yield rows.records(batch, number * block_size)


def read_stream(module: HFPretrainDataModule, split: str, max_images: int | None = None) -> list[ImageCaptions]:
    """An evaluation split read whole from its stream (at most `max_images` images), its image bytes kept in
    `module.image_bytes[split]`: validation is one item per image, in order, as for map-style sources."""
    stream, rows = caption_rows(module, split)
    keys: list[str] = []
    captions: list[Any] = []
    images: dict[str, bytes] = {}
    seen: set[str] = set()
    for batch in stream.iter(batch_size=256):
        k, c, i = rows.read(batch, len(keys))
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


class StreamOptions:
    """`HFPretrainDataModule`'s settings for a streamed source, mixed in before its DataModule base.

    Args:
        batches_per_epoch: with `source.streaming: true` (corpora too large for a map-style table, of a length not
            known in advance), training is streamed (module docstring) and an epoch is this many batches per rank:
            required then. Every (rank, worker) slot reads a disjoint share of the stream's shards (at least one
            each), again from its start when it runs dry; the mid-epoch position is in checkpoints; validation
            reads its split whole (`max_val_images` bounds it).
        block_size: streaming: rows read at a time, the shuffle buffer (pairs shuffled within it, ITM negatives
            drawn from its other images, batches of one shape bucket cut from it).
    """

    def __init__(self, batches_per_epoch: int | None = None, block_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches_per_epoch, self.block_size = batches_per_epoch, block_size


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
            if self.batches_per_epoch is None:
                raise ValueError(
                    f"{self.hf.where(split)}: streaming: true reads a stream whose length is not known in advance:"
                    f" set batches_per_epoch (training batches per rank an epoch; on the command line"
                    f" {BATCHES_ARGUMENT} N)"
                )
            return []  # training is streamed (`train_dataloader`)
        records = self.caption_records(split)
        return ArrowRecords(to_hf_dataset(records)) if split == "train" else records

    def train_dataloader(self) -> DataLoader:
        if not self.hf.source.streaming:
            return super().train_dataloader()
        self.setup("fit")
        return stream_loader(self, train_stream(self))
