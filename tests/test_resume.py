"""Exact resume: a run interrupted mid-epoch or at an epoch boundary and resumed with `ckpt_path` ends with the
parameters of an uninterrupted run (tiny preset, float32, dropout on), learning-rate schedule included."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pixelbert_pl.data.datamodules import ShapesWorldDataModule
from pixelbert_pl.tasks import OptimizerConfig, PretrainTask

MAX_STEPS = 20


class _Interrupt(pl.Callback):
    """Save a checkpoint after step `at` (as ModelCheckpoint(every_n_train_steps) would), then crash."""

    def __init__(self, at: int, path: Path) -> None:
        self.at, self.path = at, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            trainer.save_checkpoint(self.path)
            raise _Crash(f"crashed after step {self.at}")


class _Crash(RuntimeError):
    pass


def _run(
    root: Path, tmp: Path, interrupt_at: int | None = None, ckpt: Path | None = None
) -> tuple[PretrainTask, pl.Trainer]:
    pl.seed_everything(0)
    data = ShapesWorldDataModule(root=str(root), batch_size=4, num_workers=0)
    task = PretrainTask(
        preset="pixelbert_tiny", vocab_size=data.vocab_size,
        optimizer=OptimizerConfig(warmup_steps=3, milestones=[0.5]),
        model_overrides={"hidden_dropout_prob": 0.1},  # so that the RNG state matters
    )  # fmt: skip
    callbacks = [_Interrupt(interrupt_at, tmp / "interrupted.ckpt")] if interrupt_at else []
    trainer = pl.Trainer(
        max_steps=MAX_STEPS, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=2, val_check_interval=5, callbacks=callbacks,
        default_root_dir=tmp,
    )  # fmt: skip
    try:
        trainer.fit(task, datamodule=data, ckpt_path=ckpt)
    except _Crash:
        assert interrupt_at is not None
    return task, trainer


@pytest.fixture(scope="module")
def uninterrupted(shapes_root, tmp_path_factory) -> tuple[dict[str, torch.Tensor], int]:
    task, trainer = _run(shapes_root, tmp_path_factory.mktemp("full"))
    return {k: v.clone() for k, v in task.state_dict().items()}, trainer.num_training_batches


@pytest.mark.parametrize("where", ["mid_epoch", "epoch_boundary"])
def test_resumed_run_ends_with_identical_parameters(shapes_root, tmp_path, uninterrupted, where) -> None:
    expected, per_epoch = uninterrupted
    assert MAX_STEPS > per_epoch + 3  # both cases fall inside the run
    at = per_epoch + 3 if where == "mid_epoch" else per_epoch
    _, first = _run(shapes_root, tmp_path, interrupt_at=at)
    assert first.global_step == at and (tmp_path / "interrupted.ckpt").is_file()
    task, trainer = _run(shapes_root, tmp_path, ckpt=tmp_path / "interrupted.ckpt")
    assert trainer.global_step == MAX_STEPS
    state = task.state_dict()
    different = [k for k, v in expected.items() if not torch.equal(v, state[k])]
    assert different == []
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == MAX_STEPS


class Payload:
    """Stands for anything a malicious checkpoint could pickle to run code on load."""


def test_resume_runs_no_code_from_the_file_and_names_mismatched_keys(shapes_root, tmp_path) -> None:
    import pickle

    data = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    small = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, model_overrides={"hidden_size": 64})
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(small, datamodule=data)
    trainer.save_checkpoint(tmp_path / "small.ckpt")
    evil = tmp_path / "evil.ckpt"
    checkpoint = torch.load(tmp_path / "small.ckpt", weights_only=True)
    torch.save({**checkpoint, "payload": Payload()}, evil)

    def resume(path: Path) -> None:
        task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)
        trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
        trainer.fit(task, datamodule=data, ckpt_path=path)

    with pytest.raises(pickle.UnpicklingError, match="Payload"):
        resume(evil)
    with pytest.raises(RuntimeError, match=r"size mismatch for model\.bert\.embeddings\.word_embeddings\.weight"):
        resume(tmp_path / "small.ckpt")
