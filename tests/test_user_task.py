"""A task defined outside the package, written from the docs alone (docs/new-benchmark.md: its code block, verbatim):
fitted through `pixelbert fit`, predicted by `pixelbert predict`, exported by `pixelbert-export`, served by
`Predictor`, and every prediction is what validation computes. And serving needs no Lightning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from pixelbert_pl import Predictor
from pixelbert_pl.cli import main
from pixelbert_pl.export import main as export

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("circle", "square", "triangle")


def _docs_task_code() -> str:
    page = ROOT.joinpath("docs", "new-benchmark.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", page, re.DOTALL).group(1)  # type: ignore[union-attr]


def _presence_rows(shapes_root: Path, split: str) -> list[dict]:
    """One row per (image, shape word): how many of the image's objects have that shape."""
    scenes = json.loads((shapes_root / "scenes.json").read_text())["scenes"]
    labels = ("absent", "once", "several")
    counts = {s["file_name"]: [o["shape"] for o in s["objects"]] for s in scenes if s["split"] == split}
    return [
        {"image": name, "text": f"a {shape}", "label": labels[min(2, shapes.count(shape))], "id": f"{name}:{shape}"}
        for name, shapes in counts.items() for shape in SHAPES
    ]  # fmt: skip


@pytest.fixture
def user_task(shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    (tmp_path / "shape_task.py").write_text(_docs_task_code())
    monkeypatch.syspath_prepend(str(tmp_path))  # PYTHONPATH=. in the docs
    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    monkeypatch.chdir(tmp_path)
    files = {}
    for split, name in (("train", "train"), ("val", "val"), ("val", "predict")):
        rows = _presence_rows(shapes_root, split)[: 48 if split == "train" else 12]
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 4, "enable_progress_bar": False,
                    "enable_model_summary": False, "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": str(tmp_path / "logs"), "name": "shape"}},
                    "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True}}]},
        "model": {"class_path": "shape_task.ShapePresenceTask",
                  "init_args": {"preset": "pixelbert_tiny", "optimizer": {"lr": 1e-3, "warmup_steps": 0}}},
        "data": {"class_path": "pixelbert_pl.data.ImageTextClassificationDataModule", "init_args": {
            "train_file": str(files["train"]), "val_file": str(files["val"]), "test_file": str(files["predict"]),
            "labels": ["absent", "once", "several"], "image_root": str(shapes_root / "images"),
            "image_pattern": "{image}", "text_field": "text", "label_field": "label", "id_field": "id",
            "tokenizer": str(shapes_root / "vocab.txt"), "image_min_size": 64, "image_max_size": 64,
            "batch_size": 8, "num_workers": 0}},
    }  # fmt: skip
    (tmp_path / "shape.yaml").write_text(yaml.safe_dump(config))
    return {"config": tmp_path / "shape.yaml", "files": files, "root": tmp_path}


def test_a_task_from_the_docs_fits_predicts_exports_and_serves(user_task: dict, shapes_root: Path, capsys) -> None:
    config, root = str(user_task["config"]), user_task["root"]
    cli = main(["fit", "--config", config])
    assert cli.trainer.global_step == 4 and type(cli.model).__name__ == "ShapePresenceTask"
    last = root / "logs" / "shape" / "checkpoints" / "last.ckpt"
    assert last.is_file()

    # What validation computes, sample by sample.
    task = cli.model.eval()
    expected = {}
    with torch.no_grad():
        for batch in cli.datamodule.val_dataloader():
            for i, result in zip(batch.example_ids, task.net.postprocess(task(batch), batch), strict=True):
                expected[i] = result["label"]
    assert len(expected) == 12

    capsys.readouterr()
    main(["predict", "--config", config, "--ckpt_path", str(last)])
    printed = re.search(r"predictions: (\S+) \((\d+) rows\)", capsys.readouterr().out)
    assert printed is not None and int(printed.group(2)) == 12
    rows = [json.loads(line) for line in Path(printed.group(1)).read_text().splitlines()]
    assert {r["id"]: r["label"] for r in rows} == expected

    exported = root / "exported"
    assert export(["--import", "shape_task", str(last), str(exported)]) == 0
    predictor = Predictor.from_pretrained(exported)
    val = [json.loads(line) for line in user_task["files"]["val"].read_text().splitlines()]
    images = [str(shapes_root / "images" / r["image"]) for r in val]
    served = predictor.predict(images, [r["text"] for r in val])
    assert {r["id"]: s["label"] for r, s in zip(val, served, strict=True)} == expected
    checkpoint = Predictor.from_checkpoint(last).predict(images, [r["text"] for r in val])
    assert checkpoint == served


BLOCK_TRAINING_PACKAGES = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("pytorch_lightning", "lightning", "lightning_fabric", "datasets", "torchdata", "tensorboard")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")

    sys.meta_path.insert(0, Block())
    import pixelbert_pl
    from pixelbert_pl import Predictor

    predictor = Predictor.from_pretrained(sys.argv[1])
    print(predictor.predict(sys.argv[2], "a red circle")["label"])
    """
)


def test_serving_needs_no_lightning_datasets_torchdata_or_tensorboard(shapes_root: Path, tmp_path: Path) -> None:
    from pixelbert_pl import PixelBertProcessor
    from pixelbert_pl.models import PixelBertForImageTextClassification, create_model
    from pixelbert_pl.processing import ProcessingConfig

    processing = ProcessingConfig(tokenizer=str(shapes_root / "vocab.txt"), image_min_size=64, image_max_size=64)
    processor = PixelBertProcessor.from_config(processing)
    backbone = create_model("pixelbert_tiny", processing=processing, vocab_size=len(processor.tokenizer))
    model = PixelBertForImageTextClassification(backbone, ["no", "yes"]).eval()
    model.save_pretrained(tmp_path / "export", processor)
    image = next((shapes_root / "images").iterdir())
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TRAINING_PACKAGES, str(tmp_path / "export"), str(image)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == Predictor(model, processor).predict(str(image), "a red circle")["label"]
