"""`pixelbert` console script (also `python -m pixelbert_pl`): LightningCLI in subclass mode.

`pixelbert fit --config lightning_configs/vqa/vqa_r50.yaml`; any LightningModule / LightningDataModule
(including a user's own subclass, by `class_path`) can be named in the YAML.

Checkpoints go to one folder per run name, `<logger save_dir>/<logger name>/checkpoints/` (`checkpoints.py`), so
`pixelbert fit --config ... --ckpt_path last` continues the previous run of that recipe; "last" with no checkpoint
there is an error, not a silent start from step 0. Files are written atomically.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

import pixelbert_pl.data.datamodules
import pixelbert_pl.data.downstream
import pixelbert_pl.tasks  # noqa: F401
from pixelbert_pl.checkpoints import last_checkpoints, use_atomic_checkpoints, use_run_checkpoint_dir


class PixelBertCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        # The tokenizer (a data setting) decides the embedding table's size.
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        # The one description of the inputs (resize, normalisation, tokenizer, text length): the DataModule builds
        # it from its arguments, and the task, its checkpoints and exports carry the same object.
        parser.link_arguments("data.processing", "model.init_args.processing", apply_on="instantiate")
        # The answer classes come from the training annotations; jsonargparse skips the link for data modules
        # and tasks without them.
        parser.link_arguments("data.answer_vocab", "model.init_args.answer_vocab", apply_on="instantiate")

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


def console() -> None:
    """The `pixelbert` console script: returns None, so that a finished run exits with status 0."""
    main()


if __name__ == "__main__":
    console()
