"""`MaskedMean`: the mean of the entries a mask selects, accumulated on the device without reading anything back.

torchmetrics' `MeanMetric` checks every update for NaN with a data-dependent branch (a host-device sync per
training step), and its `nan_strategy="disable"` drops the weights; selecting entries with a boolean index would
sync too. Training-step metrics here take the whole tensor and a mask instead.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MaskedMean(Metric):
    """Mean of `values[mask]` over every update (NaN when nothing was selected); sums are reduced under DDP."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        values = values.detach().to(torch.float64)
        weights = torch.ones_like(values) if mask is None else mask.to(torch.float64)
        self.total += (values * weights).sum()
        self.count += weights.sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()
