"""Every shipped YAML parses (--print_config) and runs a fast_dev_run fit on the CPU through the real CLI."""

import sys
from pathlib import Path

import pytest

from pixelbert_pl.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
# Fragments (callbacks, loggers) are included by path from the recipes; the recipes are what users run.
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base")


def _data_args(config: Path, shapes_root: Path, coco_vg_root: Path, minilm_path: str) -> list[str]:
    text = config.read_text()
    if "data.downstream.ShapesWorld" in text or "ShapesWorldDataModule" in text:
        return ["--data.init_args.root", str(shapes_root)]
    coco, vg = coco_vg_root / "coco", coco_vg_root / "vg"
    return [
        "--data.init_args.karpathy_file", str(coco / "dataset_coco.json"),
        "--data.init_args.image_root", str(coco),
        "--data.init_args.vg_regions", str(vg / "region_descriptions.json"),
        "--data.init_args.vg_image_data", str(vg / "image_data.json"),
        "--data.init_args.vg_image_dirs", f"[{vg / 'VG_100K'}]",
        "--data.init_args.tokenizer", minilm_path,
        "--data.init_args.image_min_size", "64",
        "--data.init_args.image_max_size", "96",
        "--model.init_args.text_encoder", "null",
        "--model.init_args.visual_weights", "null",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])  # LightningCLI warns when given args beside a real argv


def test_there_are_recipes() -> None:
    assert any("demo" in str(p) for p in RECIPES) and any("pretrain" in str(p) for p in RECIPES)


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_print_config(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "class_path:" in printed and "trainer:" in printed


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_fast_dev_run(config: Path, tmp_path, monkeypatch, shapes_root, coco_vg_root, minilm_path) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "fit", "--config", str(config),
        "--trainer.fast_dev_run", "1",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.precision", "32-true",
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        *_data_args(config, shapes_root, coco_vg_root, minilm_path),
    ]  # fmt: skip
    cli = main(args)
    assert cli.trainer.global_step == 1
    assert cli.trainer.state.finished
