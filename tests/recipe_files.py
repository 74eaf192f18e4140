"""The shipped recipes, and what the CLI makes of them (`--print_config`), for the tests that read their settings.

A recipe names its base (`config: ../base/gpu.yaml`) and holds what differs, so its own YAML is not its settings:
these tests read what `pixelbert fit --config RECIPE --print_config` prints."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from pixelbert_pl.harness import demo

GPU_CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
DEMO_CONFIGS = Path(str(demo.CONFIGS))  # the demo's recipes, package data of the harness


def recipes() -> dict[str, Path]:
    """Each shipped recipe by name: `<task>/<name>.yaml` for lightning_configs/, `harness/<name>.yaml` for the demo's
    (the names of tests/fixtures/recipe_configs/). Base files, which recipes name, are not recipes."""
    gpu = {str(p.relative_to(GPU_CONFIGS)): p for p in GPU_CONFIGS.rglob("*.yaml") if p.parent.name != "base"}
    return dict(sorted({**gpu, **{f"harness/{p.name}": p for p in DEMO_CONFIGS.glob("*.yaml")}}.items()))


def printed_config(config: Path | str, *args: str, subcommand: str = "fit") -> dict[str, Any]:
    """`pixelbert SUBCOMMAND --config CONFIG ARGS --print_config`, run in this process, as a dict."""
    return copy.deepcopy(_printed(str(config), args, subcommand))


@functools.cache
def _printed(config: str, args: tuple[str, ...], subcommand: str) -> dict[str, Any]:
    from pixelbert_pl.cli import main

    out = io.StringIO()
    # LightningCLI warns when given args beside a real argv (pytest's).
    with mock.patch.object(sys, "argv", ["pixelbert"]), contextlib.redirect_stdout(out):
        try:
            main([subcommand, "--config", config, *args, "--print_config"])
        except SystemExit as exit_info:
            assert exit_info.code in (0, None), f"{config}: --print_config exited with {exit_info.code}"
    return yaml.safe_load(out.getvalue())
