"""`StageMetrics`: one copy of each metric template per stage (train / val / test), updated every step and logged
and reset at each epoch's end, as `{stage}/{name}` (or `{stage}/{name}_{key}` for a metric returning a dict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torchmetrics import Metric

STAGES = ("train", "val", "test")


class StageMetrics(nn.ModuleDict):
    """Keys `{stage}_{name}`: those of the checkpoints' `metrics.` state.

    Args:
        templates: every stage's metrics by name.
        train: training's when they differ (None: the same).
    """

    def __init__(self, templates: dict[str, Metric], train: dict[str, Metric] | None = None) -> None:
        by_stage = {stage: templates for stage in STAGES} | ({"train": train} if train else {})
        super().__init__({f"{s}_{name}": metric.clone() for s in STAGES for name, metric in by_stage[s].items()})

    def of(self, stage: str) -> dict[str, Metric]:
        prefix = f"{stage}_"
        return {k[len(prefix) :]: cast(Metric, m) for k, m in self.items() if k.startswith(prefix)}

    def log_and_reset(self, stage: str, log: Callable[..., Any]) -> None:
        """Compute each of `stage`'s metrics, `log(name, value, prog_bar=...)` it and reset it; a metric with no
        update this epoch is skipped, and so is a value that is all NaN (an answer type absent from the split)."""
        for name, metric in self.of(stage).items():
            if metric.update_count == 0:
                continue
            value = metric.compute()
            for key, v in (value if isinstance(value, dict) else {"": value}).items():
                if not (torch.is_tensor(v) and v.isnan().all()):
                    log(f"{stage}/{name}_{key}" if key else f"{stage}/{name}", v, prog_bar=stage == "val" and not key)
            metric.reset()
