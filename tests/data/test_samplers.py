"""GroupedEpochKeyedSampler: questions of one image come together, every question once per epoch, equal shares
per rank, the order a function of (seed, epoch); BucketedEpochKeyedSampler: batches of one padded-shape bucket,
likewise equal and resumable; the samplers' state resumes a StatefulDataLoader, workers or not."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from pixelbert_pl.data.samplers import BucketedEpochKeyedSampler, EpochKeyedSampler, GroupedEpochKeyedSampler

# 9 images with 1 to 5 questions each: 27 questions.
KEYS = [image for image, count in enumerate([3, 5, 1, 4, 2, 5, 3, 2, 2]) for _ in range(count)]


def _indices(sampler: GroupedEpochKeyedSampler, epoch: int = 0) -> list[int]:
    sampler.set_epoch(epoch)
    keys = list(sampler)
    assert {e for e, _ in keys} == {epoch}
    return [i for _, i in keys]


def test_each_question_once_in_runs_of_one_image_with_the_short_run_last() -> None:
    sampler = GroupedEpochKeyedSampler(KEYS, KEYS, group_size=2)
    order = sampler.order()
    assert sorted(order) == list(range(len(KEYS)))
    runs = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert len(runs[-1]) == 1  # 27 questions: one run is short, and it is the last
    # Leftovers of odd-sized groups (images 0, 1, 2, 5, 6: one each) are paired across images; the rest share one.
    shared = [run for run in runs if len(run) == 2 and KEYS[run[0]] == KEYS[run[1]]]
    assert len(shared) == sum(count // 2 for count in Counter(KEYS).values()) == 11
    # What a rank yields is the order cut to equal shares (drop_last): 27 // 1 = 27 here.
    assert _indices(sampler) == order


def test_order_follows_seed_and_epoch() -> None:
    a = GroupedEpochKeyedSampler(KEYS, KEYS, group_size=2, seed=3)
    b = GroupedEpochKeyedSampler(KEYS, KEYS, group_size=2, seed=3)
    assert _indices(a, 0) == _indices(b, 0)
    assert _indices(a, 1) != _indices(a, 0)
    assert _indices(GroupedEpochKeyedSampler(KEYS, KEYS, group_size=2, seed=4), 0) != _indices(a, 0)


def test_two_ranks_get_equal_disjoint_shares_and_resume_skips() -> None:
    shares = [_indices(GroupedEpochKeyedSampler(KEYS, KEYS, 2, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 13
    assert not set(shares[0]) & set(shares[1])
    resumed = GroupedEpochKeyedSampler(KEYS, KEYS, 2, num_replicas=2, rank=1, seed=1)
    resumed.load_state_dict({"epoch": 0, "yielded": 4})
    assert _indices(resumed) == shares[1][4:]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="3 group keys for 27 samples"):
        GroupedEpochKeyedSampler(KEYS, KEYS[:3], group_size=2)
    with pytest.raises(ValueError, match="group_size=0"):
        GroupedEpochKeyedSampler(KEYS, KEYS, group_size=0)


class _Keys(torch.utils.data.Dataset):
    """Returns the sampler's (epoch, index) key itself, so a batch shows exactly what was drawn."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, key):
        return torch.tensor(key)


