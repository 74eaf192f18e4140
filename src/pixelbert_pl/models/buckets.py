"""Text-length buckets: which rows of a batch share one transformer call, and how much text each call keeps; and
the grouping every padding cut shares: rows grouped by a key (a text length, an image size), run per group, put back.

A batch's text is padded to its longest caption, and the pixel tokens follow the padding, so every row pays for
the longest caption in the batch (a ShapesWorld count: experiments/results/design_notes.md). Splitting the rows into
a few groups of similar length, each trimmed to its own longest caption, removes most of that; since padded keys are
masked, each row's real positions come out the same (`PixelBertModel.forward`, `text_length_buckets`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import torch

K = TypeVar("K", bound=Hashable)


def length_buckets(lengths: Sequence[int], max_buckets: int, extra: int = 0) -> list[tuple[list[int], int]]:
    """Partition rows into at most `max_buckets` groups of contiguous lengths that minimise the padded tokens,
    sum over groups of rows * (longest length in the group + `extra`), `extra` being the tokens every row has
    besides its text (the pixel tokens).

    Returns (row indices, kept text length) per group, shortest group first. The search runs over distinct lengths
    (a few dozen at most), so it costs nothing beside the transformer call it saves.
    """
    if max_buckets < 1:
        raise ValueError(f"max_buckets={max_buckets}: expected >= 1")
    if not lengths:
        return []
    counts = Counter(int(n) for n in lengths)
    values = sorted(counts)
    m, k = len(values), min(max_buckets, len(values))
    prefix = [0]
    for v in values:
        prefix.append(prefix[-1] + counts[v])
    inf = float("inf")
    # cost[g][j]: the fewest padded tokens covering values[:j] with g groups; cut[g][j] where the last group starts.
    cost = [[inf] * (m + 1) for _ in range(k + 1)]
    cut = [[0] * (m + 1) for _ in range(k + 1)]
    cost[0][0] = 0
    for g in range(1, k + 1):
        for j in range(1, m + 1):
            for i in range(g - 1, j):
                c = cost[g - 1][i] + (prefix[j] - prefix[i]) * (values[j - 1] + extra)
                if c < cost[g][j]:
                    cost[g][j], cut[g][j] = c, i
    g = min(range(1, k + 1), key=lambda n: cost[n][m])
    bounds, j = [], m
    while g > 0:
        i = cut[g][j]
        bounds.append((values[i], values[j - 1]))
        j, g = i, g - 1
    groups = []
    for low, high in reversed(bounds):
        rows = [r for r, n in enumerate(lengths) if low <= n <= high]
        groups.append((rows, high))
    return groups


def group_rows(keys: Iterable[K]) -> dict[K, list[int]]:
    """The row indices of each key, keys in first-seen order, rows ascending within a key."""
    groups: dict[K, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return groups


def run_grouped(
    groups: Iterable[tuple[K, Sequence[int]]], run: Callable[..., torch.Tensor], *tensors: torch.Tensor
) -> torch.Tensor:
    """`run(key, *blocks)` once per group, each block a tensor's rows of that group (in the group's row order), the
    results concatenated and put back in the original row order; the groups must cover every row once.

    The rows are put in group order once and split into consecutive blocks: a gather per group would cost, in the
    backward pass, a zero-filled copy of the whole batch per group. Rows already in group order are not moved."""
    groups = list(groups)
    order = [row for _, rows in groups for row in rows]
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"groups hold rows {sorted(order)}: expected each of 0..{len(order) - 1} once")
    moved = order != list(range(len(order)))
    if moved:
        index = torch.tensor(order).to(tensors[0].device, non_blocking=True)
        tensors = tuple(t[index] for t in tensors)
    sizes = [len(rows) for _, rows in groups]
    blocks = zip(*(t.split(sizes) for t in tensors), strict=True)
    out = torch.cat([run(key, *parts) for (key, _), parts in zip(groups, blocks, strict=True)])
    if not moved:
        return out
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    return out[torch.tensor(inverse).to(out.device, non_blocking=True)]


__all__ = ["group_rows", "length_buckets", "run_grouped"]
