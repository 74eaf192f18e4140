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


def test_init_from_another_tasks_checkpoint_warns_which_heads_start_random(tmp_path, caplog) -> None:
    from pixelbert_pl.tasks import RetrievalTask, VQATask

    vqa = VQATask(preset="pixelbert_tiny", answer_vocab=["yes", "no"])
    path = tmp_path / "vqa.ckpt"
    torch.save({"state_dict": vqa.state_dict()}, path)
    with caplog.at_level("WARNING", logger="pixelbert_pl.tasks.base"):
        RetrievalTask(preset="pixelbert_tiny", init_from=str(path))
    assert "['rank_head'], which start from random weights" in caplog.text and "vqa_head" in caplog.text
    caplog.clear()
    pretrained = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": PretrainTask(preset="pixelbert_tiny").state_dict()}, pretrained)
    with caplog.at_level("WARNING", logger="pixelbert_pl.tasks.base"):
        RetrievalTask(preset="pixelbert_tiny", init_from=str(pretrained))  # the rank head from the ITM head
        VQATask(preset="pixelbert_tiny", answer_vocab=["yes"], init_from=str(pretrained))  # its head is always new
    assert "random weights" not in caplog.text


def test_a_torchvision_weights_enum_is_accepted_and_checked_against_the_backbone(monkeypatch) -> None:
    import torchvision
    from torchvision.models import ResNet50_Weights, ResNet101_Weights

    from pixelbert_pl.models import create_model

    # Offline: the "download" is a fresh ResNet-50's weights (no running BN counters, as torchvision's files).
    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if "num_batches" not in k}
    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", lambda self, **_: state)
    model = create_model("pixelbert_r50", visual_weights=ResNet50_Weights.IMAGENET1K_V2, num_hidden_layers=1)
    assert model.config.visual_weights == "ResNet50_Weights.IMAGENET1K_V2"
    assert torch.equal(model.visual.trunk[0].weight, state["conv1.weight"])
    task = PretrainTask(preset="pixelbert_r50", visual_weights=ResNet50_Weights.IMAGENET1K_V2,
                        model_overrides={"num_hidden_layers": 1})  # fmt: skip
    assert task.hparams["visual_weights"] == "ResNet50_Weights.IMAGENET1K_V2"  # plain text in checkpoints
    with pytest.raises(ValueError, match="are not weights of backbone 'resnet50'"):
        create_model("pixelbert_r50", visual_weights=ResNet101_Weights.IMAGENET1K_V2, num_hidden_layers=1)
