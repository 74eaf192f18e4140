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
- `FinalCheckpoint`: `last.ckpt` is the model at the last step of every run that ends: by max_steps / max_epochs /
  early stopping (Lightning 2.6 saves "last" at the end only if it never saved one before), or by SIGTERM / Ctrl-C,
  which save at the end of the current step and exit with 128 + the signal's number (143, 130).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pixelbert_pl.models.checkpoint_reader import CHECKPOINT_KEY, load_checkpoint
from pixelbert_pl.processing import tokenizer_files

log = logging.getLogger(__name__)
# SLURM pre-empts (and `scancel`s) a job with SIGTERM, then SIGKILL after its grace time; Ctrl-C is SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
            if _caused_by(error, errno.ENOSPC):
                message = f"no space left (ENOSPC) to write checkpoint {path}; the file there before is intact"
                raise OSError(errno.ENOSPC, message) from error
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Local files through `load_torch_file`: errors name the file, and nothing in it runs (`--ckpt_path`)."""
        if weights_only is False or not _is_local_file_protocol(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint(path, "ckpt_path")


def _caused_by(error: BaseException | None, code: int) -> bool:
    """Whether an OSError with errno `code` is in `error`'s chain: torch's zip writer wraps a failed write in a
    RuntimeError ("unexpected pos ...") that names no errno."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno == code:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


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
        monitor: the value compared; by default the task's own `monitor` class attribute (VQA's
            `val/vqa_accuracy_overall`), read when training starts.
        mode: how it is compared, "min" or "max"; by default the task's own `mode` class attribute (VQA's "max"),
            read when training starts.
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


class SignalStop(SIGTERMException):
    """A run stopped by a signal after saving `last.ckpt`. The exit status is 128 + the signal's number, as a shell
    reports a process that signal ended, so a scheduler records the job as stopped, not completed. A subclass of
    Lightning's `SIGTERMException`, so callbacks written for that see it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def save_last_checkpoints(trainer: pl.Trainer, always: bool = False, unless_due: bool = False) -> list[str]:
    """Save "last" through every ModelCheckpoint with `save_last` whose last save is not at this step; with
    `always`, a run with none of those still gets `last.ckpt` in its first ModelCheckpoint's folder; with
    `unless_due` (called from `on_train_batch_end`), not through those that save at this step's batch end
    themselves, which run next (saving here first would make them skip their numbered checkpoint). Returns the
    paths written (every rank calls this: a save is collective)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    keeping = [c for c in callbacks if c.save_last]
    written = []
    for callback in keeping:
        every = callback._every_n_train_steps
        if unless_due and every > 0 and trainer.global_step % every == 0:
            continue
        if callback._last_global_step_saved != trainer.global_step or not callback.last_model_path:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
        written.append(callback.last_model_path)
    if always and not keeping and callbacks and callbacks[0].dirpath:
        path = os.path.join(callbacks[0].dirpath, ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION)
        trainer.save_checkpoint(path)
        written.append(path)
    return written


class FinalCheckpoint(pl.Callback):
    """`last.ckpt` at the last step of every run that ends, and a clean stop on SIGTERM or Ctrl-C.

    - A normal end: "last" is saved at the step that ends the run, when the last save was at an earlier one;
      Lightning 2.6 saves it at the end only if it never saved one, so up to `every_n_train_steps - 1` steps were in
      no file. It is saved where that step is known to end the run (max_steps reached, the last batch of max_epochs,
      early stopping's decision at validation's end), not at `on_train_end`: by then Lightning has marked the epoch
      completed, and a run resumed from there would start the next epoch, skipping the rest of this one.
      `on_train_end` saves what is left (max_time, a callback's stop), with that caveat.
    - SIGTERM or SIGINT: the current step finishes (an optimizer step: never mid-accumulation), "last" is saved,
      and `SignalStop` ends the run with status 143 or 130. A second Ctrl-C stops at once, unsaved.

    Lightning's own SIGTERM handling is replaced while training runs: its stop exits 0, it acts on the signal at
    different steps on different ranks, and in DDP it broadcasts from inside the signal handler. Here each rank
    records the signal, and the ranks agree after every optimizer step (one all-reduce of one number, as Lightning's
    own per-step broadcast costs) so that all of them save the same step. `fast_dev_run` saves nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._step_at_start = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its handlers (just before the loop), so these replace them; Lightning's
        # teardown restores the handlers from before the run.
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._receive)

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, as Ctrl-C usually does
        if self.signum is None:
            self.signum = signum
            again = " (Ctrl-C again to stop at once, unsaved)" if signum == signal.SIGINT else ""
            log.warning("received %s: saving last.ckpt after this step, then stopping%s",
                        signal.Signals(signum).name, again)  # fmt: skip

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._step_at_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._step_at_start:
            return  # gradients still accumulating: a checkpoint now would lose them
        signum = self._agreed(trainer, pl_module)
        if signum:
            self._stop(trainer, signum)
        max_epochs = trainer.max_epochs or -1
        last_epoch = max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs and trainer.is_last_batch
        if (0 < trainer.max_steps <= trainer.global_step) or last_epoch:
            self._save(trainer, unless_due=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Early stopping decides in its own on_validation_end, which runs before this one (Lightning calls the
        # configured callbacks before the task's).
        if trainer.should_stop and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)
        if self.signum:  # it came during the last validation: the run is saved, but was asked to stop
            raise SignalStop(self.signum)

    @staticmethod
    def _save(trainer: pl.Trainer, unless_due: bool = False) -> None:
        if not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set by Lightning's debugging connector
            save_last_checkpoints(trainer, unless_due=unless_due)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not isinstance(exception, SignalStop):
            exception.code = 128 + signal.SIGTERM  # Lightning's own stop (before training started) exits 0

    def _agreed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        local = self.signum or 0
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return local
        flag = torch.tensor([local], device=pl_module.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _stop(self, trainer: pl.Trainer, signum: int) -> None:
        self.signum = signum
        if trainer.fast_dev_run:  # type: ignore[attr-defined]  # set by Lightning's debugging connector
            raise SignalStop(signum)
        written = save_last_checkpoints(trainer, always=True)
        if trainer.is_global_zero:
            where = ", ".join(written) or "nowhere: the run has no ModelCheckpoint"
            log.warning("stopped by %s at step %d; saved %s (continue with --ckpt_path last)",
                        signal.Signals(signum).name, trainer.global_step, where)  # fmt: skip
        raise SignalStop(signum)


def save_task_model_entry(task: Any, checkpoint: dict[str, Any]) -> None:
    """A task's `on_save_checkpoint`: the model config, processing, tokenizer files and task model (registered name
    and arguments) as plain data under `CHECKPOINT_KEY`, so that `Predictor.from_checkpoint` and `pixelbert-export`
    rebuild the model offline, with no Lightning, no data module and no weights to download."""
    net, model = task.net, task.net.model
    entry = {"config": model.config.to_dict(), "processing": model.processing.to_dict(),
             "task_model": type(net).__name__, "task_args": net.task_args()}  # fmt: skip
    tokenizer = getattr(task, "_tokenizer", None)
    if tokenizer is not None:
        if getattr(task, "_tokenizer_files", None) is None:
            task._tokenizer_files = tokenizer_files(tokenizer)  # once: a tokenizer does not change during a run
        entry["tokenizer_files"] = task._tokenizer_files
    checkpoint[CHECKPOINT_KEY] = entry
