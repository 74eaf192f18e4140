"""ShapesWorld scenes: distinct colours and shapes, separated boxes, rendered pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixelbert_pl.harness.shapes import (
    BACKGROUND,
    COLOURS,
    RGB,
    SHAPES,
    Scene,
    ShapeObject,
    render_scene,
)

from .corpus_files import CONFIG, load


def test_scenes_have_distinct_colours_and_shapes(corpus) -> None:
    for scene in load(corpus, "scenes.json")["scenes"]:
        objects = scene["objects"]
        assert 1 <= len(objects) <= 4
        assert len({o["colour"] for o in objects}) == len({o["shape"] for o in objects}) == len(objects)
        for i, a in enumerate(objects):
            x, y, w, h = a["bbox"]
            assert 0 <= x and x + w <= scene["width"] and 0 <= y and y + h <= scene["height"]
            assert a["centre"] == [x + w / 2, y + h / 2]
            for b in objects[i + 1 :]:
                bx, by, bw, bh = b["bbox"]
                assert x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y


def test_rendered_pixels_show_the_scene(corpus) -> None:
    for scene in load(corpus, "scenes.json")["scenes"][:10]:
        pixels = np.asarray(Image.open(corpus / "images" / f"shapes_{scene['image_id']:012d}.png").convert("RGB"))
        assert pixels.shape == (96, 96, 3)
        for o in scene["objects"]:  # every shape covers its own centre
            x, y = (int(v) for v in o["centre"])
            assert np.abs(pixels[y, x].astype(int) - RGB[o["colour"]]).max() <= CONFIG.noise
    scene = Scene(96, (ShapeObject("green", "circle", "large", (10, 20, 32, 32)),))
    image = np.asarray(render_scene(scene))
    assert tuple(image[36, 26]) == RGB["green"] and tuple(image[0, 0]) == BACKGROUND
    assert tuple(image[21, 11]) == BACKGROUND  # a circle leaves its bounding-box corners empty
    distinct = {tuple(RGB[c]) for c in COLOURS}
    assert len(distinct) == len(COLOURS) and len(SHAPES) == 4
