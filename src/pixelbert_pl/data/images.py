"""Image input for Pixel-BERT: robust decoding, sizes read from headers, and padding with an explicit mask (the
resize itself is `processing/images.py`, the fixed padded shapes `processing/shapes.py`).

Conventions used throughout: sizes are (height, width); pixel tensors are (3, h, w) float32 after ImageNet
normalisation; padding goes at the bottom/right, so the real pixels of image i are
`pixel_values[i, :, :h, :w]` and `pixel_mask[i]` is True exactly there (see docs/prior_art.md L1, L2).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import torch
from PIL import Image, ImageOps

from pixelbert_pl.processing.images import to_rgb

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


def pad_images(
    images: Sequence[torch.Tensor], size_divisor: int = 1, shape: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (C, h, w) tensors into `pixel_values` (b, C, H, W), zero-padded at the bottom/right, and a bool
    `pixel_mask` (b, H, W) that is True on each image's real top-left h x w region.

    H x W is `shape` when given (one of `PadShapes`, holding every image), else the batch maxima rounded up to a
    multiple of `size_divisor`. The mask is explicit because a zero after normalisation is also a legitimate
    mid-grey pixel (docs/prior_art.md L1).
    """
    if not images:
        raise ValueError("pad_images: got an empty list of images")
    channels = {image.shape[0] for image in images}
    if len(channels) != 1 or any(image.dim() != 3 for image in images):
        raise ValueError(f"pad_images: expected (C, h, w) tensors with one C, got {[tuple(i.shape) for i in images]}")
    height = -(-max(image.shape[1] for image in images) // size_divisor) * size_divisor
    width = -(-max(image.shape[2] for image in images) // size_divisor) * size_divisor
    if shape is not None:
        if shape[0] < height or shape[1] < width:
            raise ValueError(f"pad_images: shape={shape} does not hold the batch's {height}x{width} images")
        height, width = shape
    # Channels-last like the resized images (torchvision keeps PIL's pixel order) and the trunk: the copies below
    # are plain, not transposing; only the padding is zeroed.
    first = images[0]
    pixel_values = torch.empty(
        (len(images), channels.pop(), height, width), dtype=first.dtype, device=first.device,
        memory_format=torch.channels_last,
    )  # fmt: skip
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.bool, device=first.device)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        pixel_values[i, :, :h, :w] = image
        pixel_values[i, :, h:].zero_()
        pixel_values[i, :, :h, w:].zero_()
        pixel_mask[i, :h, :w] = True
    return pixel_values, pixel_mask


def real_sizes(images: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """Each (C, h, w) image's (h, w), as the host-side `image_sizes` the batches carry beside `pixel_mask`, so that
    the model learns the sizes without reading the mask back from the GPU."""
    return [(int(image.shape[-2]), int(image.shape[-1])) for image in images]


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "UnreadableImageError",
    "image_size",
    "load_image",
    "pad_images",
]
