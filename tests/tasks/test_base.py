"""PixelBertTask plumbing: checkpoints load without running code from the file; init_from names what differs."""

from __future__ import annotations

import pickle

import pytest
import torch

from pixelbert_pl.tasks import OptimizerConfig, PretrainTask
from pixelbert_pl.tasks.base import load_checkpoint, read_state_dict


class Payload:
    """Stands for anything a malicious checkpoint could pickle to run code on load."""


def test_checkpoints_load_weights_only_and_rebuild_the_task(tmp_path) -> None:
    task = PretrainTask(preset="pixelbert_tiny", optimizer=OptimizerConfig(lr=3e-4))
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    loaded = load_checkpoint(path)
    assert OptimizerConfig(**loaded["hyper_parameters"]["optimizer"]) == OptimizerConfig(lr=3e-4)
    assert PretrainTask(**loaded["hyper_parameters"]).optimizer_config.lr == 3e-4  # load_from_checkpoint does this
    assert set(read_state_dict(path)) == set(task.state_dict())
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil)


def test_init_from_a_different_preset_names_the_tensor(tmp_path) -> None:
    other = PretrainTask(preset="pixelbert_tiny", model_overrides={"hidden_size": 64, "intermediate_size": 128})
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(ValueError, match=r"model\.bert\..* has shape \(.*64.*\), this task's model \(.*128"):
        PretrainTask(preset="pixelbert_tiny", init_from=str(path))


def test_text_length_buckets_reach_the_model_and_survive_the_checkpoint() -> None:
    task = PretrainTask(preset="pixelbert_tiny", text_length_buckets=3)
    assert task.model.text_length_buckets == 3
    assert PretrainTask(**dict(task.hparams)).model.text_length_buckets == 3
    with pytest.raises(ValueError, match="text_length_buckets=0"):
        PretrainTask(preset="pixelbert_tiny", text_length_buckets=0)
