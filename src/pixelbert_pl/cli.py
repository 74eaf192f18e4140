"""`pixelbert` console script (also `python -m pixelbert_pl`): LightningCLI in subclass mode.

`pixelbert fit --config lightning_configs/vqa/vqa_r50.yaml`; any LightningModule / LightningDataModule
(including a user's own subclass, by `class_path`) can be named in the YAML.

Every recipe gets the callbacks of `configs/callbacks.yaml` (package data) as its `trainer.callbacks` default, shown
by `--print_config`: `--trainer.callbacks+=CLASS` adds one, and a recipe's own `trainer.callbacks` list replaces them.

Checkpoints go to one folder per run name, `<logger save_dir>/<logger name>/checkpoints/` (`checkpoints.py`), so
`pixelbert fit --config ... --ckpt_path last` continues the previous run of that recipe; "last" with no checkpoint
there is an error, not a silent start from step 0. Files are written atomically. One live `fit` per run name: a
second is refused (`run_lock.py`).

Under `--ckpt_path FILE` the task and its arguments come from the YAML and the command line; the file gives only
weights and training state, read with `weights_only=True`. A task class other than the file's is an error naming
both, and arguments that differ from the file's hyper-parameters are warned about. (LightningCLI's default copies the
file's hyper-parameters over the configuration, its `_class_path` included: a file could name any class to import.)
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.rank_zero import rank_zero_info

import pixelbert_pl.data
import pixelbert_pl.tasks  # noqa: F401
from pixelbert_pl.checkpoints import last_checkpoints, use_atomic_checkpoints, use_run_checkpoint_dir
from pixelbert_pl.models.checkpoint_reader import load_checkpoint
from pixelbert_pl.processing.config import plain
from pixelbert_pl.run_lock import RunLock
from pixelbert_pl.tasks.registry import get_task

log = logging.getLogger(__name__)
# Lightning's own use of a deprecated torch API and its advertisements, printed at every run: noise to our users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoTips())
# The task's arguments the DataModule sets (`add_arguments_to_parser`).
_LINKED_FROM_DATA = ("vocab_size", "processing", "answer_vocab", "labels", "images_per_sample")
# The callbacks every recipe starts with; package data, so that an installed package has them too.
CALLBACKS = importlib.resources.files("pixelbert_pl") / "configs" / "callbacks.yaml"
# Names a saved `ckpt_path` can have that Lightning resolves itself, in the run's folders.
_RESOLVED_BY_LIGHTNING = ("last", "best", "hpc", "registry")


class PixelBertCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        # The tokenizer (a data setting) decides the embedding table's size. The one description of the inputs
        # (resize, normalisation, tokenizer, text length): the DataModule builds it from its arguments, and the task,
        # its checkpoints and exports carry the same object. The answer classes (VQA) and class names
        # (classification) come from the data; jsonargparse skips a link for data modules and tasks without it.
        for name in _LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.set_defaults({"trainer.callbacks": yaml.safe_load(CALLBACKS.read_text())})

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        use_run_checkpoint_dir(trainer)
        return trainer

    def _require_last_checkpoint(self) -> None:
        # Lightning only warns when "last" finds nothing and trains from step 0: days of GPU time on a real recipe.
        if self.subcommand is None or self.config[self.subcommand].get("ckpt_path") != "last":
            return
        if not last_checkpoints(self.trainer):
            callbacks = self.trainer.checkpoint_callbacks
            folders = sorted({str(c.dirpath) for c in callbacks if isinstance(c, ModelCheckpoint)}) or "no folder"
            raise FileNotFoundError(
                f"--ckpt_path last: no last*.ckpt in {folders} (the logger's save_dir and name pick the folder: give "
                "those of the run to continue), or pass the checkpoint's path"
            )

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path FILE` against the configured task instead of copying its hyper-parameters over the
        configuration (see the module's docstring)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path or path in _RESOLVED_BY_LIGHTNING or not Path(path).is_file():
            return
        hparams = dict(load_checkpoint(path, "ckpt_path").get("hyper_parameters") or {})
        saved, configured = hparams.pop("_class_path", None), self.config[subcommand].model
        hparams.pop("_instantiator", None)
        if saved is not None and not _same_task(saved, configured.class_path):
            raise ValueError(
                f"--ckpt_path {path}: the checkpoint holds a {saved}, the configuration builds a "
                f"{configured.class_path}; give the recipe the checkpoint was trained with, or start a new task "
                "from its weights with --model.init_args.init_from"
            )
        given = configured.get("init_args")
        given = given.as_dict() if given is not None else {}
        differ = sorted(k for k, v in given.items() if v is not None and k in hparams and k not in _LINKED_FROM_DATA
                        and plain(hparams[k]) != plain(v))  # fmt: skip
        if differ:
            log.warning("--ckpt_path %s: the configuration's %s differ from the checkpoint's hyper-parameters; the "
                        "configuration's are used", path, differ)  # fmt: skip

    def _run_subcommand(self, subcommand: str) -> None:
        lock = self._take_run_lock() if subcommand == "fit" else None
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self._remove_unused_log_folder()
            raise
        finally:
            if lock is not None:
                lock.release()
            self._report_where()

    def _take_run_lock(self) -> RunLock | None:
        # Before Lightning starts the other DDP ranks (which run this script again): rank 0 of the job, read from
        # the environment as Lightning reads it, holds the lock for all.
        if any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")):
            return None
        folders = {c.dirpath for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)} - {None}
        if not folders:
            return None
        lock = RunLock(sorted(str(f) for f in folders)[0])
        lock.acquire()
        return lock

    def _remove_unused_log_folder(self) -> None:
        """A run that failed before its first step leaves a `version_N` folder with no metrics: remove it, so that
        the next run's logs are not beside an empty one."""
        trainer = self.trainer
        if trainer.global_step or not trainer.is_global_zero or not trainer.loggers:
            return
        log_dir = trainer.loggers[0].log_dir
        if log_dir and os.path.isdir(log_dir) and not (Path(log_dir) / "metrics.csv").exists():
            shutil.rmtree(log_dir, ignore_errors=True)

    def _report_where(self) -> None:
        trainer = self.trainer
        if self.subcommand != "fit" or not trainer.is_global_zero:
            return
        last = [p for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and (p := c.last_model_path)]
        folders = sorted({str(c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)})
        logs = trainer.loggers[0].log_dir if trainer.loggers else None
        if folders or logs:
            rank_zero_info(f"checkpoints: {', '.join(folders) or 'none'}"
                           + (f" (last: {last[0]}, step {trainer.global_step})" if last else "")
                           + (f"; logs: {logs}" if logs and os.path.isdir(logs) else ""))  # fmt: skip

    def before_fit(self) -> None:
        self._require_last_checkpoint()
        # fast_dev_run promises no checkpoints, but Lightning 2.6's ModelCheckpoint still writes last.ckpt in
        # on_train_end: for an R50 recipe that is a 1.6 GB file (weights + AdamW state) per smoke run.
        if self.trainer.fast_dev_run:  # type: ignore[attr-defined]  # set by Lightning's debugging connector
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_last = False

    def before_validate(self) -> None:
        self._require_last_checkpoint()

    def before_test(self) -> None:
        self._require_last_checkpoint()

    def before_predict(self) -> None:
        self._require_last_checkpoint()


def main(args: list[str] | None = None, run: bool = True) -> PixelBertCLI:
    return PixelBertCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _same_task(saved: str, configured: str) -> bool:
    """Whether a checkpoint's task name (a string, looked up in the registry, never imported) is the configured
    class (imported from the user's own configuration, as LightningCLI does)."""
    if saved == configured:
        return True
    module, _, name = configured.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    try:
        return get_task(saved) is cls
    except ValueError:
        return False


def console() -> None:
    """The `pixelbert` console script: returns None, so that a finished run exits with status 0."""
    main()


if __name__ == "__main__":
    console()
