"""The demo's recipes are package data of the harness: every file of configs/ is in setup.cfg's package_data, and
their callbacks are the library recipes' (a copy, since an installed package cannot reach lightning_configs/)."""

import configparser
from pathlib import Path

import yaml

from pixelbert_pl.harness import demo

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(str(demo.CONFIGS))


def test_every_config_file_is_package_data() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in setup["options.package_data"]["pixelbert_pl.harness"].split(",")]
    package = CONFIGS.parent
    files = [p for p in CONFIGS.rglob("*") if p.is_file()]
    assert {demo.CONFIG.name, demo.WARMUP_CONFIG.name} <= {p.name for p in files}
    for path in files:
        assert any(path.relative_to(package).match(pattern) for pattern in patterns), path


def test_the_callbacks_are_the_library_recipes() -> None:
    copy = yaml.safe_load((CONFIGS / "base" / "callbacks.yaml").read_text())
    assert copy == yaml.safe_load((ROOT / "lightning_configs" / "base" / "callbacks.yaml").read_text())
    for recipe in CONFIGS.glob("*.yaml"):
        assert yaml.safe_load(recipe.read_text())["trainer"]["callbacks"] == "base/callbacks.yaml", recipe.name
