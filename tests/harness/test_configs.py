"""The demo's recipes are package data of the harness: every file of configs/ (the recipes and the base they name) is
in setup.cfg's package_data; each recipe names the base, or a recipe that does, first."""

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
    assert {demo.CONFIG.name, demo.WARMUP_CONFIG.name, "cpu.yaml"} <= {p.name for p in files}
    for path in files:
        assert any(path.relative_to(package).match(pattern) for pattern in patterns), path


def test_every_recipe_is_composed_from_the_base() -> None:
    for recipe in CONFIGS.glob("*.yaml"):
        chain = [recipe]
        while "config" in (written := yaml.safe_load(chain[-1].read_text())):
            assert next(iter(written)) == "config", f"{chain[-1].name}: the base is named first"
            chain.append(chain[-1].parent / written["config"])
        assert chain[-1] == CONFIGS / "base" / "cpu.yaml", recipe.name
