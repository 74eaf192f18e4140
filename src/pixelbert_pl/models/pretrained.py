"""Shareable weights: a directory with `config.json`, `model.safetensors` and the tokenizer's files.

The config holds every `PixelBertConfig` field and, under "processing", every `ProcessingConfig` field, so resizing,
normalisation and text length come back exactly as the model was trained; the tokenizer travels with the weights,
so a loaded model needs neither the training data nor the network. Extra entries (a task's name, its answer
vocabulary) and extra tensor files (task heads) ride along. Nothing is unpickled: weights are safetensors, the
config is JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pixelbert_pl.models.config import PixelBertConfig
from pixelbert_pl.models.layouts import legacy_task
from pixelbert_pl.processing import ProcessingConfig, split_processing

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HEADS_NAME = "heads.safetensors"  # a task's heads beside the model, in an export of a task
FORMAT = "pixelbert_pl"


def resolve_directory(name_or_dir: str | os.PathLike[str]) -> Path:
    """A local directory as is; anything else is a Hugging Face Hub repo id, downloaded (or read from the cache)."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(name_or_dir).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name_or_dir!r}: not a directory with {CONFIG_NAME} and {WEIGHTS_NAME}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=str(name_or_dir)))


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses tensors that share memory; keep the first name of each (ties are rebuilt on load)."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int | torch.SymInt]] = set()  # (data pointer, offset): torch types offsets int | SymInt
    unique: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        unique[name] = tensor.detach().cpu().contiguous()
    save_file(unique, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a save_pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors' own error type, which names no file
        raise ValueError(f"{path}: not a readable safetensors file ({error}); truncated or not written by "
                         "save_pretrained: export or download it again") from error  # fmt: skip


def write_config(directory: Path, model_config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    from pixelbert_pl import __version__

    document = {"format": FORMAT, "version": __version__, "model": model_config, **(extra or {})}
    (directory / CONFIG_NAME).write_text(json.dumps(document, indent=2, default=list))


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}; expected a directory written by save_pretrained")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: not JSON ({error}); expected the config save_pretrained writes: export or download it again"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or "model" not in document:
        raise ValueError(f"{path}: not a pixelbert_pl config (expected format={FORMAT!r} and a 'model' entry)")
    return document


def read_model_config(directory: Path) -> tuple[PixelBertConfig, ProcessingConfig]:
    """The architecture and the processing `config.json` describes; exports of earlier versions kept both in its
    "model" entry, and still load."""
    document = read_config(directory)
    source = str(directory / CONFIG_NAME)
    architecture, legacy = split_processing(document["model"])
    processing = document.get("processing", legacy)
    if not isinstance(processing, dict):
        raise ValueError(f"{source}: 'processing' is {type(processing).__name__}; expected an object")
    return PixelBertConfig.from_dict(architecture), ProcessingConfig.from_dict(processing, source)


def has_tokenizer(directory: Path) -> bool:
    return (directory / "vocab.txt").is_file() or (directory / "tokenizer.json").is_file()


def read_task(directory: Path) -> tuple[str, dict[str, Any]]:
    """(registered task model name, its arguments) that a task export's config.json records; exports of the
    Lightning task's name are `layouts.py`'s layout 2."""
    document = read_config(directory)
    source = str(directory / CONFIG_NAME)
    task_args = document.get("task_args", {})
    if not isinstance(task_args, dict):
        raise ValueError(f"{source}: 'task_args' is {type(task_args).__name__}; expected an object")
    if "task_model" in document:
        return str(document["task_model"]), task_args
    if "task" in document:
        return legacy_task(str(document["task"]), task_args, source)
    raise ValueError(f"{source}: holds a bare model (no 'task_model'); export a task's checkpoint")
