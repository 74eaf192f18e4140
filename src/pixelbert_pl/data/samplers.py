"""The samplers of every DataModule: they yield (epoch, index) keys, so a sample's randomness follows from its key.

`EpochKeyedSampler`: DDP's shuffle with equal training shares and disjoint evaluation shares, stateful for exact
mid-epoch resume. `GroupedEpochKeyedSampler`: samples of one group (the
questions about one image) come `group_size` at a time, so that the collate, which gives each distinct image of a
batch one row of pixels, runs the CNN once for the whole run of them. `BucketedEpochKeyedSampler`: batches of one
padded-shape bucket (`processing/shapes.py`), so that compiled and CUDA graphs hold for the whole epoch.

VQA v2 has 5.4 questions per image. With two questions of an image side by side, a batch of 16 questions holds 8
images and the CNN, most of the fine-tuning step at 800 x 1333, does half the work (measured gain:
benchmarks/results/design_notes.md). The epoch still sees every question once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

import torch
from torch.utils.data import DistributedSampler

from pixelbert_pl.data.records import RecordDataset
from pixelbert_pl.processing import ProcessingConfig, resize_shape
from pixelbert_pl.processing.images import UnreadableImageError, image_size
from pixelbert_pl.processing.shapes import PadShapes

T = TypeVar("T")
log = logging.getLogger(__name__)


class EpochKeyedSampler(DistributedSampler):
    """A `DistributedSampler` that yields (epoch, index) keys.

    Being a DistributedSampler, Lightning leaves it in place under DDP; it gives every rank the same number of
    samples (drop_last drops the uneven tail, else the tail is padded by repetition). `unrepeated=True` (for
    evaluation) gives each rank a disjoint share with no padding instead, so no sample is counted twice.

    It is stateful (`state_dict` / `load_state_dict`: the epoch and the samples yielded): torchdata's
    `StatefulDataLoader` snapshots that with each batch it hands over, workers' prefetch notwithstanding, and
    Lightning keeps the snapshot in its checkpoints, so a resumed run goes on with the batch after the last one used.

    `epoch_source` (the DataModules pass `trainer.current_epoch`) replaces the epoch `set_epoch` is given: Lightning
    2.6 passes its count of processed epochs, which a resume from a checkpoint saved in `on_train_epoch_end` leaves
    one ahead for the rest of the run (it replays that epoch's end), so every later epoch would be shuffled as the
    next one.
    """

    def __init__(
        self,
        dataset: Sequence[object],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        unrepeated: bool = False,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]  # DistributedSampler reads only len(dataset)
            num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last,
        )  # fmt: skip
        self.unrepeated = unrepeated
        if unrepeated:
            self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.epoch_source = epoch_source
        self.yielded = 0  # of the current iteration's samples, as the main process's iterator has drawn them
        self._iterating: int | None = None  # the epoch being iterated, once an iteration has started
        self._start = 0  # where the next iteration begins (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(self.epoch_source() if self.epoch_source is not None else epoch)

    def indices(self) -> Iterator[int]:
        """This rank's indices for the current epoch, in order (subclasses change the order here)."""
        if self.unrepeated:
            return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
        return super().__iter__()

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        start, self._start = self._start, 0
        self.yielded, self._iterating = start, self.epoch
        epoch = self.epoch
        for index in islice(self.indices(), start, None):
            self.yielded += 1
            yield epoch, index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch if self._iterating is None else self._iterating, "yielded": self.yielded}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        if yielded >= len(self):
            # Saved at an epoch's last batch: the next iteration is the next epoch's (Lightning creates the resumed
            # iterator, and workers prefetch from it, before it calls set_epoch).
            epoch, yielded = epoch + 1, 0
        self.epoch, self._start, self._iterating, self.yielded = epoch, yielded, None, yielded


