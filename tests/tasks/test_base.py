"""PixelBertTask plumbing: checkpoints load without running code from the file; init_from names what differs."""

from __future__ import annotations

import pickle

import pytest
import torch

from pixelbert_pl.models.checkpoint_reader import load_checkpoint, read_state_dict
from pixelbert_pl.tasks import OptimizerConfig, PretrainTask


class Payload:
    """Stands for anything a malicious checkpoint could pickle to run code on load."""


def test_checkpoints_load_weights_only_and_rebuild_the_task(tmp_path) -> None:
    task = PretrainTask(preset="pixelbert_tiny", optimizer=OptimizerConfig(lr=3e-4))
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    loaded = load_checkpoint(path)
    assert OptimizerConfig(**loaded["hyper_parameters"]["optimizer"]) == OptimizerConfig(lr=3e-4)
    assert PretrainTask(**loaded["hyper_parameters"]).optimizer_config.lr == 3e-4  # load_from_checkpoint does this
    assert set(read_state_dict(path)) == set(task.net.state_dict())  # the task model's names
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
    with caplog.at_level("WARNING", logger="pixelbert_pl.models.checkpoint_reader"):
        RetrievalTask(preset="pixelbert_tiny", init_from=str(path))
    assert "['rank_head'], which start from random weights" in caplog.text and "vqa_head" in caplog.text
    caplog.clear()
    pretrained = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": PretrainTask(preset="pixelbert_tiny").state_dict()}, pretrained)
    with caplog.at_level("WARNING", logger="pixelbert_pl.models.checkpoint_reader"):
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


def _fit_checkpoint(task: PretrainTask, path) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint as `pixelbert fit` writes it: weights, and the model config under the "pixelbert" key."""
    torch.save({"state_dict": task.state_dict(), "pixelbert": {"config": task.model.config.to_dict()}}, path)


def test_init_from_a_different_backbone_names_the_config_fields_that_differ(tmp_path) -> None:
    other = PretrainTask(preset="pixelbert_tiny", model_overrides={"hidden_size": 64, "intermediate_size": 128})
    _fit_checkpoint(other, tmp_path / "other.ckpt")
    fewer = PretrainTask(preset="pixelbert_tiny", model_overrides={"num_hidden_layers": 1})
    _fit_checkpoint(fewer, tmp_path / "fewer.ckpt")
    with pytest.raises(ValueError, match=r"differ in \{'hidden_size': \{'init_from': 64, 'this task': 128\}, "
                                         r"'intermediate_size': \{'init_from': 128, 'this task': 256\}\}"):  # fmt: skip
        PretrainTask(preset="pixelbert_tiny", init_from=str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match=r"lacks \d+ backbone tensors.*'num_hidden_layers': \{'init_from': 1, "):
        PretrainTask(preset="pixelbert_tiny", init_from=str(tmp_path / "fewer.ckpt"))


def test_init_from_an_export_directory(tmp_path) -> None:
    """`init_from` refused an export directory with FileNotFoundError on a folder that exists."""
    from pixelbert_pl import PixelBertProcessor, Predictor
    from pixelbert_pl.processing import write_wordpiece_vocab
    from pixelbert_pl.processing.tokenizer import load_tokenizer

    vocab = write_wordpiece_vocab(["a red circle left of a blue square"], tmp_path / "vocab.txt")
    tokenizer = load_tokenizer(vocab)
    source = PretrainTask(preset="pixelbert_tiny", vocab_size=tokenizer.vocab_size)
    processor = PixelBertProcessor(source.model.processing, tokenizer)
    exported = Predictor(source.net, processor).save_pretrained(tmp_path / "exported")
    started = PretrainTask(preset="pixelbert_tiny", vocab_size=tokenizer.vocab_size, init_from=str(exported))
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in started.state_dict().items() if not k.startswith("metrics."))


def test_a_directory_given_as_a_checkpoint_points_at_from_pretrained(tmp_path) -> None:
    from pixelbert_pl import Predictor

    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "config.json").write_text("{}")
    with pytest.raises(IsADirectoryError, match=r"is a directory \(an export: Predictor.from_pretrained reads it\)"):
        Predictor.from_checkpoint(tmp_path / "exported")


def test_init_from_a_safetensors_file_of_another_backbone_names_the_tensor(tmp_path) -> None:
    """A safetensors file records no model config: the error is still the shape's, not a failed look for one."""
    from safetensors.torch import save_file

    other = PretrainTask(preset="pixelbert_tiny", model_overrides={"hidden_size": 64, "intermediate_size": 128})
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items() if "decoder" not in k}, str(path))
    with pytest.raises(ValueError, match=r"has shape \(.*64.*\) .*\(it records no model config to compare\)"):
        PretrainTask(preset="pixelbert_tiny", init_from=str(path))


def test_a_task_configured_for_other_inputs_than_its_data_is_refused(shapes_root) -> None:
    import pytorch_lightning as pl

    from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule
    from pixelbert_pl.processing import ProcessingConfig
    from pixelbert_pl.tasks import VQATask

    data = ShapesWorldVQADataModule(root=str(shapes_root), num_workers=0)
    other = data.processing.replace(image_min_size=data.processing.image_min_size // 2)
    assert isinstance(other, ProcessingConfig)
    task = VQATask(preset="pixelbert_tiny", vocab_size=data.vocab_size, answer_vocab=data.answer_vocab,
                   processing=other)  # fmt: skip
    trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    names = r"VQATask's processing differs from ShapesWorldVQADataModule's in \{'image_min_size': \{'VQATask': \d+"
    with pytest.raises(ValueError, match=names):
        trainer.fit(task, datamodule=data)
