"""Every shipped YAML parses (--print_config) and runs a fast_dev_run fit on the CPU through the real CLI."""

import sys
from pathlib import Path
from typing import Any

import pytest

from pixelbert_pl.check_data import read_recipe
from pixelbert_pl.cli import main
from pixelbert_pl.harness import demo

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
DEMO_CONFIGS = Path(str(demo.CONFIGS))  # the demo's recipes, package data of the harness
# The bases (base/) are named by the recipes (`config:`); the recipes are what users run.
# A shipped recipe on this machine: the CPU, full precision, small batches, no worker processes.
ON_CPU = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
    "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
]  # fmt: skip
RECIPES = sorted(p for root in (CONFIGS, DEMO_CONFIGS) for p in root.rglob("*.yaml") if p.parent.name != "base")


def _recipe_id(config: Path) -> str:
    if config.is_relative_to(DEMO_CONFIGS):
        return f"harness/{config.relative_to(DEMO_CONFIGS)}"
    return str(config.relative_to(CONFIGS))


def _data_args(config: Path, roots: dict[str, Path], minilm_path: str) -> list[str]:
    """Point a recipe at a small corpus in its published format; offline, tiny images, no downloaded weights."""
    text = read_recipe(config)["data"]["class_path"]  # comments may name other data modules
    if "ShapesWorld" in text:
        return ["--data.init_args.root", str(roots["shapes"])]
    offline = [
        "--data.init_args.tokenizer", minilm_path,
        "--data.init_args.image_min_size", "64",
        "--data.init_args.image_max_size", "96",
        "--data.init_args.pad_long_sides", "[96]",  # the recipes' sides exceed these tiny images' cap
        "--model.init_args.text_encoder", "null",
        "--model.init_args.visual_weights", "null",
        # Compiling BERT-base is too slow for the CPU; tests/tasks/test_fast_path.py checks the compiled path.
        "--model.init_args.compile", "false",
    ]  # fmt: skip
    if "VQADataModule" in text:
        vqa = roots["vqa"]
        return [
            *offline,
            "--data.init_args.image_root", str(vqa),
            "--data.init_args.train_questions", f"[{vqa / 'v2_OpenEnded_mscoco_train2014_questions.json'}]",
            "--data.init_args.train_annotations", f"[{vqa / 'v2_mscoco_train2014_annotations.json'}]",
            "--data.init_args.val_questions", f"[{vqa / 'v2_OpenEnded_mscoco_val2014_questions.json'}]",
            "--data.init_args.val_annotations", f"[{vqa / 'v2_mscoco_val2014_annotations.json'}]",
            "--data.init_args.answer_min_count", "1",
        ]  # fmt: skip
    if "NLVR2DataModule" in text:
        nlvr2 = roots["nlvr2"]
        return [
            *offline,
            "--data.init_args.train_file", str(nlvr2 / "data" / "train.json"),
            "--data.init_args.val_file", str(nlvr2 / "data" / "dev.json"),
            "--data.init_args.image_root", str(nlvr2 / "images"),
        ]  # fmt: skip
    if "ImageTextClassificationDataModule" in text:
        return [*offline, *_snli_ve_files(roots["flickr"])]
    if "RetrievalDataModule" in text:
        flickr = roots["flickr"]
        return [
            *offline,
            "--data.init_args.karpathy_file", str(flickr / "dataset_flickr30k.json"),
            "--data.init_args.image_root", str(flickr / "flickr30k-images"),
            "--data.init_args.train_splits", "[train]",
            "--data.init_args.num_negatives", "2",
            "--model.init_args.protocols", "[full]",  # COCO 1K needs 5 folds of images; the fixture has 3
        ]  # fmt: skip
    coco, vg = roots["coco_vg"] / "coco", roots["coco_vg"] / "vg"
    corpus = [
        "--data.init_args.karpathy_file", str(coco / "dataset_coco.json"),
        "--data.init_args.image_root", str(coco),
        "--data.init_args.vg_regions", str(vg / "region_descriptions.json"),
        "--data.init_args.vg_image_data", str(vg / "image_data.json"),
        "--data.init_args.vg_image_dirs", f"[{vg / 'VG_100K'}]",
    ]  # fmt: skip
    if "StreamingPretrainDataModule" in text:
        from pixelbert_pl.make_shards import main as make_shards

        shards = Path.cwd() / "shards"  # written as the recipe's head says, from coco_vg_r50.yaml's data section
        recipe = str(CONFIGS / "pretrain" / "coco_vg_r50.yaml")
        assert make_shards(["--config", recipe, "--out", str(shards), "--records-per-shard", "2", *corpus,
                            "--data.init_args.tokenizer", minilm_path]) == 0  # fmt: skip
        return [*offline, "--data.init_args.shards", str(shards)]
    return [*offline, *corpus]


