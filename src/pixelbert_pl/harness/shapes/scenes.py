"""ShapesWorld scenes: 1-4 flat shapes on a dark background, every colour and every shape at most once per scene,
drawn from a seeded generator and rendered without anti-aliasing.

`ShapesWorldConfig` holds every setting of a corpus (scenes, texts, splits), so that each stage reads one object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
RGB = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 220, 40),
    "purple": (165, 60, 215),
    "cyan": (40, 215, 225),
}
BACKGROUND = (16, 16, 22)
_SIDE_AT_96 = {"small": 18, "large": 32}


@dataclass(frozen=True)
class ShapesWorldConfig:
    num_images: int = 2000
    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 4
    captions_per_image: int = 5
    questions_per_image: int = 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    heldout: tuple[str, ...] = ()  # "colour shape" combinations seen only in the test_heldout split
    heldout_fraction: float = 0.1  # share of images built around a held-out combination (when there are any)
    hard_negatives_per_caption: int = 6
    vqa_disagreement: float = 0.1  # share of questions where 1-3 of the 10 annotators give another answer
    # By split_fractions; enough for the demo's NLVR2 to learn, not memorise (experiments/results/design_notes.md).
    num_nlvr2: int = 4000
    nlvr2_pairs_per_set: int = 2  # image pairs sharing one sentence: half True, half False (consistency groups)
    noise: int = 6  # amplitude of the uniform per-pixel noise

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= min(len(COLOURS), len(SHAPES)):
            raise ValueError(
                f"ShapesWorldConfig: need 1 <= min_objects <= max_objects <= 4, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if self.image_size < 48:
            raise ValueError(f"image_size {self.image_size} is too small for 4 separated shapes")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {self.split_fractions}")
        for combo in self.heldout:
            parse_combo(combo)

    def side_px(self, size: str) -> int:
        return round(_SIDE_AT_96[size] * self.image_size / 96)


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    bbox: tuple[int, int, int, int]  # x, y, width, height (COCO order), in pixels

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2, y + h / 2)


@dataclass(frozen=True)
class Scene:
    image_size: int
    objects: tuple[ShapeObject, ...]

    def find(self, colour: str | None = None, shape: str | None = None, size: str | None = None) -> list[ShapeObject]:
        return [
            o
            for o in self.objects
            if colour in (None, o.colour) and shape in (None, o.shape) and size in (None, o.size)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.image_size,
            "height": self.image_size,
            "objects": [
                {"colour": o.colour, "shape": o.shape, "size": o.size, "centre": list(o.centre), "bbox": list(o.bbox)}
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        objects = tuple(ShapeObject(o["colour"], o["shape"], o["size"], tuple(o["bbox"])) for o in data["objects"])
        return cls(int(data["width"]), objects)


def parse_combo(text: str) -> tuple[str, str]:
    """Parse a held-out combination: "red triangle" -> ("red", "triangle")."""
    words = text.strip().lower().split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
        raise ValueError(f"held-out combination must be 'colour shape' from {COLOURS} x {SHAPES}, got {text!r}")
    return words[0], words[1]


def sample_scene(
    rng: np.random.Generator,
    config: ShapesWorldConfig,
    require: tuple[str | None, str | None] | None = None,
    forbid: Iterable[tuple[str, str]] = (),
) -> Scene:
    """A random scene; `require` = (colour or None, shape or None) that some object must have, `forbid` =
    (colour, shape) combinations no object may have."""
    forbid = set(forbid)
    for _ in range(10_000):
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        colours = [COLOURS[i] for i in rng.permutation(len(COLOURS))[:n]]
        shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
        for values, wanted in zip((colours, shapes), require or (None, None), strict=True):
            if wanted is not None:
                if wanted in values:
                    values.remove(wanted)
                else:
                    values.pop()
                values.insert(0, wanted)
        if forbid.intersection(zip(colours, shapes, strict=True)):
            continue
        sizes = [SIZES[i] for i in rng.integers(0, len(SIZES), n)]
        boxes = _place(rng, [config.side_px(s) for s in sizes], config.image_size)
        if boxes is not None:
            objects = zip(colours, shapes, sizes, boxes, strict=True)
            return Scene(config.image_size, tuple(ShapeObject(c, s, z, b) for c, s, z, b in objects))
    raise RuntimeError(f"no scene satisfies require={require} forbid={sorted(forbid)}")


def _place(rng: np.random.Generator, sides: Sequence[int], image_size: int) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping boxes with a gap, so that no shape hides another's colour or outline; None if stuck."""
    border, gap = max(1, round(image_size * 2 / 96)), max(2, round(image_size * 4 / 96))
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        for _ in range(100):
            x, y = (int(v) for v in rng.integers(border, image_size - border - side + 1, 2))
            if all(
                x + side + gap <= bx or bx + bw + gap <= x or y + side + gap <= by or by + bh + gap <= y
                for bx, by, bw, bh in boxes
            ):
                boxes.append((x, y, side, side))
                break
        else:
            return None
    return boxes


def render_scene(scene: Scene, noise: int = 0, rng: np.random.Generator | None = None) -> Image.Image:
    """Filled shapes (no anti-aliasing) on the background; `noise` adds uniform per-pixel noise everywhere."""
    image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x, y, w, h = obj.bbox
        x1, y1, fill = x + w - 1, y + h - 1, RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x, y, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x, y, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(x + (w - 1) / 2, y), (x, y1), (x1, y1)], fill=fill)
        else:
            arm = w // 3
            draw.rectangle((x, y + arm, x1, y1 - arm), fill=fill)
            draw.rectangle((x + arm, y, x1 - arm, y1), fill=fill)
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-noise, noise + 1, (*image.size[::-1], 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image