def grouped_runs(groups: Iterable[list[int]], k: int, generator: torch.Generator) -> list[list[int]]:
    """Runs of `k` indices of one group each: every group's members shuffled and cut into runs of `k`, the members
    left over (a group of 5 leaves 1 for runs of 2) shuffled together and cut into runs too, the whole runs
    shuffled and the short one, if any, last. The draws come from `generator`, in that order."""

    def shuffled(items: list[T]) -> list[T]:
        return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

    runs, leftovers = [], []
    for members in groups:
        members = shuffled(members)
        whole = len(members) // k * k
        runs += [members[i : i + k] for i in range(0, whole, k)]
        leftovers += members[whole:]
    leftovers = shuffled(leftovers)
    runs += [leftovers[i : i + k] for i in range(0, len(leftovers), k)]
    short = [run for run in runs if len(run) < k]
    return shuffled([run for run in runs if len(run) == k]) + short


class GroupedEpochKeyedSampler(EpochKeyedSampler):
    """Yields (epoch, index) keys, shuffled by (seed, epoch), in runs of `group_size` indices of one group.

    Each epoch: every group's members are shuffled and cut into runs of `group_size`; the members left over (a group
    of 5 leaves 1 for runs of 2) are shuffled together and cut into runs too, so every run but possibly one has
    exactly `group_size` indices; the runs are shuffled and the short one, if any, goes last, so that runs never
    straddle a batch whose size is a multiple of `group_size`. Under DDP each rank takes a contiguous share of that
    order (the same number of samples on every rank, the uneven tail dropped), which keeps runs whole except at the
    share boundaries.
    """

    def __init__(
        self,
        dataset: Sequence[object],
        group_keys: Sequence[Hashable],
        group_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        if len(group_keys) != len(dataset):
            raise ValueError(f"{len(group_keys)} group keys for {len(dataset)} samples: expected one per sample")
        if group_size < 1:
            raise ValueError(f"group_size={group_size}: expected >= 1")
        super().__init__(
            dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True, epoch_source=epoch_source
        )
        self.group_size = group_size
        self.groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(group_keys):
            self.groups.setdefault(key, []).append(index)

    def order(self) -> list[int]:
        """This epoch's order of every index (before the split among ranks)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return [index for run in grouped_runs(self.groups.values(), self.group_size, generator) for index in run]

    def indices(self) -> Iterator[int]:
        return iter(self.order()[self.rank * self.num_samples : (self.rank + 1) * self.num_samples])


def cut_bucket_batches(members: Iterable[list[int]], batch_size: int) -> list[list[int]]:
    """Batches of `batch_size` from each bucket's (shuffled) indices, given in bucket order: each bucket's whole
    batches, then what the buckets leave over cut in that order (a mixed batch spans neighbouring buckets), the
    last partial batch dropped. `bucket_batch_count` says how many."""
    batches, leftovers = [], []
    for flat in members:
        whole = len(flat) // batch_size * batch_size
        batches += [flat[i : i + batch_size] for i in range(0, whole, batch_size)]
        leftovers += flat[whole:]
    batches += [leftovers[i : i + batch_size] for i in range(0, len(leftovers) // batch_size * batch_size, batch_size)]
    return batches


def bucket_batch_count(counts: Sequence[int], batch_size: int) -> int:
    """The batches `cut_bucket_batches` makes of buckets of these sizes."""
    return sum(n // batch_size for n in counts) + sum(n % batch_size for n in counts) // batch_size


class BucketedEpochKeyedSampler(EpochKeyedSampler):
    """Yields (epoch, index) keys in which each `batch_size` consecutive keys are one batch, of one padded-shape
    bucket wherever the bucket's count allows: the collate pads it to that bucket's shape (`PadShapes`), so the
    padding is small and a run meets few shapes.

    Each epoch, shuffled by (seed, epoch): every bucket's indices (in runs of `group_size` of one group when
    `group_keys` are given, as `GroupedEpochKeyedSampler`) are cut into whole batches; what each bucket leaves
    over is cut into batches in bucket order, so a mixed batch spans neighbouring buckets (one orientation, where
    the counts allow); the batches are shuffled and dealt to the ranks in turn, each rank the same number (the
    remainder dropped). The batch count depends on the buckets' sizes alone, so it is the same every epoch, and
    the state is `EpochKeyedSampler`'s (epoch, keys yielded): a resumed run goes on with the next batch.
    """

    def __init__(
        self,
        dataset: Sequence[object],
        buckets: Sequence[int],
        batch_size: int,
        group_keys: Sequence[Hashable] | None = None,
        group_size: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        if len(buckets) != len(dataset) or (group_keys is not None and len(group_keys) != len(dataset)):
            raise ValueError(f"{len(buckets)} buckets for {len(dataset)} samples: expected one per sample")
        if batch_size < 1 or group_size < 1:
            raise ValueError(f"batch_size={batch_size}, group_size={group_size}: expected >= 1")
        super().__init__(
            dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True, epoch_source=epoch_source
        )
        self.batch_size, self.group_size = batch_size, group_size
        # bucket -> its indices, in bucket order (neighbouring buckets share an orientation).
        self.members: dict[int, list[int]] = {}
        for index in sorted(range(len(buckets)), key=buckets.__getitem__):
            self.members.setdefault(int(buckets[index]), []).append(index)
        self.group_keys = group_keys
        whole = bucket_batch_count([len(members) for members in self.members.values()], batch_size)
        self.batches_per_rank = whole // num_replicas
        self.num_samples = self.batches_per_rank * batch_size
        self.total_size = self.num_samples * num_replicas

    def _shuffled(self, members: list[int], generator: torch.Generator) -> list[int]:
        if self.group_keys is None:
            return [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        groups: dict[Hashable, list[int]] = {}
        for index in members:
            groups.setdefault(self.group_keys[index], []).append(index)
        return [index for run in grouped_runs(groups.values(), self.group_size, generator) for index in run]

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order (before they are dealt to the ranks)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        shuffled = [self._shuffled(members, generator) for members in self.members.values()]
        batches = cut_bucket_batches(shuffled, self.batch_size)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def indices(self) -> Iterator[int]:
        mine = self.batches()[self.rank :: self.num_replicas][: self.batches_per_rank]
        return iter([index for batch in mine for index in batch])


def item_buckets(
    dataset: RecordDataset[Any], processing: ProcessingConfig, shapes: PadShapes, threads: int = 16
) -> list[int]:
    """Each item's `PadShapes` bucket: that of the resized sizes of its record's images (`image_paths`), from the
    dataset's `image_sizes` where the data gives them, else read from the image headers (no pixel decoded) in
    `threads` threads, since file reads wait on the disk, not the CPU. A record whose image cannot be read goes
    to the fallback bucket: its substitute may be any size."""
    p = processing
    data, known = dataset.image_bytes, dataset.image_sizes or {}

    @functools.cache  # VQA: 5.4 questions, one file an image
    def header(path: str) -> tuple[int, int]:
        if path in known:
            height, width = known[path]
            if height > 0 and width > 0:
                return height, width
            raise UnreadableImageError(path, "its size could not be read")
        return image_size(path, None if data is None else data.get(path))

    def bucket(index: int) -> int:
        try:
            sizes = [header(path) for path in dataset.image_paths(dataset.records[index])]
        except UnreadableImageError:
            return len(shapes) - 1
        resized = [resize_shape(h, w, p.image_min_size, p.image_max_size, p.size_divisor) for h, w in sizes]
        return shapes.bucket(max(h for h, _ in resized), max(w for _, w in resized))

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        per_record = list(pool.map(bucket, range(len(dataset.records)), chunksize=256))
    log.info("read the sizes of %d records' images in %.1f s", len(per_record), time.perf_counter() - start)
    return [per_record[record] for record in dataset.item_records()]