def _snli_ve_files(flickr: Path) -> list[str]:
    """SNLI-VE's jsonl layout over the Flickr30K fixture's images: each image's captions as statements, the labels
    in turn."""
    import json

    labels = ("entailment", "neutral", "contradiction")
    images = json.loads((flickr / "dataset_flickr30k.json").read_text())["images"]
    rows = [
        {"Flikr30kID": image["filename"], "sentence2": sentence["raw"], "gold_label": labels[k % 3],
         "pairID": f"{image['filename']}#{k}"}
        for image in images for k, sentence in enumerate(image["sentences"])
    ]  # fmt: skip
    paths = {split: Path.cwd() / f"snli_ve_{split}.jsonl" for split in ("train", "dev")}
    for split, path in paths.items():
        path.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(rows) if (i % 4 == 0) == (split == "dev")))
    return [
        "--data.init_args.train_file", str(paths["train"]), "--data.init_args.val_file", str(paths["dev"]),
        "--data.init_args.image_root", str(flickr / "flickr30k-images"),
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])  # LightningCLI warns when given args beside a real argv


def test_there_are_recipes() -> None:
    folders = {p.parent.name for p in RECIPES if p.is_relative_to(CONFIGS)}
    assert folders >= {"pretrain", "vqa", "nlvr2", "retrieval", "classification"}
    demos = {p.name for p in RECIPES if p.is_relative_to(DEMO_CONFIGS)}
    assert demos == {f"{name}_shapes.yaml" for name in ("pretrain", "vqa", "nlvr2", "retrieval")} | {
        "pretrain_shapes_warmup.yaml"
    }


