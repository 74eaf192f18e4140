"""The recipes composed from one base (`config: ../base/gpu.yaml`, dotted keys for what differs) give the settings
they had as whole files, the callbacks come from the CLI's one `callbacks.yaml`, and the old DataModule class paths
still load."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from pixelbert_pl.check_data import build_datamodule, read_recipe
from pixelbert_pl.cli import CALLBACKS
from recipe_files import DEMO_CONFIGS, printed_config, recipes

BEFORE = Path(__file__).resolve().parent / "fixtures" / "recipe_configs"  # what capture.py there wrote at ebe3d58
# DataModules moved to `pixelbert_pl.data.<Class>` (issue 33); the old module paths are aliases for one release.
OLD_CLASS_PATH = re.compile(r"^pixelbert_pl\.data\.(?:downstream|datamodules|classification|streaming)\.(\w+)$")
# Settings changed since ebe3d58, with the value each recipe now prints: ITM hard negatives, the main
# pre-training's 1500 steps and NLVR2's 800 (issue 35).
_HARD_NEGATIVES = {
    "data.init_args.hard_negative_probability": 0.5,
    "data.init_args.hard_negative_kinds": ["colour", "shape", "relation"],
}
ADDED = {
    "harness/pretrain_shapes.yaml": _HARD_NEGATIVES | {"trainer.max_steps": 1500, "trainer.val_check_interval": 750},
    "harness/pretrain_shapes_warmup.yaml": _HARD_NEGATIVES,
    "harness/nlvr2_shapes.yaml": {
        "trainer.max_steps": 800,
        "trainer.val_check_interval": 800,
        "model.init_args.optimizer.milestones": [0.9],
    },
}


def _renamed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    return OLD_CLASS_PATH.sub(r"pixelbert_pl.data.\1", value) if isinstance(value, str) else value


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


BEFORE_NAMES = sorted(str(p.relative_to(BEFORE)) for p in BEFORE.rglob("*.yaml"))


def test_every_recipe_of_before_is_still_shipped() -> None:
    assert len(BEFORE_NAMES) == 12 and set(BEFORE_NAMES) <= set(recipes())


@pytest.mark.parametrize("name", BEFORE_NAMES)
def test_a_recipe_prints_the_settings_it_had_as_a_whole_file(name: str) -> None:
    """Compared as parsed YAML, so the `# pytorch_lightning==<version>` line and the key order do not count; only
    the DataModules' class paths differ (OLD_CLASS_PATH). Nothing path-like differs: --print_config writes the
    callbacks inline, not the file they came from, no `config:` key, and the recipes' paths (`demo-output/...`,
    `lightning_logs`) as the strings they are."""
    before = _leaves(_renamed(yaml.safe_load((BEFORE / name).read_text()))) | ADDED.get(name, {})
    after = _leaves(printed_config(recipes()[name]))
    missing = "<missing>"
    differ = {k: (before.get(k, missing), after.get(k, missing)) for k in before.keys() | after.keys()}
    assert {k: pair for k, pair in differ.items() if pair[0] != pair[1]} == {}


@pytest.mark.parametrize("name", sorted(recipes()))
def test_read_recipe_reads_what_the_cli_reads(name: str) -> None:
    """`pixelbert-check-data` and `pixelbert-make-shards` read a recipe's data section with `read_recipe`: every
    setting it finds is the CLI's."""
    printed = _leaves(printed_config(recipes()[name]))
    written = _leaves(read_recipe(recipes()[name]))
    assert {"model.class_path", "data.class_path", "trainer.logger.init_args.name"} <= written.keys()
    assert {k: v for k, v in written.items() if printed.get(k, "<missing>") != v} == {}


def test_read_recipe_wants_the_base_first(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("trainer:\n  max_epochs: 1\n")
    (tmp_path / "late.yaml").write_text("trainer.max_epochs: 2\nconfig: base.yaml\n")
    with pytest.raises(ValueError, match="must be the file's first key"):
        read_recipe(tmp_path / "late.yaml")


def test_a_recipe_naming_an_old_class_path_still_loads(tmp_path: Path, minilm_path: str) -> None:
    old = "pixelbert_pl.data.downstream.VQADataModule"
    recipe = tmp_path / "old.yaml"
    no_files = {k: [] for k in ("train_questions", "train_annotations", "val_questions", "val_annotations")}
    recipe.write_text(yaml.safe_dump({
        "model": {"class_path": "pixelbert_pl.tasks.VQATask", "init_args": {"preset": "pixelbert_tiny"}},
        "data": {"class_path": old, "init_args": {"tokenizer": minilm_path, "image_root": str(tmp_path), **no_files}},
    }))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert printed_config(recipe)["data"]["class_path"] == old
    from pixelbert_pl.data import VQADataModule

    with pytest.warns(FutureWarning, match="pixelbert_pl.data.VQADataModule"):
        assert isinstance(build_datamodule(str(recipe)), VQADataModule)


def _callbacks(config: dict[str, Any]) -> list[str]:
    return [c["class_path"] for c in config["trainer"]["callbacks"] or []]


DEFAULT_CALLBACKS = [c["class_path"] for c in yaml.safe_load(CALLBACKS.read_text())]


def test_every_recipe_gets_the_cli_s_callbacks_without_naming_them() -> None:
    assert DEFAULT_CALLBACKS[:2] == [
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "pixelbert_pl.checkpoints.BestCheckpoint",
    ]
    for name, path in recipes().items():
        assert "callbacks" not in read_recipe(path)["trainer"], f"{name} (or its base) names callbacks"
        assert _callbacks(printed_config(path)) == DEFAULT_CALLBACKS, name


def test_callbacks_given_on_the_command_line_are_added_and_a_recipe_s_own_list_replaces_them(tmp_path) -> None:
    vqa = DEMO_CONFIGS / "vqa_shapes.yaml"
    added = printed_config(vqa, "--trainer.callbacks+=pixelbert_pl.tasks.VQAResultWriter",
                           "--trainer.callbacks.output_file", "answers.json")  # fmt: skip
    assert _callbacks(added) == [*DEFAULT_CALLBACKS, "pixelbert_pl.tasks.VQAResultWriter"]
    assert added["trainer"]["callbacks"][-1]["init_args"]["output_file"] == "answers.json"
    own = tmp_path / "own.yaml"
    own.write_text(
        f"config: {vqa}\ntrainer.callbacks:\n- class_path: pytorch_lightning.callbacks.LearningRateMonitor\n"
    )
    assert _callbacks(printed_config(own)) == ["pytorch_lightning.callbacks.LearningRateMonitor"]
    assert printed_config(vqa, "--trainer.callbacks", "null")["trainer"]["callbacks"] is None
