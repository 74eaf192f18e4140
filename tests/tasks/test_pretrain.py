"""PretrainTask: both losses, every parameter trained, finite with no masked token, sampling only in training."""

import pytest
import torch

from numerics import FLOAT32, FLOAT32_DEEP, assert_close_scaled, assert_grads_close
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.processing.batches import IGNORE_INDEX
from pixelbert_pl.tasks import PretrainTask


@pytest.fixture
def data(shapes_root) -> ShapesWorldDataModule:
    dm = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, captions_per_image=2, num_workers=0)
    dm.setup("fit")
    return dm


@pytest.fixture
def task(data) -> PretrainTask:
    return PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)


def test_every_parameter_gets_a_gradient(task, data) -> None:
    batch = next(iter(data.train_dataloader()))
    result = task.losses(batch, sample=True)
    assert set(result) == {"loss", "mlm", "itm"}
    result["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_mlm_loss_is_finite_with_no_masked_token(task, data) -> None:
    batch = next(iter(data.train_dataloader()))
    batch.mlm_labels.fill_(IGNORE_INDEX)
    result = task.losses(batch)
    assert torch.isfinite(result["loss"]) and result["mlm"].item() == 0.0


def test_loss_weights_are_multipliers_and_zero_removes_the_head(data) -> None:
    itm_only = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, mlm_weight=0.0)
    assert itm_only.net.mlm_head is None and itm_only.net.itm_head is not None
    batch = next(iter(data.train_dataloader()))
    assert set(itm_only.losses(batch)) == {"loss", "itm"}
    with pytest.raises(ValueError, match="not both 0"):
        PretrainTask(preset="pixelbert_tiny", mlm_weight=0.0, itm_weight=0.0)


def test_sampling_only_in_training_and_validation_is_deterministic(task, data) -> None:
    calls = []
    original = task.model.sample_pixels

    def spy(*args, **kwargs):
        calls.append(task.training)
        return original(*args, **kwargs)

    task.model.sample_pixels = spy
    batch = next(iter(data.train_dataloader()))
    task.train()
    task.training_step(batch, 0)
    assert calls == [True]
    task.eval()
    val_batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        first = task.losses(val_batch)["loss"]
        second = task.losses(next(iter(data.val_dataloader())))["loss"]
    assert calls == [True]  # no sampling in validation
    assert torch.equal(first, second)


def test_masked_positions_with_a_host_count_match_nonzero() -> None:
    from pixelbert_pl.models.pretraining import masked_positions

    masked = torch.rand(5, 9, generator=torch.Generator().manual_seed(0)) < 0.3
    expected = masked.flatten().nonzero().squeeze(1)
    assert torch.equal(masked_positions(masked), expected)
    assert torch.equal(masked_positions(masked, int(masked.sum())), expected)
    assert masked_positions(torch.zeros(2, 3, dtype=torch.bool), 0).numel() == 0


def test_collate_counts_the_mlm_targets(data) -> None:
    batch = next(iter(data.train_dataloader()))
    assert batch.num_masked == int((batch.mlm_labels != IGNORE_INDEX).sum()) > 0


def test_skip_pixel_rows_gives_the_same_losses_and_gradients(data) -> None:
    batch = next(iter(data.train_dataloader()))
    grads = []
    for skip in (False, True):
        torch.manual_seed(0)
        task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, skip_pixel_rows=skip).train()
        result = task.losses(batch, sample=True)
        result["loss"].backward()
        grads.append((result, {n: p.grad for n, p in task.named_parameters() if p.grad is not None}))
    (full, full_grads), (short, short_grads) = grads
    for key in ("loss", "mlm", "itm"):
        assert_close_scaled(short[key], full[key], FLOAT32, msg=key)
    assert_grads_close(short_grads, full_grads, FLOAT32_DEEP)


def test_an_mlm_only_run_through_the_cli_keeps_its_best_checkpoint_by_mlm(shapes_root, tmp_path) -> None:
    """`itm_weight: 0` has no val/itm_accuracy: the CLI's best checkpoint used to fail the run at its first
    validation ("could not find the monitored key"); it follows val/mlm_accuracy instead."""
    from pixelbert_pl.cli import main
    from pixelbert_pl.harness.demo import WARMUP_CONFIG

    cli = main([
        "fit", "--config", str(WARMUP_CONFIG), "--model.init_args.itm_weight=0",
        f"--data.init_args.root={tmp_path / 'shapes'}", "--data.init_args.num_images=30",
        "--data.init_args.batch_size=4", "--data.init_args.num_workers=0", "--trainer.max_steps=2",
        "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ])  # fmt: skip
    assert cli.model.net.itm_head is None and cli.model.monitor == "val/mlm_accuracy"
    assert (tmp_path / "pretrain_warmup" / "checkpoints" / "best.ckpt").is_file()
