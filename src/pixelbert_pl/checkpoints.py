"""Where `pixelbert fit` writes checkpoints, how, and the best one.

- One folder per run name: `<logger save_dir>/<logger name>/checkpoints/`, not Lightning's default of one inside each
  `version_N` folder, which every run opens afresh, so `--ckpt_path last` could not find the previous run's
  `last.ckpt`. Lightning resolves "last" in each ModelCheckpoint's `dirpath`; the CLI sets that folder on every
  ModelCheckpoint left without one (`use_run_checkpoint_dir`). A new run of the same name writes `last-v1.ckpt`
  beside the old `last.ckpt` (Lightning's version counter), and "last" is the newest of them.
- `AtomicCheckpointIO`: each file is written under a temporary name in its own folder, synced, then renamed, so a
  save cut short (a full disk, a killed job) never leaves a truncated file under a checkpoint's name. Lightning's
  own writer stages the file in the system temporary folder and moves it, which across file systems is a copy into
  the final name.
- `BestCheckpoint`: `best.ckpt`, the checkpoint with the best value of the task's `monitor` (and `mode`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import ModelCheckpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic: a temporary file beside the target, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                message = f"no space left to write checkpoint {path}; the file there before is intact"
                raise OSError(error.errno, message) from error
            raise


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Swap the strategy's default checkpoint writer for `AtomicCheckpointIO` (a user's own plugin stays)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def run_checkpoint_dir(trainer: pl.Trainer) -> Path | None:
    """`<save_dir>/<name>/checkpoints` of the trainer's first logger, `<default_root_dir>/checkpoints` without one;
    None for a logger on a remote file system (set the callback's `dirpath` there)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    logger = trainer.loggers[0]
    if logger.save_dir is None or not _is_local_file_protocol(logger.save_dir):
        return None
    return Path(logger.save_dir) / str(logger.name or "") / "checkpoints"


def use_run_checkpoint_dir(trainer: pl.Trainer) -> Path | None:
    """Point every ModelCheckpoint without a `dirpath` at `run_checkpoint_dir`; returns that folder."""
    folder = run_checkpoint_dir(trainer)
    if folder is not None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.realpath(folder)
    return folder


def last_checkpoints(trainer: pl.Trainer) -> list[Path]:
    """The `last*.ckpt` files in the trainer's ModelCheckpoint folders, as Lightning's `ckpt_path="last"` sees them."""
    folders = {Path(c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath}
    return sorted(p for folder in folders for p in folder.glob(f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}*.ckpt"))


class BestCheckpoint(ModelCheckpoint):
    """Keeps `best.ckpt` in the run's checkpoint folder: the weights with the best value of `monitor` so far.

    Args:
        monitor, mode: what to compare; by default the task's own `monitor` and `mode` class attributes (VQA's
            `val/vqa_accuracy_overall`, "max"), read when training starts.
        filename: the file's name without `.ckpt`.
        dirpath: the folder (default: the run's checkpoint folder, as for `last.ckpt`).
    """

    def __init__(
        self, monitor: str | None = None, mode: str | None = None, filename: str = "best", dirpath: str | None = None
    ) -> None:
        # A later run of the same name replaces best.ckpt rather than writing best-v1.ckpt, so recipes can name it.
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode or "min", save_top_k=1,
                         enable_version_counter=False, auto_insert_metric_name=False)  # fmt: skip
        self._mode_given = mode is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.monitor is None:
            self.monitor = getattr(pl_module, "monitor", None)
            if self.monitor is None:
                raise ValueError(f"BestCheckpoint: {type(pl_module).__name__} has no `monitor`; pass monitor=")
            if not self._mode_given:
                self.mode = getattr(pl_module, "mode", "min")
            if self.mode not in ("min", "max"):
                raise ValueError(f"BestCheckpoint: mode={self.mode!r}; expected 'min' or 'max'")
            # The worst possible value, as ModelCheckpoint's constructor sets it for a given mode.
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        super().setup(trainer, pl_module, stage)
