"""Fixtures for the fine-tuning tasks: ShapesWorld data modules at the tiny preset's size, and a pre-training
checkpoint to initialise from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelbert_pl.tasks import PretrainTask


@pytest.fixture(scope="session")
def pretrain_checkpoint(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PretrainTask's state, saved as Lightning does (weights under `state_dict`), with a recognisable ITM head."""
    from pixelbert_pl.harness.datamodules import ShapesWorldDataModule

    vocab = ShapesWorldDataModule(root=str(shapes_root)).vocab_size
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=vocab)
    with torch.no_grad():
        task.net.itm_head.fc.weight.copy_(torch.arange(2 * 128, dtype=torch.float32).view(2, 128) / 100)
        task.net.itm_head.fc.bias.copy_(torch.tensor([0.5, 2.0]))
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path