def _loader(sampler_cls, workers: int) -> StatefulDataLoader:
    sampler = sampler_cls(_Keys(), num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
    return StatefulDataLoader(_Keys(), batch_size=4, sampler=sampler, num_workers=workers, drop_last=True)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop_after", [3, 10], ids=["mid_epoch", "epoch_end"])
def test_a_loader_restored_from_its_state_goes_on_with_the_next_batch(workers, stop_after) -> None:
    """The state taken after `stop_after` batches (workers prefetching ahead) continues with batch `stop_after + 1`;
    saved after an epoch's last batch it starts the next epoch."""
    expected = []
    reference = _loader(EpochKeyedSampler, workers)
    for epoch in range(2):
        reference.sampler.set_epoch(epoch)
        expected += [b.tolist() for b in reference]
    first = _loader(EpochKeyedSampler, workers)
    seen, state = [], None
    for i, batch in enumerate(first):
        seen.append(batch.tolist())
        if i + 1 == stop_after:
            state = first.state_dict()
            break
    resumed = _loader(EpochKeyedSampler, workers)
    resumed.load_state_dict(state)
    rest = [b.tolist() for b in resumed]
    if stop_after == 10:  # the epoch was complete: the restored loader is the next epoch's
        assert rest == expected[10:]
    else:
        assert seen + rest == expected[:10]


def test_epoch_source_overrides_the_epoch_lightning_passes() -> None:
    current = {"epoch": 2}
    sampler = EpochKeyedSampler(list(range(8)), shuffle=True, epoch_source=lambda: current["epoch"])
    sampler.set_epoch(3)  # Lightning's processed-epoch count, one ahead after a resume from an epoch-end hook
    assert {epoch for epoch, _ in sampler} == {2}
    grouped = GroupedEpochKeyedSampler(KEYS, KEYS, 2, epoch_source=lambda: current["epoch"])
    grouped.set_epoch(5)
    assert grouped.state_dict()["epoch"] == 2


# 7 buckets of uneven sizes (bucket 3 the commonest, as 4:3 landscapes are on COCO): 101 samples.
BUCKETS = [b for b, n in enumerate([9, 14, 6, 41, 17, 8, 6]) for _ in range(n)]


def _batches(sampler: BucketedEpochKeyedSampler, epoch: int = 0) -> list[list[int]]:
    indices = _indices(sampler, epoch)  # type: ignore[arg-type]
    size = sampler.batch_size
    assert len(indices) == len(sampler) and len(indices) % size == 0
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def test_bucketed_batches_hold_one_bucket_but_for_the_leftovers() -> None:
    sampler = BucketedEpochKeyedSampler(BUCKETS, BUCKETS, batch_size=4, seed=2)
    batches = _batches(sampler)
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))  # each sample at most once an epoch
    # Whole batches per bucket (2+3+1+10+4+2+1 = 23), then the 9 leftovers cut in bucket order: 2 more, 1 dropped.
    assert len(batches) == 25 and len(flat) == 101 - 1
    mixed = [batch for batch in batches if len({BUCKETS[i] for i in batch}) > 1]
    assert len(mixed) <= 2
    # The leftovers were cut in bucket order: the mixed batches span consecutive, non-overlapping bucket ranges.
    spans = sorted((min(BUCKETS[i] for i in b), max(BUCKETS[i] for i in b)) for b in mixed)
    assert all(first[1] <= second[0] for first, second in itertools.pairwise(spans))
    assert _batches(sampler, 1) != batches and len(_batches(sampler, 1)) == len(batches)


def test_bucketed_ranks_get_equal_disjoint_batches_and_resume_with_the_next() -> None:
    shares = [_batches(BucketedEpochKeyedSampler(BUCKETS, BUCKETS, 4, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 12  # 25 batches: 12 each, one dropped
    assert not {i for b in shares[0] for i in b} & {i for b in shares[1] for i in b}
    resumed = BucketedEpochKeyedSampler(BUCKETS, BUCKETS, 4, num_replicas=2, rank=1, seed=1)
    resumed.load_state_dict({"epoch": 0, "yielded": 8})
    assert _indices(resumed) == [i for b in shares[1][2:] for i in b]  # type: ignore[arg-type]


def test_bucketed_runs_keep_an_images_questions_together_within_its_bucket() -> None:
    keys = KEYS * 2  # 18 images' questions; an image's bucket is its questions' bucket
    buckets = [key % 3 for key in keys]
    sampler = BucketedEpochKeyedSampler(keys, buckets, batch_size=4, group_keys=keys, group_size=2, seed=0)
    batches = _batches(sampler)
    pairs = [batch[i : i + 2] for batch in batches for i in (0, 2)]
    shared = sum(keys[a] == keys[b] for a, b in pairs)
    assert shared >= len(pairs) - 6  # the runs mixing images are only each bucket's leftovers
    assert sum(len({buckets[i] for i in batch}) == 1 for batch in batches) >= len(batches) - 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bucketed_loader_restored_from_its_state_goes_on_with_the_next_batch(workers) -> None:
    buckets = [i % 2 for i in range(40)]  # 20 each: every batch one bucket

    def loader() -> StatefulDataLoader:
        sampler = BucketedEpochKeyedSampler(_Keys(), buckets, 4, seed=5)
        return StatefulDataLoader(_Keys(), batch_size=4, sampler=sampler, num_workers=workers, drop_last=True)

    expected = [b.tolist() for b in loader()]
    first = loader()
    seen = []
    for batch in first:
        seen.append(batch.tolist())
        if len(seen) == 3:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + [b.tolist() for b in resumed] == expected
    assert all(len({buckets[int(i)] for _, i in batch}) == 1 for batch in expected)


def test_bucketed_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="3 buckets for 101 samples"):
        BucketedEpochKeyedSampler(BUCKETS, BUCKETS[:3], batch_size=4)
    with pytest.raises(ValueError, match="batch_size=0"):
        BucketedEpochKeyedSampler(BUCKETS, BUCKETS, batch_size=0)
