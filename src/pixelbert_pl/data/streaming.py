"""Pre-training streamed from Parquet shards (`pixelbert-make-shards`, data/shards.py): corpora too large for every
rank to hold in memory (CC3M, CC12M, SBU, LAION subsets on object storage), read by many GPUs.

Each (rank, DataLoader worker) slot reads its own shards, a disjoint share of the epoch's shard order (shuffled
by (seed, epoch)); Hugging Face `datasets` reads each shard (Parquet over fsspec: local folders, file:// and
object-store URLs alike). A shard is the shuffle buffer: its records are held while its image-caption pairs are
served in an order shuffled by (seed, epoch, shard), with the ITM negatives drawn from the shard's other images and
masking, negatives and pixel sampling as in-memory pre-training (`CaptionPretrainDataset` over the shard's
records). Batches are formed in the workers, so the CNN still runs once per item's image; with fixed padded shapes
(`pad_long_sides`) each shard's pairs are cut into batches of one shape bucket, from the image sizes the index holds.

Two things the ecosystem's streaming does not give, hence our own bookkeeping here: equal batch counts on every rank
(DDP hangs otherwise), which needs the shard assignment known before reading (`split_dataset_by_node` decides it
inside the iterator), and an exact mid-epoch resume, which `datasets` does not restore for a shuffled stream (its
shuffle buffer is refilled, in a different order). Every slot serves the same number of batches, computed from the
shards' caption counts; the state after each batch is (epoch, shard, position, batches), which
torchdata's `StatefulDataLoader` collects from each worker and Lightning keeps in checkpoints.

`SlotStream` (slots, shard order, state) and `EpochStreamLoader` serve hf_pretraining.py's stream of a user's
`datasets` source too, whose length is not known in advance.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.base import PixelBertDataModule
from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.pretraining import CaptionPretrainDataset, matched_rows
from pixelbert_pl.data.quality import SkipCounter
from pixelbert_pl.data.records import CaptionPairIndex, sample_rng
from pixelbert_pl.data.samplers import bucket_batch_count, cut_bucket_batches
from pixelbert_pl.data.shards import (
    SHARD_COLUMNS,
    ShardIndex,
    ShardInfo,
    check_shard,
    read_shard_index,
    shard_error,
)
from pixelbert_pl.data.workers import stop_safe_worker_init
from pixelbert_pl.processing import ImageTransform, resize_shape
from pixelbert_pl.processing.batches import PretrainBatch, collate_pretrain
from pixelbert_pl.processing.items import PretrainItem
from pixelbert_pl.processing.shapes import PadShapes

_SHARD_ORDER_STREAM = 2  # the last key of the shard-order shuffle, so its stream is no item's or shard's


def read_shard(url: str, index_url: str | None = None) -> tuple[list[ImageCaptions], dict[str, bytes]]:
    """A shard's records, in row order, and each image's file bytes by `image_path`, read by `datasets`; a file that
    is missing or not such a shard (cut short, empty, other columns) raises `ShardError` naming it and `index_url`,
    the index listing it."""
    import datasets
    import pyarrow as pa

    records: list[ImageCaptions] = []
    images: dict[str, bytes] = {}
    try:
        stream = datasets.load_dataset("parquet", data_files=[url], streaming=True, split="train")
        for rows in stream.iter(batch_size=256):  # `iter` reads the one shard whatever worker calls it
            for image_id, source, captions, image, path in zip(
                rows["image_id"], rows["source"], rows["captions"], rows["image"], rows["image_path"], strict=True
            ):
                records.append(ImageCaptions(image_id, path, list(captions), source))
                images[path] = image
    # Arrow's and fsspec's errors name no file (ArrowInvalid: "Parquet magic bytes not found in footer").
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        raise shard_error(
            url, index_url, f"cannot be read ({type(err).__name__}: {err})",
            f"a Parquet shard of columns {', '.join(SHARD_COLUMNS)}",
        ) from err  # fmt: skip
    return records, images


def read_listed_shard(
    index: ShardIndex, shard: int, check_sizes: bool = False
) -> tuple[list[ImageCaptions], dict[str, bytes]]:
    """Shard `shard` of `index` (`read_shard`), checked against what the index lists (`check_shard`; the image sizes
    too with `check_sizes`, which reads every image's header)."""
    records, images = read_shard(index.urls()[shard], index.url)
    check_shard(index, shard, records, images if check_sizes else None)
    return records, images


class ShardCaptionDataset(CaptionPretrainDataset):
    """`CaptionPretrainDataset` over one shard's records, decoding the image bytes the shard holds; its items'
    `sample_id`s are numbered from `first_item`, so that they are unique over the whole index."""

    def __init__(self, images: Mapping[str, bytes], first_item: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_bytes, self.first_item = images, first_item

    def load(self, key: tuple[int, int] | int) -> PretrainItem:
        item = super().load(key)
        item["sample_id"] += self.first_item
        return item


@dataclass
class StreamSettings:
    """What a slot needs to build a shard's items (pickled into every DataLoader worker)."""

    transform: ImageTransform
    tokenizer: PreTrainedTokenizerBase
    max_text_length: int
    captions_per_image: int
    mlm_probability: float
    mlm_word_probabilities: dict[str, float] | None
    seed: int

    def dataset(
        self,
        records: Sequence[ImageCaptions],
        images: Mapping[str, bytes],
        first_item: int,
        seed_key: Sequence[int],
        train: bool,
        caption_counts: Sequence[int] | None = None,
    ) -> ShardCaptionDataset:
        """`ShardCaptionDataset` over one unit of a stream (a shard, a block), its draws seeded by `seed_key` after
        `seed`, so each unit has its own."""
        return ShardCaptionDataset(
            images, first_item, records, self.transform, self.tokenizer, self.max_text_length,
            self.captions_per_image, self.mlm_probability,
            seed=int(np.random.SeedSequence([self.seed, *seed_key]).generate_state(1)[0]),
            mlm_word_probabilities=self.mlm_word_probabilities, epoch="pairs" if train else "images",
            caption_counts=caption_counts,
        )  # fmt: skip


def size_buckets(shapes: PadShapes, transform: ImageTransform, sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """The `PadShapes` bucket of images of these (height, width) sizes once resized; (0, 0), an image that cannot
    be read, goes to the fallback bucket."""
    t, fallback = transform, len(shapes) - 1
    buckets = [shapes.bucket(*resize_shape(h, w, t.min_size, t.max_size, t.size_divisor)) if h else fallback
               for h, w in sizes]  # fmt: skip
    return np.asarray(buckets, dtype=np.int64)


def bucket_batches(rng: np.random.Generator, buckets: np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches of one bucket of the items whose buckets these are, wherever the counts allow (`cut_bucket_batches`):
    every bucket's items shuffled, cut, and the batches shuffled, all drawn from `rng`."""
    members = [rng.permutation(np.flatnonzero(buckets == b)).tolist() for b in np.unique(buckets)]
    batches = cut_bucket_batches(members, batch_size)
    return [batches[b] for b in rng.permutation(len(batches))]


class SeededSettings(Protocol):
    """What a `SlotStream` reads of its settings: the seed the shard order is drawn from."""

    seed: int


class SlotStream(IterableDataset):
    """What the streams of whole batches share: each (rank, DataLoader worker) slot reads a disjoint share of the
    epoch's shard order (shuffled by (seed, epoch) for training), its position after each batch is its state
    (`STATE_KEYS`, read by `StatefulDataLoader` in the worker), and a restored state is where the next iteration
    starts. A subclass says how many shards there are, reads them (`__iter__`) and says when a slot's state is at
    the end of its epoch (`finished`).

    `num_workers` must be the DataLoader's; training refuses fewer shards than slots (`fix` says what to do).
    `skip_counter` (training): unreadable images counted and stood in for; `shapes` (training): batches of one
    `PadShapes` bucket.
    """

    STATE_KEYS: tuple[str, ...] = ("epoch", "batches")

    def __init__(
        self,
        *,
        settings: SeededSettings,
        collate: Callable[[list[Any]], Any],
        batch_size: int,
        shard_count: int,
        where: str,
        fix: str,
        train: bool = True,
        world_size: int = 1,
        rank: int = 0,
        num_workers: int = 0,
        skip_counter: SkipCounter | None = None,
        shapes: PadShapes | None = None,
    ) -> None:
        self.settings, self.collate, self.batch_size, self.train = settings, collate, batch_size, train
        self.shard_count, self.skip_counter, self.shapes = shard_count, skip_counter, shapes if train else None
        self.world_size, self.rank, self.num_workers = world_size, rank, num_workers
        self.slots = world_size * max(1, num_workers)
        if train and shard_count < self.slots:
            raise ValueError(
                f"{where}: {shard_count} shards for {world_size} ranks x {max(1, num_workers)} workers: expected at "
                f"least one shard per slot; {fix}"
            )
        self.epoch = 0
        self._resume: dict[str, int] | None = None
        self._state: dict[str, int] = self.fresh_state(0)

    def fresh_state(self, epoch: int) -> dict[str, int]:
        return {**dict.fromkeys(self.STATE_KEYS, 0), "epoch": epoch}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def finished(self, state: Mapping[str, int]) -> bool:
        """Whether a slot in `state` has served its epoch (training)."""
        raise NotImplementedError

    def shard_order(self, epoch: int) -> np.ndarray:
        if not self.train:
            return np.arange(self.shard_count)
        return sample_rng(self.settings.seed, epoch, _SHARD_ORDER_STREAM).permutation(self.shard_count)

    def slot_shards(self, epoch: int, slot: int) -> list[int]:
        """The shards slot `slot` (= rank x workers + worker) reads in `epoch`, in reading order."""
        return [int(s) for s in self.shard_order(epoch)[slot :: self.slots]]

    def state_dict(self) -> dict[str, int]:
        """Where the next batch starts: read by `StatefulDataLoader` in the worker after each batch."""
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._resume = {k: int(state[k]) for k in self.STATE_KEYS}

    def start(self) -> tuple[int, int, dict[str, int]]:
        """(workers, this worker, the state this iteration starts from: the restored one, else the epoch's start),
        checking the loader's workers are the ones the shares were cut for."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if workers != max(1, self.num_workers):
            raise RuntimeError(f"{type(self).__name__}(num_workers={self.num_workers}) iterated by {workers} workers")
        resume, self._resume = self._resume, None
        state = resume if resume is not None else self.fresh_state(self.epoch)
        self._state = dict(state)
        return workers, worker, state


class ShardStream(SlotStream):
    """Batches of pre-training items streamed from `index`'s shards for one rank, split among its workers.

    Training (`train=True`): an epoch is every image-caption pair of the slot's shards, shuffled, cut into batches of
    `batch_size`; every slot serves `batches_per_slot` batches (the smallest share any slot can get, so every rank
    serves the same number; a slot's items beyond that wait for a later epoch's order). Evaluation: one item per
    image, shards in order, every batch served (the last may be short), no shuffling.

    With `shapes` (training), a shard's pairs are served in batches of one `PadShapes` bucket wherever its counts
    allow (`cut_bucket_batches`: the shard's whole batches, from the image sizes in the index), the shard's last
    partial batch dropped, so batches never span shards.

    `num_workers` must be the DataLoader's (each rank then serves `len(self)` batches).
    """

    STATE_KEYS = ("epoch", "shard", "offset", "batches")
    settings: StreamSettings

    def __init__(self, index: ShardIndex, **slots: Any) -> None:
        """`slots`: `SlotStream`'s arguments but the shard count and messages (`stream_parts`)."""
        super().__init__(
            shard_count=len(index.shards), where=f"{index.root} ({index.split})",
            fix="write smaller shards (pixelbert-make-shards --records-per-shard) or use fewer workers", **slots,
        )  # fmt: skip
        self.index = index
        self.matched = matched_rows(self.settings.captions_per_image)
        self.items_per_shard = [
            len(CaptionPairIndex(shard.caption_counts, self.matched, one_per_image=not self.train))
            for shard in index.shards
        ]
        # Any slot gets at least floor(shards / slots) shards: the smallest that many hold bounds every slot's share.
        fewest = len(index.shards) // self.slots
        self.item_buckets: list[np.ndarray] = []
        if self.shapes is None:
            self.batches_per_slot = sum(sorted(self.items_per_shard)[:fewest]) // self.batch_size
        else:
            self.item_buckets = [self._item_buckets(shard) for shard in index.shards]
            per_shard = [bucket_batch_count(np.bincount(b).tolist(), self.batch_size) for b in self.item_buckets]
            self.batches_per_slot = sum(sorted(per_shard)[:fewest])
        if self.train and self.batches_per_slot == 0:
            raise ValueError(
                f"{index.root}: a slot's share ({fewest} shards) holds fewer than batch_size={self.batch_size} items"
            )

    def __len__(self) -> int:
        if self.train:
            return self.batches_per_slot * max(1, self.num_workers)
        workers = max(1, self.num_workers)  # evaluation: every item, each slot's last batch short
        shares = [self.slot_shards(0, slot) for slot in range(self.rank * workers, (self.rank + 1) * workers)]
        return sum(-(-sum(self.items_per_shard[s] for s in share) // self.batch_size) for share in shares)

    def finished(self, state: Mapping[str, int]) -> bool:
        return state["batches"] >= self.batches_per_slot

    def _item_buckets(self, shard: ShardInfo) -> np.ndarray:
        """The `PadShapes` bucket of each of the shard's items (an unreadable image's: the fallback)."""
        assert self.shapes is not None
        if len(shard.image_sizes) != shard.records:
            raise ValueError(
                f"{self.index.root} ({self.index.split}): the index lists no image sizes for {shard.file}; bucketed "
                "batches (pad_long_sides) need them: write the shards again with pixelbert-make-shards"
            )
        records = size_buckets(self.shapes, self.settings.transform, [(h, w) for h, w in shard.image_sizes])
        return records[CaptionPairIndex(shard.caption_counts, self.matched).item_records()]

    def item_order(self, epoch: int, shard: int, count: int) -> np.ndarray:
        """The order shard `shard`'s `count` items are served in: shuffled by (seed, epoch, shard), in batches of
        one bucket with `shapes` (training)."""
        if not self.train:
            return np.arange(count)
        rng = sample_rng(self.settings.seed, epoch, shard, _SHARD_ORDER_STREAM)
        if self.shapes is None:
            return rng.permutation(count)
        batches = bucket_batches(rng, self.item_buckets[shard], self.batch_size)
        return np.asarray([i for batch in batches for i in batch], dtype=np.int64)

    def shard_dataset(self, shard: int) -> ShardCaptionDataset:
        records, images = read_listed_shard(self.index, shard)
        dataset = self.settings.dataset(
            records, images, sum(self.items_per_shard[:shard]), [shard], self.train,  # each shard its own draws
            self.index.shards[shard].caption_counts,
        )  # fmt: skip
        if self.train and self.skip_counter is not None:
            dataset.skip_unreadable(self.skip_counter)  # as in-memory training: the next readable item stands in
        return dataset

    def __iter__(self) -> Iterator[PretrainBatch]:
        workers, worker, state = self.start()
        epoch = state["epoch"]
        shards = self.slot_shards(epoch, self.rank * workers + worker)
        pending: list[PretrainItem] = []
        served = state["batches"]
        for position in range(state["shard"], len(shards)):
            if self.train and served >= self.batches_per_slot:  # (a restored slot may be done: nothing more)
                return
            shard = shards[position]
            dataset = self.shard_dataset(shard)
            order = self.item_order(epoch, shard, len(dataset))
            first = state["offset"] if position == state["shard"] else 0
            for offset in range(first, len(order)):
                pending.append(dataset[(epoch, int(order[offset]))])
                if len(pending) == self.batch_size:
                    served += 1
                    at_end = offset + 1 == len(order)
                    self._state = {
                        "epoch": epoch, "shard": position + at_end, "offset": 0 if at_end else offset + 1,
                        "batches": served,
                    }  # fmt: skip
                    yield self.collate(pending)
                    pending = []
                    if self.train and served >= self.batches_per_slot:
                        return
        if pending and not self.train:
            yield self.collate(pending)


def identity(batch: Any) -> Any:
    """The DataLoader's collate when the dataset yields whole batches (picklable, unlike a lambda)."""
    return batch


def _slot_states(state: Mapping[str, Any]) -> list[Mapping[str, int]]:
    """The `SlotStream` states in a `StatefulDataLoader` state: one per worker (torchdata keeps them in its
    snapshot), or the dataset's own without workers."""
    workers = state.get("_snapshot", {}).get("_worker_snapshots")
    if workers is None:
        return [state["dataset_state"]] if state.get("dataset_state") is not None else []
    return [w["dataset_state"] for w in workers.values() if w.get("dataset_state") is not None]


class EpochStreamLoader(StatefulDataLoader):
    """A `StatefulDataLoader` that tells its `SlotStream` (`ShardStream`, hf_streaming.py's `CaptionBlockStream`) the
    epoch before each iteration starts its workers (Lightning calls `set_epoch` on samplers only, and an iterable
    dataset has none of its own).

    A state saved after the epoch's last batch (every slot done) resumes with the next epoch, as an uninterrupted
    run goes on (Lightning creates the resumed iterator before it moves its epoch on); a slot done while others
    are not serves nothing more that epoch.
    """

    def __init__(self, dataset: SlotStream, epoch_source: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.epoch_source = epoch_source
        self._next_epoch: int | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stream = cast(SlotStream, self.dataset)
        slots = _slot_states(state_dict)
        if stream.train and slots and all(stream.finished(s) for s in slots):
            self._next_epoch = max(int(s["epoch"]) for s in slots) + 1
            return
        super().load_state_dict(state_dict)

    def __iter__(self) -> Any:
        epoch, self._next_epoch = self._next_epoch, None
        cast(SlotStream, self.dataset).set_epoch(self.epoch_source() if epoch is None else epoch)
        return super().__iter__()


def stream_parts(module: Any, train: bool) -> dict[str, Any]:
    """What a pre-training DataModule gives every `SlotStream` it builds: the item settings, the collate, the batch
    size, its rank, workers, skip counter and padded shapes."""
    settings = StreamSettings(
        module.transform, module.tokenizer, module.processing.max_text_length, module.captions_per_image,
        module.mlm_probability, module.mlm_word_probabilities, module.seed,
    )  # fmt: skip
    world, rank = module._ranks()
    return {
        "settings": settings, "train": train, "world_size": world, "rank": rank, "num_workers": module.num_workers,
        "collate": functools.partial(collate_pretrain, pad_token_id=module.tokenizer.pad_token_id,
                                     padding=module.padding),
        "batch_size": module.batch_size if train else module.val_batch_size,
        "skip_counter": module.skip_counter if train else None, "shapes": module.padding.shapes,
    }  # fmt: skip


def warn_unused_image_cache(image_cache_mb: float | None, why: str) -> None:
    """A recipe written for files with its data class swapped for a stream: say the cache does nothing, go on."""
    if image_cache_mb:
        warnings.warn(f"image_cache_mb={image_cache_mb} is not used when streaming: {why}", stacklevel=3)


def stream_loader(module: PixelBertDataModule, stream: SlotStream) -> EpochStreamLoader:
    """The loader of a stream of whole batches, with `module`'s workers, seed and epoch."""
    return EpochStreamLoader(
        stream, module._current_epoch, batch_size=None, collate_fn=identity, num_workers=module.num_workers,
        # A fresh worker per epoch receives the epoch with its copy of the stream.
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        # Worker base seeds from here, not torch's global RNG: starting an epoch leaves dropout's RNG as it was.
        generator=torch.Generator().manual_seed(module.seed),
        worker_init_fn=stop_safe_worker_init(),
    )  # fmt: skip


class StreamingPretrainDataModule(PixelBertDataModule):
    """MLM + ITM pre-training streamed from the Parquet shards `pixelbert-make-shards` writes.

    Args:
        shards: the folder or URL (file://, s3://, gs://, ... through fsspec) holding `<split>.index.json` and the
            shards; converted with the in-memory readers' leak filters.
        train_split: the split trained on.
        val_split: the split validated on (None: no validation).
        captions_per_image: caption rows per item, half of them (rounded down) ITM negatives, as in
            `PretrainDataModule`; an epoch is every image-caption pair of the rank's shards.
        mlm_probability: as `PretrainDataModule`'s.
        mlm_word_probabilities: as `PretrainDataModule`'s.
        **kwargs: `PixelBertDataModule`'s arguments, among them num_workers: DataLoader workers per rank; the
            shards must number at least ranks x max(1, workers), and a multiple of it wastes nothing (every slot
            serves the batches of the smallest share).
    """

    def __init__(
        self,
        shards: str,
        train_split: str = "train",
        val_split: str | None = "val",
        captions_per_image: int = 2,
        mlm_probability: float = 0.15,
        mlm_word_probabilities: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        warn_unused_image_cache(kwargs.get("image_cache_mb"), "shards are read once an epoch")
        # The shared settings (tokenizer, image sizes, batches) are `PixelBertDataModule`'s, by name through **kwargs.
        super().__init__(**kwargs)
        self.shards, self.train_split, self.val_split = shards, train_split, val_split
        self.captions_per_image, self.mlm_probability = captions_per_image, mlm_probability
        self.mlm_word_probabilities = mlm_word_probabilities
        self.indexes: dict[str, ShardIndex] = {}

    def _splits(self, stage: str | None) -> list[str]:
        splits = [self.train_split] if stage in (None, "fit") else []
        val = self.val_split
        return splits + ([val] if val is not None and stage in (None, "fit", "validate", "predict") else [])

    def setup(self, stage: str | None = None) -> None:
        for split in self._splits(stage):
            if split not in self.indexes:
                self.indexes[split] = read_shard_index(self.shards, split)

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        raise ValueError(
            f"{type(self).__name__} reads shards, not annotation files: give pixelbert-make-shards the recipe that "
            "reads the files (e.g. lightning_configs/pretrain/coco_vg_r50.yaml); pixelbert-check-data scans shards"
        )

    def split_indexes(self, stage: str = "fit") -> dict[str, ShardIndex]:
        """The shard index of every split `stage` reads, by split name (what `pixelbert-check-data` scans)."""
        self.setup(stage)
        return {split: self.indexes[split] for split in self._splits(stage)}

    def stream(self, split: str, train: bool) -> ShardStream:
        self.setup("fit" if train else "validate")
        return ShardStream(self.indexes[split], **stream_parts(self, train))

    def train_dataloader(self) -> EpochStreamLoader:
        return stream_loader(self, self.stream(self.train_split, train=True))

    def val_dataloader(self) -> EpochStreamLoader | list[Any]:
        if self.val_split is None:
            return []
        return stream_loader(self, self.stream(self.val_split, train=False))

    def predict_dataloader(self) -> EpochStreamLoader | list[Any]:
        """The validation pairs, matched and not (`pixelbert predict` gives each its ITM probability)."""
        return self.val_dataloader()
