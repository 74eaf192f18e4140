"""Reading weight files without running code from them: safetensors, or torch files with `weights_only=True`."""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from pathlib import Path

import torch


def read_weights(path: str | os.PathLike[str], setting: str, allowed: Sequence[type] = ()) -> dict[str, torch.Tensor]:
    """A state_dict from a `.safetensors` file, a torch state_dict file or a Lightning checkpoint (its `state_dict`).

    Args:
        setting: the option that named the file (e.g. "init_from"), for error messages.
        allowed: non-tensor classes the pickle may hold besides torch's own (a checkpoint's hyper-parameters).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{setting}={str(path)!r}: no such weights or checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals(list(allowed)):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{setting}={str(path)!r}: expected a state_dict or a Lightning checkpoint")
    return state


def weights_name(weights: str | enum.Enum | None) -> str | None:
    """A torchvision WeightsEnum member (ResNet50_Weights.IMAGENET1K_V2) as its qualified name, so configs and
    checkpoints hold plain text and the trunk can check the enum belongs to its backbone; other values as given."""
    if isinstance(weights, enum.Enum):
        return f"{type(weights).__name__}.{weights.name}"
    return weights