@pytest.mark.parametrize("config", RECIPES, ids=_recipe_id)
def test_print_config(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "class_path:" in printed and "trainer:" in printed


@pytest.mark.parametrize("config", RECIPES, ids=_recipe_id)
def test_fast_dev_run(
    config: Path, tmp_path, monkeypatch, shapes_root, coco_vg_root, vqa_root, nlvr2_root, flickr_root, minilm_path
) -> None:
    roots = {
        "shapes": shapes_root,
        "coco_vg": coco_vg_root,
        "vqa": vqa_root,
        "nlvr2": nlvr2_root,
        "flickr": flickr_root,
    }
    monkeypatch.chdir(tmp_path)
    args = [
        "fit", "--config", str(config),
        "--trainer.fast_dev_run", "1",
        *ON_CPU,
        *_data_args(config, roots, minilm_path),
    ]  # fmt: skip
    cli = main(args)
    assert cli.trainer.global_step == 1
    assert cli.trainer.state.finished
    assert not list(tmp_path.rglob("*.ckpt")), "fast_dev_run must not write checkpoints"


def _fit_best(config: Path, roots: dict, minilm_path: str) -> Path:
    """A short `pixelbert fit` of a shipped recipe (two steps, one validation) in the cwd; its best.ckpt."""
    main([
        "fit", "--config", str(config),
        *ON_CPU, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        *_data_args(config, roots, minilm_path),
    ])  # fmt: skip
    name = read_recipe(config)["trainer"]["logger"]["init_args"]["name"]
    best = Path("lightning_logs") / name / "checkpoints" / "best.ckpt"  # the path the recipe's predict line names
    assert best.is_file(), f"{config.name}: fit wrote no {best}"
    return best.resolve()


def _predict(config: Path, roots: dict, minilm_path: str, writer: str, out: Path, *extra: str) -> Any:
    """`pixelbert predict` with a shipped recipe on the CPU, writing `out` with the `writer` callback."""
    return main([
        "predict", "--config", str(config),
        *ON_CPU, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        *_data_args(config, roots, minilm_path), *extra,
        f"--trainer.callbacks+=pixelbert_pl.tasks.{writer}", "--trainer.callbacks.output_file", str(out),
    ])  # fmt: skip


def test_vqa_test_dev_recipe_writes_the_evalai_file_from_the_best_checkpoint(
    tmp_path, monkeypatch, vqa_root, minilm_path
) -> None:
    import json

    from corpora import VQA_TEST_DEV
    from pixelbert_pl.inference import Predictor

    monkeypatch.chdir(tmp_path)
    config = CONFIGS / "vqa" / "vqa_r50.yaml"
    best = _fit_best(config, {"vqa": vqa_root}, minilm_path)
    out = tmp_path / "vqa_test-dev.json"
    pattern = "test2015/COCO_test2015_{image_id:012d}.jpg"
    cli = _predict(
        config, {"vqa": vqa_root}, minilm_path, "VQAResultWriter", out,
        "--data.init_args.test_questions", str(vqa_root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"),
        "--data.init_args.test_image_pattern", pattern, "--ckpt_path", str(best),
    )  # fmt: skip
    assert cli.trainer.ckpt_path == str(best)
    rows = json.loads(out.read_text())  # EvalAI's format: [{"question_id": int, "answer": str}, ...]
    assert sorted(r["question_id"] for r in rows) == sorted(VQA_TEST_DEV)
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) and r["answer"] for r in rows)
    # The answers are the best checkpoint's: what the same weights answer outside Lightning.
    predictor = Predictor.from_checkpoint(best)
    ids = sorted(VQA_TEST_DEV)
    images = [str(vqa_root / pattern.format(image_id=VQA_TEST_DEV[q][0])) for q in ids]
    expected = [answer for answer, _ in predictor.answer(images, [VQA_TEST_DEV[q][1] for q in ids])]
    assert [r["answer"] for r in sorted(rows, key=lambda r: r["question_id"])] == expected


def test_nlvr2_predict_writes_the_test_p_predictions_file_from_the_best_checkpoint(
    tmp_path, monkeypatch, nlvr2_root, minilm_path
) -> None:
    from corpora import NLVR2_TEST1

    monkeypatch.chdir(tmp_path)
    config = CONFIGS / "nlvr2" / "nlvr2_r50.yaml"
    best = _fit_best(config, {"nlvr2": nlvr2_root}, minilm_path)
    out = tmp_path / "nlvr2_test-P.csv"
    cli = _predict(
        config, {"nlvr2": nlvr2_root}, minilm_path, "NLVR2ResultWriter", out,
        "--data.init_args.test_file", str(nlvr2_root / "data" / "test1.json"), "--ckpt_path", str(best),
    )  # fmt: skip
    assert cli.trainer.ckpt_path == str(best)
    lines = out.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == sorted(NLVR2_TEST1)
    assert all(line.split(",")[1] in {"True", "False"} for line in lines)


