"""Text-length buckets: which rows of a batch share one transformer call, and how much text each call keeps.

A batch's text is padded to its longest caption, and the pixel tokens follow the padding, so every row pays for
the longest caption in the batch (a ShapesWorld count: experiments/results/design_notes.md). Splitting the rows into
a few groups of similar length, each trimmed to its own longest caption, removes most of that; since padded keys are
masked, each row's real positions come out the same (`PixelBertModel.forward`, `text_length_buckets`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


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


__all__ = ["length_buckets"]
