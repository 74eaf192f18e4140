"""length_buckets: the grouping is optimal, covers every row once, and respects the bucket budget; run_grouped runs
each group on its rows and gives the results back in the original row order."""

import itertools
import random

import pytest
import torch

from pixelbert_pl.models.buckets import group_rows, length_buckets, run_grouped


def padded_tokens(groups, extra):
    return sum(len(rows) * (width + extra) for rows, width in groups)


def brute_force(lengths, max_buckets, extra):
    """The fewest padded tokens over every way to cut the sorted distinct lengths into <= max_buckets runs."""
    values = sorted(set(lengths))
    best = None
    for k in range(1, min(max_buckets, len(values)) + 1):
        for cuts in itertools.combinations(range(1, len(values)), k - 1):
            bounds = [0, *cuts, len(values)]
            cost = 0
            for i, j in itertools.pairwise(bounds):
                rows = [n for n in lengths if values[i] <= n <= values[j - 1]]
                cost += len(rows) * (values[j - 1] + extra)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_grouping_is_optimal_and_covers_every_row_once(seed) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 30))]
    max_buckets, extra = rng.randint(1, 4), rng.randint(0, 10)
    groups = length_buckets(lengths, max_buckets, extra)
    assert 1 <= len(groups) <= max_buckets
    assert sorted(r for rows, _ in groups for r in rows) == list(range(len(lengths)))
    for rows, width in groups:
        assert width == max(lengths[r] for r in rows)
    assert [w for _, w in groups] == sorted(w for _, w in groups)
    assert padded_tokens(groups, extra) == brute_force(lengths, max_buckets, extra)


def test_one_bucket_keeps_every_row_at_the_longest_length() -> None:
    assert length_buckets([3, 7, 5], 1) == [([0, 1, 2], 7)]


def test_two_buckets_split_short_from_long_captions() -> None:
    # 6 short rows and 2 long ones, 24 pixel tokens each: trimming the short ones saves 6 * (24 - 10) tokens.
    lengths = [10, 24, 9, 10, 8, 24, 10, 7]
    assert length_buckets(lengths, 2, extra=24) == [([0, 2, 3, 4, 6, 7], 10), ([1, 5], 24)]


def test_bad_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_buckets=0"):
        length_buckets([1, 2], 0)
    assert length_buckets([], 3) == []


def test_group_rows_keeps_first_seen_key_order() -> None:
    assert group_rows(["b", "a", "b", "c", "a"]) == {"b": [0, 2], "a": [1, 4], "c": [3]}
    assert list(group_rows([(2, 1), (1, 2), (2, 1)])) == [(2, 1), (1, 2)]


@pytest.mark.parametrize("keys", [[2, 0, 1, 2, 0, 0, 1], [0, 0, 1, 1, 2], [5, 5, 5]])
def test_run_grouped_runs_each_group_alone_and_restores_row_order(keys) -> None:
    x = torch.randn(len(keys), 4, requires_grad=True)
    y = torch.arange(len(keys))
    seen = []

    def run(key, rows, ids):
        seen.append((key, ids.tolist()))
        return rows * (key + 1) + ids[:, None]

    out = run_grouped(group_rows(keys).items(), run, x, y)
    assert seen == [(key, rows) for key, rows in group_rows(keys).items()]  # each group its own rows, in order
    expected = x * (torch.tensor(keys)[:, None] + 1) + y[:, None]
    assert torch.equal(out, expected)
    out.sum().backward()
    assert torch.equal(x.grad, (torch.tensor(keys, dtype=x.dtype)[:, None] + 1).expand_as(x))


def test_run_grouped_moves_nothing_when_rows_come_in_group_order(monkeypatch) -> None:
    x = torch.randn(5, 3)
    gathers = []
    getitem = torch.Tensor.__getitem__

    def recording(self, index):
        if isinstance(index, torch.Tensor):
            gathers.append(index.tolist())
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", recording)
    run_grouped([("a", [0, 1]), ("b", [2, 3, 4])], lambda key, rows: rows, x)
    assert gathers == []
    run_grouped([("a", [1, 3]), ("b", [0, 2, 4])], lambda key, rows: rows, x)
    assert gathers == [[1, 3, 0, 2, 4], [2, 0, 3, 1, 4]]  # into group order once, and back by the inverse


def test_run_grouped_refuses_groups_that_miss_or_repeat_a_row() -> None:
    with pytest.raises(ValueError, match=r"each of 0\.\.2 once"):
        run_grouped([("a", [0, 0]), ("b", [2])], lambda key, rows: rows, torch.zeros(3))
