"""Gathering Python objects across processes (strings, CPU tensors of uneven sizes), for epoch-end evaluation."""

from __future__ import annotations

from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


def gather_lists(items: list[T]) -> list[T]:
    """Every process's `items`, concatenated in rank order; `items` itself when not running distributed.

    Pickles through `all_gather_object`, so it suits what torchmetrics cannot reduce: identifiers, ragged shards.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: list[list[T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part or ()]
