"""No NaN or Inf from degenerate batches under bf16 / fp16 autocast, and a non-finite step changes no weight and
is reported with its step and samples."""

import logging

import pytest
import pytorch_lightning as pl
import torch

from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.processing.batches import IGNORE_INDEX
from pixelbert_pl.tasks import PretrainTask
from pixelbert_pl.tasks.callbacks import NonFiniteStepReport


@pytest.fixture(scope="module")
def data(shapes_root) -> ShapesWorldDataModule:
    dm = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    dm.setup("fit")
    return dm


def _degenerate(batch, kind: str):
    if kind == "no_masked_token":
        batch.mlm_labels.fill_(IGNORE_INDEX)
        batch.num_masked = 0
    elif kind == "fully_padded_text_row":
        batch.attention_mask[1] = False
        batch.mlm_labels[1] = IGNORE_INDEX
        batch.num_masked = int((batch.mlm_labels != IGNORE_INDEX).sum())
    elif kind == "one_valid_pixel_token":
        # Image 0 keeps only its top-left 16 x 16 pixels: one token of the tiny preset (stride 16).
        batch.pixel_values[0, :, 16:, :] = 0
        batch.pixel_values[0, :, :, 16:] = 0
        batch.pixel_mask[0] = False
        batch.pixel_mask[0, :16, :16] = True
        batch.image_sizes[0] = (16, 16)
    return batch


@pytest.mark.parametrize("kind", ["no_masked_token", "fully_padded_text_row", "one_valid_pixel_token"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_degenerate_batches_stay_finite_under_autocast(data, kind, dtype) -> None:
    torch.manual_seed(0)
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)
    task.train()
    batch = _degenerate(next(iter(data.train_dataloader())), kind)
    with torch.autocast("cpu", dtype=dtype):
        result = task.losses(batch, sample=True)
    assert torch.isfinite(result["loss"]), result
    result["loss"].backward()
    bad = [n for n, p in task.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []


def test_text_only_row_with_no_key_is_finite(data) -> None:
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)
    ids = torch.randint(5, 50, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1] = False
    out = task.model(ids, mask)
    assert torch.isfinite(out.sequence_output).all()
    assert torch.equal(mask[1], torch.zeros(6, dtype=torch.bool))  # the caller's mask is not modified


class _Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before[batch_idx] = {k: v.clone() for k, v in module.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after[batch_idx] = {k: v.clone() for k, v in module.state_dict().items()}


def test_a_non_finite_step_changes_no_weight_and_is_reported(data, tmp_path, caplog) -> None:
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)
    forward = task.forward

    def poisoned(batch, sample=None):
        result = forward(batch, sample=sample)
        if task.training and task.global_step == 1:
            result["itm_logits"] = result["itm_logits"] * float("nan")
        return result

    task.forward = poisoned
    snapshots = _Snapshots()
    trainer = pl.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, callbacks=[snapshots], default_root_dir=tmp_path,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="pixelbert_pl.tasks.callbacks"):
        trainer.fit(task, datamodule=data)
    changed = lambda i: any(not torch.equal(snapshots.before[i][k], snapshots.after[i][k]) for k in snapshots.before[i])  # noqa: E731
    assert changed(0) and changed(2)
    weights = {k for k in snapshots.before[1] if "running" not in k and "num_batches" not in k}
    assert all(torch.equal(snapshots.before[1][k], snapshots.after[1][k]) for k in weights)
    assert all(torch.isfinite(v).all() for v in task.state_dict().values() if v.is_floating_point())
    reports = [c for c in trainer.callbacks if isinstance(c, NonFiniteStepReport)]
    assert len(reports) == 1 and reports[0].nonfinite_steps == 1
    assert "step 1: non-finite loss or gradients (loss nan)" in caplog.text and "Samples: [" in caplog.text
