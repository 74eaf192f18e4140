"""`make demo`'s driver on a tiny budget: trains, scores, writes results.json with metrics beside chance."""

import json
import math
import sys

import yaml

from pixelbert_pl.check_data import read_recipe
from pixelbert_pl.harness import demo
from pixelbert_pl.metrics import ANSWER_TYPES

TINY_PRETRAIN = [
    "--trainer.max_steps", "3",
    "--trainer.val_check_interval", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--data.init_args.num_images", "40",
    "--data.init_args.batch_size", "4",
    "--data.init_args.num_workers", "0",
]  # fmt: skip
TINY_WARMUP = [
    "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false", "--data.init_args.num_images=30", "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
]  # fmt: skip
TINY_FINETUNE = [
    "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false",
    "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
]  # fmt: skip


def test_demo_writes_results_with_chance_levels(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["demo"])
    out = tmp_path / "demo"
    code = demo.main(
        [
            "--out", str(out), "--seed", "3",
            *TINY_PRETRAIN,
            *(f"--warmup-arg={a}" for a in TINY_WARMUP),
            *(f"--finetune-arg={a}" for a in TINY_FINETUNE),
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    pre = results["pretrain"]
    assert pre["warmup_steps"] == 2 and pre["train_steps"] == 3 and pre["itm_chance"] == 0.5
    # The warm-up trained on its own one-shape corpus, and the main run started from its weights.
    warmup = json.loads((out / "shapesworld_one" / "scenes.json").read_text())["scenes"]
    assert {len(s["objects"]) for s in warmup} == {1} and (out / "pretrain_warmup.ckpt").is_file()
    (main_config,) = (out / "pretrain").glob("version_*/config.yaml")  # what LightningCLI ran, as it saved it
    assert f"init_from: {out / 'pretrain_warmup.ckpt'}" in main_config.read_text()
    # --seed 3 seeded every stage's training, and the corpus is the one every seed trains on.
    assert results["seed"] == 3
    for config in out.glob("*/version_*/config.yaml"):
        ran = yaml.safe_load(config.read_text())
        assert ran["seed_everything"] == 3 and ran["data"]["init_args"]["seed"] == 3, config
        assert ran["data"]["init_args"].get("generator_seed", 0) == 0, config
    assert len(list(out.glob("*/version_*/config.yaml"))) == 6  # warm-up, pre-training and 4 fine-tunings
    assert abs(pre["mlm_colour_chance"] - 1 / 6) < 1e-9 and abs(pre["mlm_shape_chance"] - 1 / 4) < 1e-9
    for key in ("itm_accuracy", "mlm_attribute_accuracy", "mlm_colour_accuracy", "mlm_shape_accuracy"):
        assert 0.0 <= pre[key] <= 1.0
    assert set(pre["itm_hard_negative_accuracy"]) >= {"all", "colour", "shape"}
    vqa, scratch, nlvr2, retrieval = (results[k] for k in ("vqa", "vqa_from_scratch", "nlvr2", "retrieval"))
    for r in (vqa, scratch):
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 < r["majority_baseline"] < 1.0 and r["train_steps"] == 2
        per_type = [r[f"accuracy_{t}"] for t in ANSWER_TYPES]
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in per_type)  # NaN: a type with no val question
    assert 0.0 <= nlvr2["accuracy"] <= 1.0 and 0.0 <= nlvr2["consistency"] <= nlvr2["accuracy"]
    # NLVR2 starts from the VQA fine-tuning's weights, the others from pre-training's (or none).
    assert [results[k]["init_from"] for k in ("vqa", "vqa_from_scratch", "nlvr2", "retrieval")] == [
        "pretrain",
        "scratch",
        "vqa",
        "pretrain",
    ]
    (nlvr2_config,) = (out / "nlvr2").glob("version_*/config.yaml")
    assert f"init_from: {out / 'vqa.ckpt'}" in nlvr2_config.read_text()
    assert {"i2t_r1", "t2i_r1", "chance_r1"} <= set(retrieval)
    assert all(0.0 <= retrieval[k] <= 1.0 for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"))  # fractions, not %
    assert retrieval["chance_r1"] == 1 / 4  # 40 images: 4 in val
    printed = capsys.readouterr().out
    assert "val ITM accuracy" in printed and "chance" in printed and "VQA (from scratch)" in printed
    assert "NLVR2 (from VQA fine-tuning)" in printed
    assert (out / "pretrain").is_dir() and (out / "vqa").is_dir()  # the CSV logs sit beside the results
    assert (out / "attention.png").stat().st_size > 0
    grounding = results["grounding"]
    assert 0 <= grounding["pointing_hit_rate"] <= 1 and 0 < grounding["random_hit_rate"] < 1
    layers = read_recipe(demo.CONFIG)["model"]["init_args"]["model_overrides"]["num_hidden_layers"]
    assert set(grounding["by_layer"]) == {str(i) for i in range(layers)} and "val pointing game" in printed


def test_no_warmup_pretrains_from_random_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["demo"])
    assert demo.main(["--out", str(tmp_path), "--stages", "pretrain", "--no-warmup", *TINY_PRETRAIN]) == 0
    pre = json.loads((tmp_path / "results.json").read_text())["pretrain"]
    assert pre["warmup_steps"] == 0 and pre["train_steps"] == 3
    assert not (tmp_path / "pretrain_warmup.ckpt").exists() and not (tmp_path / "shapesworld_one").exists()


def test_stages_are_checked(tmp_path) -> None:
    import pytest

    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--stages", "pretrain,vqa2"])


def test_resume_from_last_checkpoint(tmp_path, monkeypatch, shapes_root) -> None:
    from pixelbert_pl.cli import main

    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    monkeypatch.chdir(tmp_path)
    common = [
        "--config", str(demo.CONFIG),
        "--data.init_args.root", str(shapes_root),
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.logger.init_args.version", "0",  # both runs in one folder, where `last` is looked for
        "--trainer.enable_progress_bar", "false",
        "--trainer.limit_val_batches", "0",
    ]  # fmt: skip
    first = main(["fit", *common, "--trainer.max_steps", "2"])
    assert first.trainer.global_step == 2
    resumed = main(["fit", *common, "--trainer.max_steps", "4", "--ckpt_path", "last"])
    assert resumed.trainer.ckpt_path is not None and resumed.trainer.ckpt_path.endswith("last.ckpt")
    assert resumed.trainer.global_step == 4
