"""Image preprocessing: robust decoding (sizes read from headers), any Pillow image to RGB, the paper's resize
(short side 800, long side <= 1333, multiples of the CNN stride) and per-channel normalisation, the same wherever
it runs (DataModules, `Predictor`, the model).

Conventions: sizes are (height, width); pixel tensors are (3, h, w), uint8 or float32 after normalisation; padding
(`padding.py`) goes at the bottom/right, so the real pixels of image i are `pixel_values[i, :, :h, :w]` and
`pixel_mask[i]` is True exactly there (docs/prior_art.md L1, L2).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from pixelbert_pl.processing.config import IMAGENET_MEAN, IMAGENET_STD, ProcessingConfig

# Transparent pixels keep arbitrary colour values (often black); web images are drawn on white pages.
_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


# Pillow's own default limit; images above it are decompression bombs or scans no caption dataset needs.
DEFAULT_MAX_PIXELS = 89_478_485


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded into RGB pixels. A ValueError so callers can treat it as bad data."""

    def __init__(self, path: str | os.PathLike[str], reason: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        # One-argument construction must keep working: DataLoader re-raises worker errors as `type(err)(message)`.
        super().__init__(self.path if reason is None else f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        return type(self), (self.path, self.reason)


def load_image(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None
) -> Image.Image:
    """Decode `path` (or the file's bytes `data`, read from a shard; errors still name `path`) into an upright RGB
    image, or raise `UnreadableImageError` naming the path.

    The format is sniffed from the content, never the extension (NLVR2 ships JPEGs named `.png`).
    """
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            # `size` comes from the header, so oversized images are refused before any pixel is decoded.
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise UnreadableImageError(path, f"{image.width}x{image.height} = {pixels} pixels > {max_pixels}")
            # Decode now, while the error can still name the file; a lazy decode would fail later in a worker
            # or, with LOAD_TRUNCATED_IMAGES, silently pad the missing rows with grey.
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as err:
        raise UnreadableImageError(path, f"decompression bomb: {err}") from err
    except Exception as err:
        # Pillow's plugins raise a zoo of types on malformed data (OSError, SyntaxError, struct.error, ...).
        raise UnreadableImageError(path, f"{type(err).__name__}: {err}") from err


def image_size(path: str | os.PathLike[str], data: bytes | None = None) -> tuple[int, int]:
    """The (height, width) `load_image` would return, read from the header and EXIF orientation alone (no pixel is
    decoded): what the bucketed samplers need of every image before an epoch starts."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            width, height = image.size
            # EXIF orientations 5-8 are the transposes and 90-degree turns: exif_transpose swaps the sides.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as err:
        raise UnreadableImageError(path, f"{type(err).__name__}: {err}") from err
    return height, width


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: 16-bit greys rescaled, transparency composited on white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # A plain convert("L") clips 16-bit values at 255 (a near-white image); rescale the full range instead.
        # "I" is how older Pillow opens 16-bit PNGs, so it is assumed to hold 16-bit values too.
        image = image.convert("I").point(lambda v: v / 257).convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        # Dropping alpha would expose whatever colour the encoder left under transparent pixels.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_shape(height: int, width: int, min_size: int, max_size: int, size_divisor: int = 32) -> tuple[int, int]:
    """The (height, width) an image is resized to: the paper's "shorter side 800, longer side at most 1333".

    The short side is scaled to `min_size` unless that would push the long side past `max_size`, in which case
    the long side is scaled to `max_size`. The other side is rounded to the nearest integer, then each side is
    rounded *down* to a multiple of `size_divisor` (at least `size_divisor`), so the CNN stride divides the input
    exactly and the long side never exceeds the cap. This slightly changes the aspect ratio: a 480x640 COCO image
    becomes 800x1056 (docs/paper_facts.md §1.5 quotes the unrounded 800x1067), and a `min_size` that is not a multiple
    (X152's 600) floors too (576).
    """
    if min(height, width, min_size, max_size, size_divisor) < 1:
        raise ValueError(f"resize_shape({height}, {width}, {min_size}, {max_size}, {size_divisor}): expected >= 1")
    short, long = min(height, width), max(height, width)
    # Integer comparison of long * min_size / short > max_size, so the branch never depends on float error.
    if long * min_size > max_size * short:
        new_short, new_long = round(short * max_size / long), max_size
    else:
        new_short, new_long = min_size, round(long * min_size / short)
    new_short, new_long = (max(size_divisor, side // size_divisor * size_divisor) for side in (new_short, new_long))
    return (new_short, new_long) if height <= width else (new_long, new_short)


class ImageTransform:
    """PIL image -> (3, h, w) tensor: aspect-preserving resize (bilinear, antialiased), then normalisation to float32,
    or, with `normalize=False`, the resized uint8 pixels, which the model normalises on its device (what the
    DataModules send: a quarter of the bytes through worker queues and to the GPU, and no float pass per image in
    the workers)."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        size_divisor: int = 32,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        if max_size < min_size:
            raise ValueError(f"ImageTransform: max_size={max_size} is smaller than min_size={min_size}")
        self.min_size, self.max_size, self.size_divisor = min_size, max_size, size_divisor
        self.mean, self.std = list(mean), list(std)
        self.normalize = normalize

    @classmethod
    def from_config(cls, config: ProcessingConfig, normalize: bool = True) -> ImageTransform:
        return cls(
            config.image_min_size, config.image_max_size, config.size_divisor, config.image_mean, config.image_std,
            normalize,
        )  # fmt: skip

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        size = resize_shape(image.height, image.width, self.min_size, self.max_size, self.size_divisor)
        # Resizing the uint8 tensor uses torchvision's vectorised antialias kernel, a close match to PIL's filter.
        pixels = F.resize(F.pil_to_tensor(image), list(size), InterpolationMode.BILINEAR, antialias=True)
        return normalize_pixels(pixels, self.mean, self.std) if self.normalize else pixels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_size={self.min_size}, max_size={self.max_size}, "
            f"size_divisor={self.size_divisor}, mean={self.mean}, std={self.std}, normalize={self.normalize})"
        )


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 RGB (..., 3, h, w) -> float32 scaled to [0, 1] then standardised per channel (the trunk's ImageNet
    statistics). The same two torchvision ops wherever it runs, so the host and the device give the same numbers."""
    return F.normalize(F.to_dtype(pixels, torch.float32, scale=True), list(mean), list(std))
