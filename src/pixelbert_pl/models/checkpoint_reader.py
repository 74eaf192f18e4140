"""Reading what `pixelbert fit` saves (Lightning checkpoints) and what `init_from` names, without Lightning and
without running code from the files: `Predictor` and the tasks both read checkpoints through here."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from pixelbert_pl.models import pretrained
from pixelbert_pl.models.layouts import task_model_state
from pixelbert_pl.models.task_model import PixelBertTaskModel
from pixelbert_pl.models.weights import load_torch_file, read_weights
from pixelbert_pl.processing import split_processing
from pixelbert_pl.processing.config import plain

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "pixelbert"  # a checkpoint's model config, processing, tokenizer and task model (`PixelBertTask`)


def load_checkpoint(path: str | os.PathLike[str], setting: str = "checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint loaded with `weights_only=True`: nothing in the file can run code (checkpoints hold
    tensors and plain values only). Errors name the file (`setting`: the option that named it)."""
    checkpoint = load_torch_file(path, setting)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{setting}={str(path)!r} holds no 'state_dict': expected a checkpoint `pixelbert fit` "
                         "wrote (a bare state_dict or an export serves init_from instead)")  # fmt: skip
    return checkpoint


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The task-model weights (`model.*` for the backbone, then the heads) `init_from` names: a Lightning `.ckpt`,
    an export directory (`pixelbert-export`, `save_pretrained`), a `.safetensors` file or a plain state_dict."""
    directory = Path(path).expanduser()
    if directory.is_dir() and (directory / pretrained.WEIGHTS_NAME).is_file():
        state = {f"model.{k}": v for k, v in pretrained.load_tensors(directory / pretrained.WEIGHTS_NAME).items()}
        if (directory / pretrained.HEADS_NAME).is_file():
            state.update(pretrained.load_tensors(directory / pretrained.HEADS_NAME))
        return state
    return task_model_state(read_weights(path, "init_from"))


def source_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The architecture (`PixelBertConfig` fields) a checkpoint or an export was trained with, if it says."""
    directory = Path(path).expanduser()
    if directory.is_dir():
        return split_processing(pretrained.read_config(directory)["model"])[0]
    if directory.suffix == ".safetensors":
        return None  # tensors only
    saved = load_torch_file(path, "init_from")
    config = saved.get(CHECKPOINT_KEY, {}).get("config") if isinstance(saved, dict) else None
    return split_processing(config)[0] if isinstance(config, dict) else None


def init_from(net: PixelBertTaskModel, path: str | os.PathLike[str]) -> tuple[int, list[str]]:
    """Start `net` from another task model's weights: the whole backbone must be there with the same shapes (a
    different tokenizer or preset is an error, not a silent partial load); heads follow `net.init_heads_from`, and
    a head of `net.init_heads` that none fits is warned about. Returns (backbone tensors loaded, heads copied)."""
    state = read_state_dict(path)
    backbone = {k: v for k, v in state.items() if k.startswith("model.")}
    own = {k: v for k, v in net.state_dict().items() if k.startswith("model.")}
    missing = sorted(set(own) - set(backbone))
    if missing:
        raise ValueError(f"init_from={str(path)!r} lacks {len(missing)} backbone tensors, e.g. {missing[:3]}"
                         f"{_config_differences(net, path)}")  # fmt: skip
    for key, value in own.items():
        if value.shape != backbone[key].shape:
            raise ValueError(
                f"init_from={str(path)!r}: {key} has shape {tuple(backbone[key].shape)}, this task's model "
                f"{tuple(value.shape)}{_config_differences(net, path)}; use the same preset, model_overrides and "
                "tokenizer as pre-training"
            )
    net.load_state_dict({k: backbone[k] for k in own}, strict=False)
    heads = net.init_heads_from(state)
    log.info("init_from %s: backbone (%d tensors) and heads %s", path, len(own), heads or "none")
    copied = {name.split(".")[0].split(" ")[0] for name in heads}
    if wanted := [h for h in net.init_heads if getattr(net, h, None) is not None and h not in copied]:
        theirs = sorted({k.split(".")[0] for k in state if not k.startswith("model.")})
        log.warning("init_from %s: nothing in it fits %s's %s, which start from random weights (its heads: %s; a "
                    "pre-training checkpoint is expected)", path, type(net).__name__, wanted, theirs)  # fmt: skip
    return len(own), heads


def _config_differences(net: PixelBertTaskModel, path: str | os.PathLike[str]) -> str:
    """The architecture fields in which `path`'s model and `net`'s differ, for an error message."""
    theirs = source_config(path)
    if theirs is None:
        return " (it records no model config to compare)"
    ours = net.model.config.to_dict()
    weights = ("text_encoder", "visual_weights")  # where weights came from, not the architecture
    differ = {k: {"init_from": v, "this task": ours[k]} for k, v in theirs.items()
              if k in ours and k not in weights and plain(v) != plain(ours[k])}  # fmt: skip
    return f"; the model configs differ in {differ}" if differ else ""
