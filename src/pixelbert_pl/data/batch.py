"""`PinnableBatch`: lets the DataLoader pin a batch dataclass's tensors.

`DataLoader(pin_memory=True)` pins tensors, mappings and sequences, and any object with a `pin_memory()` method;
a plain dataclass it returns untouched. Unpinned, Lightning's "non-blocking" copy to the GPU is a blocking copy
that first waits for every queued kernel: a host-device sync at the start of every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


class PinnableBatch:
    """Mixin for the batch dataclasses: `pin_memory()` returns a copy whose tensors live in page-locked memory."""

    def pin_memory(self) -> Any:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        pinned = {k: v.pin_memory() for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **pinned)  # type: ignore[type-var]
