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
    from pixelbert_pl.tasks.base import load_checkpoint

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
    assert "exported VQATask" in done.stdout

    validated = main(["validate", *vqa_args(shapes_root, tmp_path / "validate", "--ckpt_path", str(last))])
    accuracy = float(validated.trainer.callback_metrics["val/vqa_accuracy_overall"])

    records = ShapesWorldVQADataModule(root=str(shapes_root), num_workers=0).records("val")
    images, questions = [r.image_path for r in records], [r.question for r in records]
    from_checkpoint = Predictor.from_checkpoint(last)  # no tokenizer, no data module: the checkpoint suffices
    from_pretrained = Predictor.from_pretrained(exported)
    assert from_checkpoint.transform.min_size == from_pretrained.transform.min_size == IMAGE_SIZE
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


def test_a_checkpoint_names_a_registered_task_and_runs_no_code(trained, tmp_path) -> None:
    from pixelbert_pl.tasks.base import load_checkpoint

    checkpoint = load_checkpoint(trained["folder"] / "last.ckpt")
    assert checkpoint["hyper_parameters"]["_class_path"] == "pixelbert_pl.tasks.VQATask"
    checkpoint["hyper_parameters"]["_class_path"] = "torch.hub.load"  # would run a planted hubconf.py if imported
    planted = tmp_path / "planted.ckpt"
    torch.save(checkpoint, planted)
    with pytest.raises(ValueError, match=r"task 'torch.hub.load' is not a registered task"):
        Predictor.from_checkpoint(planted)


def _as_written_before_processing_moved(checkpoint: dict) -> dict:
    """The layout of checkpoints from when `PixelBertConfig` held the preprocessing fields: one config dict, the
    task's hyper-parameters with the image sizes in `model_overrides`, and no "processing" entry."""
    saved = checkpoint["pixelbert"]
    processing = saved.pop("processing")
    saved["config"].update(
        processing, image_mean=tuple(processing["image_mean"]), image_std=tuple(processing["image_std"])
    )
    hparams = checkpoint["hyper_parameters"]
    hparams.pop("processing")
    hparams["model_overrides"] = {**(hparams.get("model_overrides") or {}), "image_min_size": IMAGE_SIZE,
                                  "image_max_size": IMAGE_SIZE}  # fmt: skip
    return checkpoint


def test_checkpoints_and_exports_from_before_processing_moved_still_predict(trained, shapes_root, tmp_path) -> None:
    from pixelbert_pl.models import pretrained
    from pixelbert_pl.tasks import VQATask
    from pixelbert_pl.tasks.base import load_checkpoint

    last = trained["folder"] / "last.ckpt"
    records = ShapesWorldVQADataModule(root=str(shapes_root), num_workers=0).records("val")[:6]
    images, questions = [r.image_path for r in records], [r.question for r in records]
    current = Predictor.from_checkpoint(last)
    expected = current.answer(images, questions)

    old = tmp_path / "old.ckpt"
    torch.save(_as_written_before_processing_moved(load_checkpoint(last)), old)
    loaded = Predictor.from_checkpoint(old)
    assert loaded.processing == current.processing and loaded.processing.image_min_size == IMAGE_SIZE
    assert loaded.answer(images, questions) == expected
    hparams = {k: v for k, v in load_checkpoint(old)["hyper_parameters"].items() if not k.startswith("_")}
    task = VQATask(**hparams)  # what the old hyper-parameters alone rebuild: the sizes become processing
    assert task.model.processing.image_min_size == IMAGE_SIZE and "image_min_size" not in task.hparams.model_overrides

    exported = current.save_pretrained(tmp_path / "exported")
    document = json.loads((exported / pretrained.CONFIG_NAME).read_text())
    document["model"].update(document.pop("processing"))  # an export's config.json of that time
    (exported / pretrained.CONFIG_NAME).write_text(json.dumps(document))
    assert Predictor.from_pretrained(exported).answer(images, questions) == expected
