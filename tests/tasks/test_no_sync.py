"""The training step reads nothing back from the device: no `.item()`, `.tolist()`, `bool(tensor)` or `nonzero` in
the forward, loss, metrics, logging or optimiser step, so on a GPU the host queues step n+1 while step n runs.

Checked on the CPU, where the same ops are visible to a dispatch mode: every op that would wait for a GPU
(`_local_scalar_dense` and the ops whose output size depends on values) is recorded with its Python stack, from
the start of each training batch (after the first, which builds state) to the end of Lightning's batch-end
bookkeeping, which is where progress-bar values are converted to numbers.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
from task_helpers import SMALL
from torch.utils._python_dispatch import TorchDispatchMode

from pixelbert_pl.harness.datamodules import ShapesWorldDataModule, ShapesWorldNLVR2DataModule, ShapesWorldVQADataModule
from pixelbert_pl.tasks import NLVR2Task, PretrainTask, VQATask

READ_BACK_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "_unique2", "item"}
# Branches that exist only on the CPU, where reading a flag costs nothing: the non-finite-step report reads the
# optimiser's flag on the host when it is not on a GPU (on a GPU it is copied without waiting).
CPU_ONLY = ("on_train_batch_end",)


class ReadBackSpy(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.hits: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.active and func.__name__.split(".")[0] in READ_BACK_OPS:
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            if not any(f.name in CPU_ONLY for f in frames):
                self.hits.append(f"{func.__name__} at " + " <- ".join(f"{f.name}:{f.lineno}" for f in frames[-5:]))
        return func(*args, **(kwargs or {}))


class _Arm(pl.Callback):
    def __init__(self, spy: ReadBackSpy) -> None:
        self.spy = spy

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.spy.active = trainer.global_step >= 1


def _task_and_data(kind: str, root: str) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    if kind == "pretrain":
        data: Any = ShapesWorldDataModule(root=root, captions_per_image=2, **SMALL)
        return PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size), data
    if kind == "vqa":
        data = ShapesWorldVQADataModule(root=root, **SMALL)
        task: Any = VQATask(preset="pixelbert_tiny", vocab_size=data.vocab_size, answer_vocab=data.answer_vocab)
        return task, data
    data = ShapesWorldNLVR2DataModule(root=root, **SMALL)
    return NLVR2Task(preset="pixelbert_tiny", vocab_size=data.vocab_size), data


@pytest.mark.parametrize("kind", ["pretrain", "vqa", "nlvr2"])
def test_training_step_reads_nothing_back(kind: str, shapes_root, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ReadBackSpy()
    batch_end = _LoggerConnector.on_batch_end

    def on_batch_end_then_disarm(self: Any) -> None:
        batch_end(self)
        spy.active = False  # what follows (fetching the next batch) is host work on host tensors

    monkeypatch.setattr(_LoggerConnector, "on_batch_end", on_batch_end_then_disarm)
    task, data = _task_and_data(kind, str(shapes_root))
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_model_summary=False,
        gradient_clip_val=10.0, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[_Arm(spy)],
    )  # fmt: skip
    with spy:
        trainer.fit(task, datamodule=data)
    assert trainer.global_step == 4
    assert spy.hits == []
    # The device-side training metrics were fed and logged (the check above would be empty if nothing ran).
    expected = {"pretrain": "train/itm_accuracy", "vqa": "train/vqa_score", "nlvr2": "train/nlvr2_accuracy"}[kind]
    assert 0 <= float(trainer.callback_metrics[expected]) <= 1


def test_a_progress_bar_value_in_training_would_be_caught(shapes_root, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy sees Lightning's per-step progress-bar conversion, the sync this design avoids."""
    spy = ReadBackSpy()

    class Chatty(PretrainTask):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("bar_loss", loss, prog_bar=True)
            return loss

    batch_end = _LoggerConnector.on_batch_end

    def on_batch_end_then_disarm(self: Any) -> None:
        batch_end(self)
        spy.active = False

    monkeypatch.setattr(_LoggerConnector, "on_batch_end", on_batch_end_then_disarm)
    data = ShapesWorldDataModule(root=str(shapes_root), captions_per_image=2, **SMALL)
    task = Chatty(preset="pixelbert_tiny", vocab_size=data.vocab_size)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[_Arm(spy)],
    )  # fmt: skip
    with spy:
        trainer.fit(task, datamodule=data)
    assert any("metrics" in hit for hit in spy.hits), spy.hits
