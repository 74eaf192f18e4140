"""`DeviceMean`: a running mean accumulated on the device without reading anything back.

torchmetrics' `MeanMetric` checks every update for NaN with a data-dependent branch: a host-device sync per
training step. Training-step metrics here use this instead.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class DeviceMean(Metric):
    """Mean of every value of every update (NaN before any value); sums are reduced under DDP."""

    full_state_update = False
    # States registered by add_state; declared so that mypy sees tensors rather than Module.__getattr__'s union.
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add `values`; with `weights` (same shape, e.g. a 0/1 mask of the rows that count) a weighted mean, with
        no boolean indexing, which would read the mask's count back from the device."""
        values = values.detach().to(torch.float64)
        if weights is None:
            self.total += values.sum()
            self.count += values.numel()
            return
        if weights.shape != values.shape:
            raise ValueError(f"weights have shape {tuple(weights.shape)}; expected the values' {tuple(values.shape)}")
        weights = weights.detach().to(torch.float64)
        self.total += (values * weights).sum()
        self.count += weights.sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()