def _checkpoint_naming(task_path: str, shapes_root: Path, out: Path) -> Path:
    """A real `pixelbert fit` checkpoint of the demo's VQA recipe whose hyper-parameters name `task_path`."""
    import torch

    from pixelbert_pl.models.checkpoint_reader import load_checkpoint
    from vqa_runs import vqa_args

    main(["fit", *vqa_args(shapes_root, out, max_steps=1)])
    checkpoint = load_checkpoint(out / "vqa" / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"]["_class_path"] = task_path
    path = out / f"{task_path}.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_ckpt_path_imports_nothing_a_checkpoint_names(shapes_root, tmp_path, capsys, subcommand) -> None:
    """LightningCLI copied the file's `_class_path` into the model config: `this.Zen` printed the Zen of Python
    under `fit`, and a BoringModel took the recipe's task's place under `validate`."""
    from vqa_runs import vqa_args

    sys.modules.pop("this", None)
    for planted in ("this.Zen", "pytorch_lightning.demos.boring_classes.BoringModel"):
        path = _checkpoint_naming(planted, shapes_root, tmp_path / planted)
        with pytest.raises(ValueError, match=rf"checkpoint holds a {planted}, the configuration builds a .*VQATask"):
            main([subcommand, *vqa_args(shapes_root, tmp_path / "runs", "--ckpt_path", str(path))])
    assert "this" not in sys.modules and "Beautiful is better than ugly" not in capsys.readouterr().out


def test_ckpt_path_uses_the_configuration_and_warns_about_differences(shapes_root, tmp_path, caplog) -> None:
    from vqa_runs import vqa_args

    path = _checkpoint_naming("pixelbert_pl.tasks.vqa.VQATask", shapes_root, tmp_path / "trained")
    lr = ["--model.init_args.optimizer.lr", "0.123"]
    cli = main(["validate", *vqa_args(shapes_root, tmp_path / "runs", *lr, "--ckpt_path", str(path))])
    assert cli.model.optimizer_config.lr == 0.123  # the command line wins over the file's hyper-parameters
    assert "the configuration's ['optimizer'] differ from the checkpoint's hyper-parameters" in caplog.text


def test_a_run_that_fails_before_its_first_step_leaves_no_log_folder(shapes_root, tmp_path) -> None:
    """Each failed attempt left an empty `version_N` beside the runs that had logs."""
    import json

    from vqa_runs import vqa_args

    crash = ["--trainer.callbacks+=cli_callbacks.CrashAt", "--trainer.callbacks.step", "0"]
    with pytest.raises(RuntimeError, match="crashed before step 0"):
        main(["fit", *vqa_args(shapes_root, tmp_path, *crash)])
    assert not list((tmp_path / "vqa").glob("version_*"))
    later = [{"class_path": "cli_callbacks.CrashAt", "init_args": {"step": 4}}]
    with pytest.raises(RuntimeError, match="crashed before step 4"):
        main(["fit", *vqa_args(shapes_root, tmp_path, "--trainer.callbacks", json.dumps(later))])
    (kept,) = (tmp_path / "vqa").glob("version_*")  # a run that trained keeps its logs
    assert (kept / "metrics.csv").is_file()


# What a row of `pixelbert predict`'s predictions.jsonl holds for each task (besides "id").
PREDICTION_FIELDS = {
    "pretrain": {"image", "match", "itm_label"},  # a row per (image, caption) pair, matched or a negative
    "vqa": {"answer", "score"},
    "nlvr2": {"prediction", "score"},
    "retrieval": {"texts"},  # a row per test image: its best texts, [text position, score]
}
DEMO_RECIPES = [p for p in RECIPES if p.is_relative_to(DEMO_CONFIGS) and "warmup" not in p.name]


@pytest.mark.parametrize("config", DEMO_RECIPES, ids=_recipe_id)
def test_predict_writes_one_json_line_per_sample(config: Path, tmp_path, monkeypatch, shapes_root, capsys) -> None:
    """`pixelbert predict` with nothing but the recipe: predictions went nowhere without a writer callback."""
    import json
    import re

    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(config), *ON_CPU, "--trainer.limit_predict_batches", "2",
          "--data.init_args.root", str(shapes_root)])  # fmt: skip
    printed = re.search(r"predictions: (\S+) \((\d+) rows\)", capsys.readouterr().out)
    assert printed is not None and Path(printed.group(1)).is_relative_to(tmp_path)
    rows = [json.loads(line) for line in Path(printed.group(1)).read_text().splitlines()]
    task = config.name.removesuffix("_shapes.yaml")
    assert rows and all(set(row) == {"id", *PREDICTION_FIELDS[task]} for row in rows)
    assert len({json.dumps(row["id"]) for row in rows}) == len(rows) == int(printed.group(2))
