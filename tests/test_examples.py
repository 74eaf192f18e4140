"""The worked example of a new benchmark (examples/visual_entailment): its data are balanced and true to the scenes,
and the package's classification task runs it through the real CLI from its YAML alone."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from pixelbert_pl import Predictor
from pixelbert_pl.cli import main
from pixelbert_pl.harness import demo
from pixelbert_pl.harness.shapes import caption_is_true
from pixelbert_pl.models import PixelBertForImageTextClassification
from pixelbert_pl.tasks import ImageTextClassificationTask, PretrainTask

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "visual_entailment"


@pytest.fixture
def example_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example folder importable (its data generator, make_shapes_ve.py)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setattr(sys, "argv", ["pixelbert"])  # LightningCLI warns when given args beside a real argv
    return EXAMPLE


@pytest.fixture
def shapes_ve(example_path: Path, shapes_root: Path, tmp_path: Path) -> Path:
    from make_shapes_ve import make_shapes_ve

    make_shapes_ve(shapes_root, tmp_path / "ve", seed=0)
    return tmp_path / "ve"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_statements_are_balanced_and_true_to_their_scenes(shapes_ve: Path, shapes_root: Path) -> None:
    scenes = {s["file_name"]: s for s in json.loads((shapes_root / "scenes.json").read_text())["scenes"]}
    for split in ("train", "val", "test"):
        file_name = {"train": "ve_train.jsonl", "val": "ve_dev.jsonl", "test": "ve_test.jsonl"}[split]
        rows = _rows(shapes_ve / file_name)
        counts = Counter(row["gold_label"] for row in rows)
        assert set(counts) == {"entailment", "neutral", "contradiction"} and len(set(counts.values())) == 1, counts
        assert {scenes[row["Flikr30kID"]]["split"] for row in rows} == {split}  # ShapesWorld's split, kept
        for row in rows:
            scene, statement = scenes[row["Flikr30kID"]], row["sentence2"]
            assert (shapes_root / "images" / row["Flikr30kID"]).is_file()
            if row["gold_label"] == "neutral":
                with pytest.raises(ValueError, match="not a ShapesWorld caption"):
                    caption_is_true(statement, scene)  # outside the grammar, which only says what a drawing shows
                names = {f"{o['colour']} {o['shape']}" for o in scene["objects"]}
                assert any(name in statement for name in names)  # about this image's own objects
            else:
                assert caption_is_true(statement, scene) == (row["gold_label"] == "entailment"), row


def test_the_same_seed_gives_the_same_files(example_path: Path, shapes_ve: Path, shapes_root: Path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from make_shapes_ve import make_shapes_ve

    again = make_shapes_ve(shapes_root, tmp_path / "again", seed=0)
    other = make_shapes_ve(shapes_root, tmp_path / "other", seed=1, per_class=2)
    for name in ("ve_train.jsonl", "ve_dev.jsonl", "ve_test.jsonl"):
        assert (shapes_ve / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert (shapes_ve / "ve_train.jsonl").read_bytes() != (tmp_path / "other" / "ve_train.jsonl").read_bytes()
    assert again["images_skipped"] == 0
    assert set(other["counts"]["ve_train.jsonl"].values()) == {2 * again["counts"]["ve_train.jsonl"]["neutral"]}


def test_the_example_trains_through_the_cli(shapes_ve: Path, shapes_root: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A pre-training checkpoint shaped as the demo's: the YAML's preset and model_overrides, ShapesWorld's vocab.
    model_args = yaml.safe_load((EXAMPLE / "ve_shapes.yaml").read_text())["model"]["init_args"]
    vocab_size = len((shapes_root / "vocab.txt").read_text().split())
    pretrained = PretrainTask(
        preset=model_args["preset"], vocab_size=vocab_size, model_overrides=model_args["model_overrides"]
    )
    with torch.no_grad():  # unlike any fresh initialisation, whatever the seed
        for weight in pretrained.parameters():
            weight.add_(1.0)
    checkpoint = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": pretrained.state_dict()}, checkpoint)
    monkeypatch.chdir(tmp_path)
    cli = main(  # run=False: built as `pixelbert fit` builds it, then checked before fitting
        [
            "--config", str(EXAMPLE / "ve_shapes.yaml"),
            "--trainer.fast_dev_run", "1",
            "--model.init_from", str(checkpoint),
            "--data.init_args.train_file", str(shapes_ve / "ve_train.jsonl"),
            "--data.init_args.val_file", str(shapes_ve / "ve_dev.jsonl"),
            "--data.init_args.test_file", str(shapes_ve / "ve_test.jsonl"),
            "--data.init_args.image_root", str(shapes_root / "images"),
            "--data.init_args.tokenizer", str(shapes_root / "vocab.txt"),
            "--data.init_args.batch_size", "6",
            "--data.init_args.num_workers", "0",
        ],
        run=False,
    )  # fmt: skip
    task = cli.model
    assert isinstance(task, ImageTextClassificationTask) and task.labels == ["entailment", "neutral", "contradiction"]
    assert task.model.config.vocab_size == cli.datamodule.vocab_size == vocab_size  # linked from the data
    for name, weight in pretrained.model.state_dict().items():
        assert torch.equal(task.model.state_dict()[name], weight), name

    cli.trainer.fit(task, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 1 and cli.trainer.state.finished
    assert math.isfinite(metrics["train/loss"].item()) and 0 <= metrics["val/accuracy"].item() <= 1
    assert {f"val/class_accuracy_{label}" for label in task.labels} <= set(metrics)

    # One manual step on a training batch: every parameter of backbone and head gets a finite gradient.
    batch = next(iter(cli.datamodule.train_dataloader()))
    task.train().zero_grad()
    loss = task.losses(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    missing = [name for name, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)

    # The task model comes back from a checkpoint by its registered name, with its labels and weights.
    saved = tmp_path / "ve.ckpt"
    cli.trainer.save_checkpoint(saved)
    loaded = Predictor.from_checkpoint(saved).model
    assert isinstance(loaded, PixelBertForImageTextClassification) and loaded.labels == task.labels
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in task.net.state_dict().items())
    # Served from the checkpoint, each dev statement gets the class validation's forward pass gives it.
    task.eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        expected = [task.labels[i] for i in task(batch).argmax(-1).tolist()]
    rows = {r["pairID"]: r for r in _rows(shapes_ve / "ve_dev.jsonl")}
    dev = [rows[i] for i in batch.example_ids]
    served = Predictor.from_checkpoint(saved).predict(
        [str(shapes_root / "images" / r["Flikr30kID"]) for r in dev], [r["sentence2"] for r in dev]
    )
    assert [r["label"] for r in served] == expected


def test_the_task_refuses_labels_in_another_order(shapes_ve: Path, shapes_root: Path) -> None:
    """The CLI links the task's labels from the data; a notebook's Trainer gets a check instead."""
    import pytorch_lightning as pl

    from pixelbert_pl.data.classification import ImageTextClassificationDataModule

    data = ImageTextClassificationDataModule(
        train_file=str(shapes_ve / "ve_train.jsonl"), val_file=str(shapes_ve / "ve_dev.jsonl"),
        image_root=str(shapes_root / "images"), tokenizer=str(shapes_root / "vocab.txt"), num_workers=0,
        labels=["entailment", "neutral", "contradiction"], image_min_size=64, image_max_size=64,
    )  # fmt: skip
    task = ImageTextClassificationTask(
        labels=["neutral", "entailment", "contradiction"], preset="pixelbert_tiny", vocab_size=data.vocab_size
    )
    trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"model labels \['neutral', 'entailment', 'contradiction'\] differ"):
        trainer.fit(task, datamodule=data)


def test_the_docs_start_from_the_checkpoint_the_demo_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The init_from that README and YAML name is the checkpoint `make demo` leaves for fine-tuning (issue 30, 8)."""
    makefile = (EXAMPLE.parents[1] / "Makefile").read_text()
    out = Path(re.search(r"^DEMO_OUT \?= (\S+)$", makefile, re.MULTILINE).group(1))  # type: ignore[union-attr]
    # demo.pretrain with training, scoring and plotting stubbed: only where it saves the weights is real.
    trainer = SimpleNamespace(global_step=0, save_checkpoint=lambda *args, **kwargs: None)
    cli = SimpleNamespace(model=None, datamodule=None, trainer=trainer)
    monkeypatch.setattr(demo, "_cli", lambda args, run=True: cli)
    monkeypatch.setattr(demo, "evaluate", lambda task, data: {})
    monkeypatch.setattr(demo, "save_attention_map", lambda task, data, path: None)
    monkeypatch.setattr(demo, "grounding", lambda task, data: {})
    monkeypatch.chdir(tmp_path)
    _, checkpoint = demo.pretrain(out)
    for doc in (EXAMPLE / "README.md", EXAMPLE / "ve_shapes.yaml"):
        named = re.findall(r"init_from[ :]\s*(\S+\.ckpt)", doc.read_text(encoding="utf-8"))
        assert named and set(named) == {checkpoint}, (doc.name, named, checkpoint)
