"""What the stream tests compare: batches tensor for tensor, and an epoch stopped mid-way and resumed."""

from __future__ import annotations

from typing import Any

import torch


def tensors(batch: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}


def batches_differ(a: list[Any], b: list[Any]) -> int:
    """Batches of `a` and `b` that differ in any tensor (or in number)."""
    if len(a) != len(b):
        return max(len(a), len(b))
    pairs = zip(a, b, strict=True)
    return sum(any(not torch.equal(v, tensors(y)[k]) for k, v in tensors(x).items()) for x, y in pairs)


def resumed(module: Any, stop: int) -> list[Any]:
    """The epoch's batches, stopped after `stop` and the rest from a new loader restored from the state then."""
    first, got = module.train_dataloader(), []
    for batch in first:
        got.append(batch)
        if len(got) == stop:
            state = first.state_dict()
            break
    again = module.train_dataloader()
    again.load_state_dict(state)
    return got + list(again)
