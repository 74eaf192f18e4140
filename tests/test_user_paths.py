"""The paths between the commands, as a user takes them with a shipped recipe (tiny preset, small ShapesWorld):
`pixelbert fit` that stops -> `pixelbert fit --ckpt_path last` (continues at its step) -> `pixelbert-export` ->
`Predictor.from_checkpoint` / `from_pretrained` -> the accuracy `pixelbert validate` reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from numerics import FLOAT32, assert_close_scaled
from pixelbert_pl import Predictor
from pixelbert_pl.cli import main
from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule
from pixelbert_pl.metrics.vqa import vqa_accuracy
from vqa_runs import IMAGE_SIZE, vqa_args


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory) -> dict[str, object]:
    """A VQA fit that dies after step 3, then the same recipe with `--ckpt_path last` and the shipped callbacks."""
    sys_argv, sys.argv = sys.argv, ["pixelbert"]
    out = tmp_path_factory.mktemp("runs")
    callbacks = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": 3}},
        {"class_path": "cli_callbacks.CrashAt", "init_args": {"step": 4}},
    ]  # fmt: skip
    try:
        with pytest.raises(RuntimeError, match="crashed before step 4"):
            main(["fit", *vqa_args(shapes_root, out, "--trainer.callbacks", json.dumps(callbacks))])
        steps = "--trainer.callbacks+=cli_callbacks.RecordSteps"
        resumed = main(["fit", *vqa_args(shapes_root, out, steps, "--ckpt_path", "last")])
    finally:
        sys.argv = sys_argv
    (recorder,) = [c for c in resumed.trainer.callbacks if type(c).__name__ == "RecordSteps"]
    return {"out": out, "steps": recorder.steps, "global_step": resumed.trainer.global_step,
            "folder": out / "vqa" / "checkpoints"}  # fmt: skip


def test_fit_ckpt_path_last_continues_the_stopped_run(trained) -> None:
    assert trained["steps"] == [3, 4, 5] and trained["global_step"] == 6
    folder = trained["folder"]
    assert {"last.ckpt", "best.ckpt"} <= {p.name for p in folder.iterdir()}
    # Each run logs to its own version folder; both found their checkpoints in the one run folder.
    assert sorted(p.name for p in (trained["out"] / "vqa").glob("version_*")) == ["version_0", "version_1"]
    assert not list((trained["out"] / "vqa").glob("version_*/checkpoints"))


def test_best_ckpt_is_kept_by_the_tasks_monitor(trained) -> None:
    from pixelbert_pl.models.checkpoint_reader import load_checkpoint

    states = load_checkpoint(trained["folder"] / "best.ckpt")["callbacks"]
    (best,) = [v for k, v in states.items() if k.startswith("BestCheckpoint")]
    assert "'monitor': 'val/vqa_accuracy_overall', 'mode': 'max'" in next(k for k in states if "Best" in k)
    assert best["best_model_path"].endswith("best.ckpt") and torch.isfinite(best["best_model_score"])


def test_ckpt_path_last_with_no_checkpoint_is_an_error(shapes_root, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no last\*\.ckpt in .*vqa/checkpoints"):
        main(["fit", *vqa_args(shapes_root, tmp_path / "elsewhere", "--ckpt_path", "last")])


def test_export_and_predictors_give_what_validate_computes(trained, shapes_root, tmp_path) -> None:
    last = trained["folder"] / "last.ckpt"
    exported = tmp_path / "exported"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "pixelbert_pl.export", str(last), str(exported)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported PixelBertForQuestionAnswering" in done.stdout

    validated = main(["validate", *vqa_args(shapes_root, tmp_path / "validate", "--ckpt_path", str(last))])
    accuracy = float(validated.trainer.callback_metrics["val/vqa_accuracy_overall"])

    records = ShapesWorldVQADataModule(root=str(shapes_root), num_workers=0).records("val")
    images, questions = [r.image_path for r in records], [r.question for r in records]
    from_checkpoint = Predictor.from_checkpoint(last)  # no tokenizer, no data module: the checkpoint suffices
    from_pretrained = Predictor.from_pretrained(exported)
    assert from_checkpoint.processor.transform.min_size == from_pretrained.processor.transform.min_size == IMAGE_SIZE
    predicted = from_checkpoint.answer(images, questions)
    assert from_pretrained.answer(images, questions) == predicted
    answers = [a for a, _ in predicted]
    expected = sum(vqa_accuracy(a, r.answers) for a, r in zip(answers, records, strict=True)) / len(records)
    assert accuracy == pytest.approx(expected, abs=1e-6)  # logged as a fraction, like every metric
    # Question by question, the probabilities of validation's forward pass (which depend on the resize used).
    task = validated.model.eval()
    with torch.no_grad():
        best = torch.cat([task(batch).sigmoid().max(dim=-1).values for batch in validated.datamodule.val_dataloader()])
    assert_close_scaled(torch.tensor([p for _, p in predicted]), best, FLOAT32)  # batched as validation is, or not


def test_a_checkpoint_names_a_registered_task_model_and_runs_no_code(trained, tmp_path) -> None:
    from pixelbert_pl.models.checkpoint_reader import load_checkpoint

    checkpoint = load_checkpoint(trained["folder"] / "last.ckpt")
    assert checkpoint["hyper_parameters"]["_class_path"] == "pixelbert_pl.tasks.VQATask"
    assert checkpoint["pixelbert"]["task_model"] == "PixelBertForQuestionAnswering"
    planted = tmp_path / "planted.ckpt"
    checkpoint["pixelbert"]["task_model"] = "torch.hub.load"  # would run a planted hubconf.py if imported
    torch.save(checkpoint, planted)
    with pytest.raises(ValueError, match=r"task model 'torch.hub.load' is not registered"):
        Predictor.from_checkpoint(planted)
    del checkpoint["pixelbert"]["task_model"]  # the layout before task models: the Lightning task's name is read
    checkpoint["hyper_parameters"]["_class_path"] = "torch.hub.load"
    torch.save(checkpoint, planted)
    with pytest.raises(ValueError, match=r"written for the task 'torch.hub.load'"):
        Predictor.from_checkpoint(planted)


def _as_written_before_task_models(checkpoint: dict) -> dict:
    """`models/layouts.py`'s layout 1: the Lightning task held the backbone and heads itself (no `net.` prefix), and
    its checkpoint named no task model."""
    checkpoint["state_dict"] = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
    for key in ("task_model", "task_args"):
        del checkpoint["pixelbert"][key]
    return checkpoint


def test_checkpoints_and_exports_from_before_task_models_still_predict(trained, shapes_root, tmp_path) -> None:
    """Each of the older layouts `models/layouts.py` lists, written from today's files as that version wrote them."""
    from pixelbert_pl.models import pretrained
    from pixelbert_pl.models.checkpoint_reader import load_checkpoint
    from pixelbert_pl.processing.processor import PROCESSOR_NAME

    last = trained["folder"] / "last.ckpt"
    records = ShapesWorldVQADataModule(root=str(shapes_root), num_workers=0).records("val")[:6]
    images, questions = [r.image_path for r in records], [r.question for r in records]
    current = Predictor.from_checkpoint(last)
    expected = current.answer(images, questions)

    old = tmp_path / "old.ckpt"
    torch.save(_as_written_before_task_models(load_checkpoint(last)), old)
    assert not any(k.startswith("net.") for k in load_checkpoint(old)["state_dict"])
    assert Predictor.from_checkpoint(old).answer(images, questions) == expected
    # Lightning loads it too (`--ckpt_path`): PixelBertTask.on_load_checkpoint moves the weights under `net.`.
    validated = main(["validate", *vqa_args(shapes_root, tmp_path / "validate", "--ckpt_path", str(old))])
    again = main(["validate", *vqa_args(shapes_root, tmp_path / "again", "--ckpt_path", str(last))])
    metric = "val/vqa_accuracy_overall"
    assert float(validated.trainer.callback_metrics[metric]) == float(again.trainer.callback_metrics[metric])

    exported = current.save_pretrained(tmp_path / "exported")
    document = json.loads((exported / pretrained.CONFIG_NAME).read_text())
    document["task"] = "VQATask"  # layout 2: an export of that time named the Lightning task, and no processor file
    document["task_args"] = {"answer_vocab": document["task_args"]["answer_vocab"], "hard_negatives": 3}
    del document["task_model"]
    (exported / pretrained.CONFIG_NAME).write_text(json.dumps(document))
    (exported / PROCESSOR_NAME).unlink()
    assert Predictor.from_pretrained(exported).answer(images, questions) == expected
