"""Tests for `pixelbert_pl.processing`: the paper's resize, the transform, normalisation, `ProcessingConfig`."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from pixelbert_pl.models import preset_processing
from pixelbert_pl.processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    ProcessingConfig,
    normalize_pixels,
    resize_shape,
    split_processing,
)


def test_resize_shape_paper_defaults() -> None:
    # 480x640: short side -> 800, long side 640 * 800 / 480 = 1066.7 -> 1067 -> floor to 32 -> 1056.
    assert resize_shape(480, 640, 800, 1333) == (800, 1056)
    assert resize_shape(640, 480, 800, 1333) == (1056, 800)
    assert resize_shape(500, 500, 800, 1333) == (800, 800)
    # X152's 600 is not a multiple of 32, so its short side floors to 576 (the long side 800 already is one).
    assert resize_shape(480, 640, 600, 1000) == (576, 800)
    # 1:2: the long side would be 1600 > 1333, so it is capped: 1333 -> 1312, short 666.5 -> 666 -> 640.
    assert resize_shape(400, 800, 800, 1333) == (640, 1312)


def test_resize_shape_caps_very_wide_images() -> None:
    assert resize_shape(100, 1000, 800, 1333) == (128, 1312)
    # The short side would round to 1 px; it never drops below one divisor.
    assert resize_shape(10, 10_000, 800, 1333) == (32, 1312)
    assert resize_shape(10_000, 10, 800, 1333) == (1312, 32)


def test_resize_shape_is_always_a_multiple_of_the_divisor() -> None:
    rng = random.Random(0)
    for _ in range(500):
        height, width = rng.randint(1, 5000), rng.randint(1, 5000)
        h, w = resize_shape(height, width, 800, 1333)
        assert h % 32 == 0 and w % 32 == 0
        assert max(h, w) <= 1333 and min(h, w) <= 800
        assert (h <= w) if height <= width else (h >= w)


def test_resize_shape_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        resize_shape(0, 10, 800, 1333)


def test_image_transform_shape_and_normalisation() -> None:
    transform = ImageTransform(800, 1333)
    pixels = transform(Image.new("RGB", (640, 480), (124, 116, 104)))
    assert (pixels.shape, pixels.dtype) == ((3, 800, 1056), torch.float32)
    expected = (torch.tensor([124, 116, 104]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_image_transform_can_leave_normalisation_to_the_model() -> None:
    image = Image.effect_noise((64, 48), 60).convert("RGB")
    raw = ImageTransform(32, 64, size_divisor=8, normalize=False)(image)
    normalised = ImageTransform(32, 64, size_divisor=8)(image)
    assert raw.dtype == torch.uint8 and raw.shape == normalised.shape
    assert torch.equal(normalize_pixels(raw, IMAGENET_MEAN, IMAGENET_STD), normalised)


def test_image_transform_from_config_and_non_rgb_input() -> None:
    transform = ImageTransform.from_config(preset_processing("pixelbert_tiny"))
    assert (transform.min_size, transform.max_size, transform.size_divisor) == (96, 96, 32)
    assert transform(Image.new("RGBA", (640, 480))).shape == (3, 64, 96)
    r50 = ImageTransform.from_config(preset_processing("pixelbert_r50"))
    assert (r50.min_size, r50.max_size, r50.mean) == (800, 1333, [0.485, 0.456, 0.406])


def test_processing_config_checks_its_fields_and_round_trips() -> None:
    config = ProcessingConfig(tokenizer=None, image_min_size=64, image_max_size=96, max_text_length=20)
    assert ProcessingConfig.from_dict(config.to_dict()) == config
    assert config.differences(config.replace(image_max_size=64)) == {"image_max_size": (96, 64)}
    with pytest.raises(ValueError, match="image_max_size=32"):
        ProcessingConfig(image_min_size=64, image_max_size=32)
    with pytest.raises(ValueError, match=r"model\.json: unknown processing field\(s\) \['hidden_size'\]"):
        ProcessingConfig.from_dict({"hidden_size": 3}, "model.json")
    with pytest.raises(ValueError, match="image_mean"):
        ProcessingConfig(image_mean=(0.5, 0.5))


def test_a_model_config_of_both_kinds_splits_into_architecture_and_processing() -> None:
    architecture, processing = split_processing({"hidden_size": 64, "image_min_size": 48, "tokenizer": "vocab.txt"})
    assert architecture == {"hidden_size": 64} and processing == {"image_min_size": 48, "tokenizer": "vocab.txt"}
