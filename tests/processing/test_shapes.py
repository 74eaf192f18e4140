"""PadShapes: the fixed padded shapes of a recipe, which bucket a resized image falls in, and what a batch pads to."""

from __future__ import annotations

import pytest

from pixelbert_pl.processing import ProcessingConfig, resize_shape
from pixelbert_pl.processing.shapes import PadShapes

RECIPE = ProcessingConfig(image_min_size=800, image_max_size=1333, pad_long_sides=(1056, 1184))


def test_the_recipe_has_portraits_a_square_landscapes_and_a_fallback() -> None:
    shapes = PadShapes.from_config(RECIPE)
    assert shapes is not None
    assert shapes.shapes == (
        (1312, 800), (1184, 800), (1056, 800), (800, 800), (800, 1056), (800, 1184), (800, 1312), (1312, 1312),
    )  # fmt: skip
    assert PadShapes.from_config(ProcessingConfig()) is None  # no pad_long_sides: batches pad to their maximum


@pytest.mark.parametrize(
    ("original", "padded"),
    [
        ((480, 640), (800, 1056)),  # 4:3 landscape resizes to 800 x 1056: no padding at all
        ((375, 500), (800, 1056)),
        ((640, 480), (1056, 800)),
        ((427, 640), (800, 1184)),  # 3:2 resizes to 800 x 1184
        ((612, 612), (800, 800)),
        ((360, 640), (800, 1312)),  # 16:9: the long side is capped (736 x 1312), padded to 800 x 1312
        ((640, 427), (1184, 800)),
    ],
)
def test_a_coco_image_pads_to_the_smallest_shape_that_holds_it(original, padded) -> None:
    shapes = PadShapes.from_config(RECIPE)
    assert shapes is not None
    resized = resize_shape(*original, 800, 1333, 32)
    assert shapes.shapes[shapes.bucket(*resized)] == padded
    assert shapes.covering([resized]) == padded


def test_a_mixed_batch_pads_to_the_shape_holding_all_and_landscape_with_portrait_to_the_fallback() -> None:
    shapes = PadShapes.from_config(RECIPE)
    assert shapes is not None
    assert shapes.covering([(800, 1056), (800, 800), (736, 1184)]) == (800, 1184)
    assert shapes.covering([(800, 1056), (1056, 800)]) == (1312, 1312)


def test_pad_long_sides_are_checked_and_round_trip() -> None:
    with pytest.raises(ValueError, match=r"pad_long_sides=\[1000\].*size_divisor=32"):
        ProcessingConfig(pad_long_sides=(1000,))
    with pytest.raises(ValueError, match="image_max_size=1333"):
        ProcessingConfig(pad_long_sides=(1344,))
    assert ProcessingConfig.from_dict(RECIPE.to_dict()) == RECIPE
    assert RECIPE.to_dict()["pad_long_sides"] == [1056, 1184]  # plain data in checkpoints
    old = {k: v for k, v in RECIPE.to_dict().items() if k != "pad_long_sides"}  # a checkpoint from before
    assert ProcessingConfig.from_dict(old).pad_long_sides == ()
