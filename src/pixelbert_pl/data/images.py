"""Image input for Pixel-BERT: robust decoding, padding with an explicit mask, and aspect-ratio-grouped batching
(the resize itself is `processing/images.py`).

Conventions used throughout: sizes are (height, width); pixel tensors are (3, h, w) float32 after ImageNet
normalisation; padding goes at the bottom/right, so the real pixels of image i are
`pixel_values[i, :, :h, :w]` and `pixel_mask[i]` is True exactly there (see docs/prior_art.md L1, L2).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

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


def pad_images(images: Sequence[torch.Tensor], size_divisor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (C, h, w) tensors into `pixel_values` (b, C, H, W), zero-padded at the bottom/right, and a bool
    `pixel_mask` (b, H, W) that is True on each image's real top-left h x w region.

    H and W are the batch maxima rounded up to a multiple of `size_divisor`. The mask is explicit because a zero
    after normalisation is also a legitimate mid-grey pixel (docs/prior_art.md L1).
    """
    if not images:
        raise ValueError("pad_images: got an empty list of images")
    channels = {image.shape[0] for image in images}
    if len(channels) != 1 or any(image.dim() != 3 for image in images):
        raise ValueError(f"pad_images: expected (C, h, w) tensors with one C, got {[tuple(i.shape) for i in images]}")
    height = -(-max(image.shape[1] for image in images) // size_divisor) * size_divisor
    width = -(-max(image.shape[2] for image in images) // size_divisor) * size_divisor
    pixel_values = images[0].new_zeros((len(images), channels.pop(), height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        pixel_values[i, :, :h, :w] = image
        pixel_mask[i, :h, :w] = True
    return pixel_values, pixel_mask


def real_sizes(images: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """Each (C, h, w) image's (h, w), as the host-side `image_sizes` the batches carry beside `pixel_mask`, so that
    the model learns the sizes without reading the mask back from the GPU."""
    return [(int(image.shape[-2]), int(image.shape[-1])) for image in images]


def aspect_groups(sizes: Iterable[tuple[int, int]]) -> list[int]:
    """Group id per image from its (height, width): 0 for landscape or square, 1 for portrait."""
    return [int(height > width) for height, width in sizes]


class AspectRatioGroupedBatchSampler(Sampler[list[int]]):
    """Batch the indices of `sampler` so that each batch holds one aspect group only (SOHO's GroupSampler,
    detectron2's GroupedBatchSampler), which keeps padding small (docs/prior_art.md L2).

    An index joins its group's buffer in the order `sampler` yields it and a full buffer is emitted as a batch,
    so the output is a deterministic function of the sampler's order. Leftover partial batches come last, in the
    order their groups first appeared, unless `drop_last`.

    `len()` is exact when `sampler` is a SequentialSampler, or a RandomSampler without replacement over all of
    `group_ids`, since the per-group counts are then known; for any other sampler it is an upper bound.
    """

    def __init__(
        self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int, drop_last: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"AspectRatioGroupedBatchSampler: batch_size={batch_size}, expected >= 1")
        self.sampler, self.group_ids = sampler, list(group_ids)
        self.batch_size, self.drop_last = batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()
        if not self.drop_last:
            yield from (buffer for buffer in buffers.values() if buffer)

    def __len__(self) -> int:
        if self._yields_every_index_once():
            counts: dict[int, int] = {}
            for group in self.group_ids:
                counts[group] = counts.get(group, 0) + 1
            rounding = 0 if self.drop_last else self.batch_size - 1
            return sum((count + rounding) // self.batch_size for count in counts.values())
        total = len(self.sampler)  # type: ignore[arg-type]
        if self.drop_last:
            return total // self.batch_size
        # Each group adds at most one partial batch on top of the full ones.
        return min(total, total // self.batch_size + len(set(self.group_ids)))

    def _yields_every_index_once(self) -> bool:
        sampler, n = self.sampler, len(self.group_ids)
        if isinstance(sampler, SequentialSampler):
            return len(sampler) == n
        if isinstance(sampler, RandomSampler):
            return not sampler.replacement and sampler.num_samples == len(sampler.data_source) == n  # type: ignore[arg-type]
        return False


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "AspectRatioGroupedBatchSampler",
    "UnreadableImageError",
    "aspect_groups",
    "load_image",
    "pad_images",
]
