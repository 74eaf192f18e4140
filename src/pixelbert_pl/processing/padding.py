"""How a batch's images and texts are padded: to the batch's own maximum, or to one of a fixed set of shapes
(`PadShapes`), with explicit masks (a zero after normalisation is also a legitimate mid-grey pixel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pixelbert_pl.processing.shapes import PadShapes


@dataclass(frozen=True)
class BatchPadding:
    """How the collates pad a batch: images to the `PadShapes` shape that holds them (None: to the batch's own
    maximum), texts to a multiple of `text_multiple` tokens (Hugging Face's `pad_to_multiple_of`), and, where texts
    share images (VQA), the images to a multiple of `image_multiple` with blank ones no text reads, so that a run
    meets a few input shapes, each compiled (and CUDA-graphed) once, instead of one per size, length and count."""

    shapes: PadShapes | None = None
    text_multiple: int = 1
    image_multiple: int = 1

    def __post_init__(self) -> None:
        if min(self.text_multiple, self.image_multiple) < 1:
            raise ValueError(f"{self}: expected multiples >= 1 (1 pads to the longest text, adds no image)")

    def image_shape(self, sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
        return None if self.shapes is None else self.shapes.covering(sizes)


NO_PADDING = BatchPadding()


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


def pad_token_rows(rows: list[list[int]], value: int, multiple: int = 1) -> torch.Tensor:
    """Rows padded at the right with `value` to the longest, rounded up to a multiple of `multiple`."""
    width = -(-max(len(r) for r in rows) // multiple) * multiple
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def pad_texts(rows: list[list[int]], pad_token_id: int, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded at the right: (input_ids (r, t) long, attention_mask (r, t) bool, True on real tokens)."""
    mask = pad_token_rows([[1] * len(r) for r in rows], 0, multiple).bool()
    return pad_token_rows(rows, pad_token_id, multiple), mask


def pad_batch_images(images: list[torch.Tensor], padding: BatchPadding) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_images` to the shape `padding` gives these images (their maximum without fixed shapes)."""
    return pad_images(images, shape=padding.image_shape(real_sizes(images)))
