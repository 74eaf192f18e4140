"""The corpus the ShapesWorld tests share (generated once, in conftest.py) and readers of its files."""

from __future__ import annotations

import json
from pathlib import Path

from pixelbert_pl.harness.shapes import ShapesWorldConfig

HELDOUT = ("red triangle", "blue circle")
CONFIG = ShapesWorldConfig(num_images=40, heldout=HELDOUT, heldout_fraction=0.25, num_nlvr2=24)


def load(corpus: Path, name: str):
    return json.loads((corpus / name).read_text(encoding="utf-8"))


def load_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def scenes_by_id(corpus: Path) -> dict[int, dict]:
    return {s["image_id"]: s for s in load(corpus, "scenes.json")["scenes"]}
