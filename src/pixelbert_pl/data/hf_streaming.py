"""Training streamed from a user's `datasets` source (`source.streaming: true`), for every task: corpora too large for
a map-style table, whose length need not be known in advance (JSON lines or Parquet files read as a stream, a Hub
dataset streamed from the Hub).

What the Parquet shards of streaming.py give, over the stream's own shards (`IterableDataset.num_shards`: a file
each, for data files): every (rank, DataLoader worker) slot reads a disjoint share of them (`SlotStream`, the shard
order shuffled by (seed, epoch)), one shard at a time (`IterableDataset.shard`, read with `iter`, which does not
split it again among workers). The length being unknown, an epoch is `batches_per_epoch` batches per rank, split
among its workers: a slot that has read its whole share before it has served its batches reads it again (a
second pass, its own draws), so every rank serves the same number of batches whatever its shards hold, and DDP
never waits on a rank that ran dry.

A shard's rows are read in blocks of `block_size` rows; a block is the shuffle buffer: its items are served in an
order shuffled by (seed, epoch, shard, block, pass), and with fixed padded shapes (`pad_long_sides`) cut into
batches of one shape bucket. Batches never span blocks: a block's last partial batch is dropped. Pre-training
builds a block's items from its captions (hf_pretraining.py); the other tasks (`TaskBlockStream`) read a block's
rows with the task DataModule's own row reader, as a map-style split's, into its own dataset and collate.

The state after each batch is (epoch, worker, position in the slot's shards, rows of that shard consumed: the
block's first row, items of the block served, batches served); torchdata's `StatefulDataLoader` collects it from
each worker and Lightning keeps it in checkpoints. A restored slot re-reads its shard, skips to the block
(`IterableDataset.skip`), rebuilds it and its order, and goes on with the next batch: an exact mid-epoch resume.
Evaluation splits are read whole, in order, as map-style ones are.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from torch.utils.data import DataLoader

from pixelbert_pl.data.hf import HFSource
from pixelbert_pl.data.records import ArrowRecords, RecordDataset, sample_rng
from pixelbert_pl.data.samplers import item_buckets
from pixelbert_pl.data.sources import SourceError, load_split, undecoded_images
from pixelbert_pl.data.streaming import SlotStream, bucket_batches, stream_loader, warn_unused_image_cache
from pixelbert_pl.processing import ProcessingConfig

_BLOCK_ORDER_STREAM = 3  # the last key of a block's order shuffle (the shard order's is streaming.py's 2)
BATCHES_ARGUMENT = "--data.init_args.batches_per_epoch"


class BlockStream(SlotStream):
    """Training batches from a `datasets` stream, `batches_per_epoch` of them on this rank (split among its workers,
    the first ones taking one more where it does not divide), read in blocks of `block_size` rows (module
    docstring). A subclass reads a shard's blocks (`blocks`) and cuts a block into items and batches
    (`block_batches`).

    `num_workers` must be the DataLoader's; the stream must have at least ranks x max(1, workers) shards.
    """

    STATE_KEYS = ("epoch", "worker", "position", "rows", "offset", "batches")

    def __init__(
        self, stream: datasets.IterableDataset, where: str, batches_per_epoch: int, block_size: int, **slots: Any
    ) -> None:
        """`slots`: `SlotStream`'s arguments but the shard count and messages."""
        fix = "give the stream more shards (more data files; a save_to_disk folder streams one per Arrow file)"
        super().__init__(shard_count=stream.num_shards, where=where, fix=f"{fix} or use fewer workers", **slots)
        if batches_per_epoch < 1 or block_size < 2:
            raise ValueError(f"batches_per_epoch={batches_per_epoch}, block_size={block_size}: expected >= 1, >= 2")
        self.stream, self.where, self.batches_per_epoch, self.block_size = stream, where, batches_per_epoch, block_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def worker_batches(self, worker: int) -> int:
        """The batches worker `worker` of this rank serves an epoch."""
        workers = max(1, self.num_workers)
        return self.batches_per_epoch // workers + (worker < self.batches_per_epoch % workers)

    def finished(self, state: Mapping[str, int]) -> bool:
        return state["batches"] >= self.worker_batches(state["worker"])

    def shard_rows(self, shard: int, rows: int) -> Iterator[tuple[int, dict[str, list[Any]]]]:
        """(block number, the block's rows as columns) of shard `shard`, from its row `rows` (a block's first)."""
        data = self.stream.shard(num_shards=self.shard_count, index=shard, contiguous=True)
        if rows:
            data = data.skip(rows)
        yield from enumerate(data.iter(batch_size=self.block_size), start=rows // self.block_size)

    def block_batches(
        self, epoch: int, shard: int, block: int, cycle: int, rows: dict[str, list[Any]]
    ) -> tuple[Any, list[list[int]]]:
        """The block's dataset (indexed by (epoch, item)) and its batches of item indices, in serving order; no
        batch where the block serves none."""
        raise NotImplementedError

    def block_order(
        self, epoch: int, shard: int, block: int, cycle: int, buckets: np.ndarray | None, items: int
    ) -> list[list[int]]:
        """A block's batches of item indices: shuffled by (seed, epoch, shard, block, pass over the slot's shards);
        of one shape bucket each wherever the counts allow (`buckets`: each item's, with fixed padded shapes)."""
        rng = sample_rng(self.settings.seed, epoch, shard, block, cycle, _BLOCK_ORDER_STREAM)
        size = self.batch_size
        if buckets is None:
            order = rng.permutation(items).tolist()
            return [order[i : i + size] for i in range(0, len(order) // size * size, size)]
        return bucket_batches(rng, buckets, size)

    def __iter__(self) -> Iterator[Any]:
        workers, worker, state = self.start()
        epoch, quota, served = state["epoch"], self.worker_batches(worker), state["batches"]
        shards = self.slot_shards(epoch, self.rank * workers + worker)
        position, rows, offset = state["position"], state["rows"], state["offset"]
        idle = 0  # shards read in a row that gave no batch
        while served < quota:
            shard, cycle = shards[position % len(shards)], position // len(shards)
            before = served
            for block, block_rows in self.shard_rows(shard, rows):
                dataset, batches = self.block_batches(epoch, shard, block, cycle, block_rows)
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
                    f"{self.where}: the shards {shards} of rank {self.rank}, worker {worker} give no batch of "
                    f"{self.batch_size}: every block of {self.block_size} rows gives fewer items"
                    " (pre-training: pairs of at least 2 images); raise block_size or lower batch_size"
                )


@dataclass
class TaskBlocks:
    """What a slot of `TaskBlockStream` needs to build a block's items (pickled into every DataLoader worker): the
    task DataModule, without its trainer, whose row reader and dataset serve a map-style split the same way."""

    module: Any  # a `StreamedTask` DataModule
    seed: int


class TaskBlockStream(BlockStream):
    """A task's training batches from a `datasets` stream (module docstring): each block's rows read by the task
    DataModule's `read_rows` into its records, served by its dataset and collate."""

    settings: TaskBlocks

    def block_batches(
        self, epoch: int, shard: int, block: int, cycle: int, rows: dict[str, list[Any]]
    ) -> tuple[Any, list[list[int]]]:
        module = self.settings.module
        where = f"{self.where} shard {shard} rows {block * self.block_size}+"
        table = module.block_table(rows, self.stream.features, "train", where)
        records, images, sizes = module.read_rows(table, "train", where)
        # Retrieval draws a negative caption from another image of the block: a block of one image serves nothing.
        if len(records) < (2 if getattr(module, "num_negatives", 0) else 1):
            return None, []
        dataset: Any = module.dataset("train", ArrowRecords.from_records(records))
        dataset.image_bytes = images
        # Each block's draws (retrieval's negatives) keyed by where it is, so a resumed block draws the same.
        dataset.seed = int(np.random.SeedSequence([self.settings.seed, shard, block, cycle]).generate_state(1)[0])
        buckets: np.ndarray | None = None
        if isinstance(dataset, RecordDataset):
            dataset.image_sizes = sizes
            if self.skip_counter is not None:
                dataset.skip_unreadable(self.skip_counter)
            if self.shapes is not None:
                buckets = np.asarray(item_buckets(dataset, module.processing, self.shapes, threads=1), dtype=np.int64)
        return dataset, self.block_order(epoch, shard, block, cycle, buckets, len(dataset))


class StreamOptions:
    """The settings of a `datasets` DataModule for a streamed source, mixed in before its DataModule base.

    Args:
        batches_per_epoch: with `source.streaming: true` (corpora too large for a map-style table, of a length not
            known in advance), training is streamed (hf_streaming.py) and an epoch is this many batches per rank:
            required then. Every (rank, worker) slot reads a disjoint share of the stream's shards (at least one
            each), again from its start when it runs dry; the mid-epoch position is in checkpoints; evaluation
            splits are read whole.
        block_size: streaming: rows read at a time, the shuffle buffer (items shuffled within it, batches of one
            shape bucket cut from it; pre-training's ITM negatives drawn from its other images).
    """

    def __init__(self, batches_per_epoch: int | None = None, block_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches_per_epoch, self.block_size = batches_per_epoch, block_size

    def check_streamed(self, where: str) -> int:
        """`batches_per_epoch`, required of a streamed source (its length is not known in advance)."""
        if self.batches_per_epoch is None:
            raise ValueError(
                f"{where}: streaming: true reads a stream whose length is not known in advance: set"
                f" batches_per_epoch (training batches per rank an epoch; on the command line {BATCHES_ARGUMENT} N)"
            )
        return self.batches_per_epoch


class StreamedTask(StreamOptions):
    """The task DataModules on a `datasets` source (VQA, retrieval, NLVR2 pairs, classification), mixed in before
    their task base: a split's rows become records by `read_rows` (a table's rows: a whole split, or a streamed
    block); with `source.streaming: true` training streams (`TaskBlockStream`) and evaluation splits are read
    whole, in order."""

    hf: HFSource
    processing: ProcessingConfig  # the DataModule base's
    image_bytes: dict[str, Mapping[str, bytes]]  # the DataModule base's
    image_sizes: dict[str, Mapping[str, tuple[int, int]]]  # the DataModule base's

    def read_rows(
        self, table: datasets.Dataset, split: str, where: str
    ) -> tuple[list[Any], Mapping[str, bytes], Mapping[str, tuple[int, int]]]:
        """The records of `table`'s rows (`where` names them in messages), their held image bytes and sizes."""
        raise NotImplementedError

    def kept_records(self, records: list[Any], split: str) -> Any:
        """What `records(split)` keeps of a split's records: an Arrow table of them (training reads it in workers)."""
        return ArrowRecords.from_records(records)

    def read_split(self, split: str) -> Any:
        where = self.hf.where(split)
        if self.hf.source.streaming and split == "train":
            self.check_streamed(where)
            return []  # training is streamed (`train_dataloader`)
        table = self.hf.table(split) if not self.hf.source.streaming else self.whole_stream(split)
        records, self.image_bytes[split], self.image_sizes[split] = self.read_rows(table, split, where)
        return self.kept_records(records, split)

    def whole_stream(self, split: str) -> datasets.Dataset:
        """An evaluation split of a stream, read whole into memory (evaluation reads it in order, many times)."""
        stream, where = self.stream(split), self.hf.where(split)
        columns: dict[str, list[Any]] = {}
        for batch in stream.iter(batch_size=1024):
            for name, values in batch.items():
                columns.setdefault(name, []).extend(values)
        table = self.block_table(columns, stream.features, split, where)
        if not len(table):
            kept = f" whose {self.hf.split_column!r} is one of {self.hf.wanted(split)}" if self.hf.split_column else ""
            raise SourceError(f"{where}: no row{kept}")
        return table

    def stream_blocks(self, split: str, block_size: int = 1024) -> Iterator[tuple[list[Any], Mapping[str, bytes]]]:
        """The records of `split`'s stream, in blocks of `block_size` rows read in order, with their images' bytes:
        what `pixelbert-check-data` scans of a stream without holding it whole."""
        stream, where = self.stream(split), self.hf.where(split)
        for number, batch in enumerate(stream.iter(batch_size=block_size)):
            rows = f"{where} rows {number * block_size}+"
            records, images, _ = self.read_rows(self.block_table(batch, stream.features, split, rows), split, rows)
            yield records, images

    def block_table(
        self, rows: dict[str, list[Any]], features: datasets.Features | None, split: str, where: str
    ) -> datasets.Dataset:
        """Rows read from a stream as a table, only those of `split` where a column says each row's split."""
        table = datasets.Dataset.from_dict(rows, features=features)
        return table.select(self.hf.kept_rows(table, split, where)) if self.hf.split_column else table

    def stream(self, split: str) -> datasets.IterableDataset:
        stream = load_split(self.hf.source, split)
        if not isinstance(stream, datasets.IterableDataset):
            raise SourceError(f"{self.hf.where(split)}: expected a stream (source.streaming: true)")
        return undecoded_images(stream, list(stream.column_names or ()))  # type: ignore[return-value]  # stream in, out

    def train_dataloader(self) -> DataLoader:
        if not self.hf.source.streaming:
            return super().train_dataloader()  # type: ignore[misc]  # the task base's
        self.setup("fit")  # type: ignore[attr-defined]
        return stream_loader(self, task_stream(self))  # type: ignore[arg-type]


def task_stream(module: Any) -> TaskBlockStream:
    """The training stream of a `StreamedTask` DataModule."""
    where = module.hf.where("train")
    batches = module.check_streamed(where)
    warn_unused_image_cache(module.image_cache_mb, "each block's images are decoded as it is read")
    if getattr(module, "questions_per_image", 1) > 1:  # VQA's grouping needs the whole split's questions by image
        warnings.warn(
            f"questions_per_image={module.questions_per_image} is not used when streaming: a block's questions are"
            " shuffled one at a time", stacklevel=2,
        )  # fmt: skip
    reader = copy.copy(module)
    reader.trainer = None  # workers get the reader, not the trainer (spawned ones would pickle it)
    world, rank = module._ranks()
    collate = functools.partial(module.collate("train"), padding=module.padding)
    return TaskBlockStream(
        module.stream("train"), where, batches, module.block_size, settings=TaskBlocks(reader, module.seed),
        collate=collate, batch_size=module.batch_size, world_size=world, rank=rank, num_workers=module.num_workers,
        skip_counter=module.skip_counter, shapes=module.padding.shapes,
    )  # fmt: skip
