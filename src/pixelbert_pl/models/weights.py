"""Reading weight files without running code from them: safetensors, or torch files with `weights_only=True`."""

from __future__ import annotations

import enum
import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def load_torch_file(path: str | os.PathLike[str], setting: str, allowed: Sequence[type] = ()) -> Any:
    """`torch.load(weights_only=True)` of a file a user named in `setting`, with errors that name the file and say
    what was expected: torch's own give no file name, and for a refused object advise `weights_only=False`, which
    would run whatever a downloaded file holds."""
    path = Path(path).expanduser()
    if path.is_dir():
        hint = " (an export: Predictor.from_pretrained reads it)" if (path / "config.json").is_file() else ""
        raise IsADirectoryError(f"{setting}={str(path)!r} is a directory{hint}; expected a checkpoint file (.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"{setting}={str(path)!r}: no such checkpoint or weights file")
    if path.stat().st_size == 0:
        raise ValueError(f"{setting}={str(path)!r} is empty (0 bytes): a save cut short or a failed copy")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found is None and not zipfile.is_zipfile(path):
            raise ValueError(f"{setting}={str(path)!r} is not a torch checkpoint (not the zip archive torch.save "
                             "writes): copy or download it again, or use another checkpoint") from None  # fmt: skip
        what = found.group(1) if found else "an object other than tensors and plain values"
        raise pickle.UnpicklingError(
            f"{setting}={str(path)!r} holds {what}: refused, because unpickling it could run code. A checkpoint holds "
            "only tensors and plain values; do not load this file with weights_only=False unless you wrote it"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{setting}={str(path)!r} is truncated or not a torch checkpoint ({type(error).__name__}: "
            f"{str(error).split('. ')[0][:160]}): copy or download it again, or use another checkpoint"
        ) from error
    except Exception as error:
        if zipfile.is_zipfile(path):
            raise
        # Garbage that is not torch's zip goes to its legacy pickle reader, which fails in many ways (IndexError,
        # KeyError, UnicodeDecodeError): none names the file.
        raise ValueError(f"{setting}={str(path)!r} is not a torch checkpoint (not the zip archive torch.save "
                         "writes): copy or download it again, or use another checkpoint") from error  # fmt: skip


def read_weights(path: str | os.PathLike[str], setting: str, allowed: Sequence[type] = ()) -> dict[str, torch.Tensor]:
    """A state_dict from a `.safetensors` file, a torch state_dict file or a Lightning checkpoint (its `state_dict`).

    Args:
        setting: the option that named the file (e.g. "init_from"), for error messages.
        allowed: non-tensor classes the pickle may hold besides torch's own (a checkpoint's hyper-parameters).
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    state = load_torch_file(path, setting, allowed)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{setting}={str(path)!r}: expected a state_dict, or a Lightning checkpoint holding one")
    return state


def weights_name(weights: str | enum.Enum | None) -> str | None:
    """A torchvision WeightsEnum member (ResNet50_Weights.IMAGENET1K_V2) as its qualified name, so configs and
    checkpoints hold plain text and the trunk can check the enum belongs to its backbone; other values as given."""
    if isinstance(weights, enum.Enum):
        return f"{type(weights).__name__}.{weights.name}"
    return weights
