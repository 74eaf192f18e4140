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

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.detach().to(torch.float64).sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()
