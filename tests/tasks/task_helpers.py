"""Helpers shared by the task tests (imported by name: pytest keeps one `conftest` module per name)."""

from __future__ import annotations

import torch

SMALL = {"batch_size": 4, "num_workers": 0, "image_min_size": 96, "image_max_size": 96}


def all_parameters_have_gradients(task: torch.nn.Module) -> list[str]:
    """Names of trainable parameters that got no gradient or a non-finite one."""
    return [
        name
        for name, p in task.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
