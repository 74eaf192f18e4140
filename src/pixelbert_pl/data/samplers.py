"""`GroupedEpochKeyedSampler`: a training order in which samples of one group (the questions about one image) come
`group_size` at a time, so that the collate, which gives each distinct image of a batch one row of pixels, runs
the CNN once for the whole run of them.

VQA v2 has 5.4 questions per image. With two questions of an image side by side, a batch of 16 questions holds 8
images and the CNN, most of the fine-tuning step at 800 x 1333, does half the work (measured gain:
benchmarks/results/design_notes.md). The epoch still sees every question once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

import torch

from pixelbert_pl.data.pretraining import EpochKeyedSampler

T = TypeVar("T")


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

        def shuffled(items: list[T]) -> list[T]:
            return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

        k = self.group_size
        runs, leftovers = [], []
        for members in self.groups.values():
            members = shuffled(members)
            whole = len(members) // k * k
            runs += [members[i : i + k] for i in range(0, whole, k)]
            leftovers += members[whole:]
        leftovers = shuffled(leftovers)
        runs += [leftovers[i : i + k] for i in range(0, len(leftovers), k)]
        short = [run for run in runs if len(run) < k]
        runs = shuffled([run for run in runs if len(run) == k]) + short
        return [index for run in runs for index in run]

    def indices(self) -> Iterator[int]:
        return iter(self.order()[self.rank * self.num_samples : (self.rank + 1) * self.num_samples])
