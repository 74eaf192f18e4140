"""The demo's recipes are package data of the harness: every file of configs/ is in setup.cfg's package_data."""

import configparser
from pathlib import Path

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
