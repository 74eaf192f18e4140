"""`PinnableBatch`: lets the DataLoader pin a batch dataclass's tensors, and Lightning move them in one call;
`BatchPadding`: the shapes the collates pad a batch to.

`DataLoader(pin_memory=True)` pins tensors, mappings and sequences, and any object with a `pin_memory()` method;
a plain dataclass it returns untouched. Unpinned, Lightning's "non-blocking" copy to the GPU is a blocking copy
that first waits for every queued kernel: a host-device sync at the start of every step.

Lightning moves a batch to the device by walking it as a collection, down to every int of its host-side lists (one
call each); an object with a `to(device)` method is moved by that method instead, so `to` copies the tensor fields
and leaves the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pixelbert_pl.processing.shapes import PadShapes


class PinnableBatch:
    """Mixin for the batch dataclasses: `pin_memory()` and `to(device)` return a copy with every tensor field
    pinned or moved, every other field as it was."""

    def _map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        mapped = {k: function(v) for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **mapped)  # type: ignore[type-var]

    def pin_memory(self) -> Any:
        return self._map_tensors(torch.Tensor.pin_memory)

    def to(self, device: torch.device | str) -> Any:
        """Non-blocking to a GPU: the loaders pin their batches."""
        device = torch.device(device)
        return self._map_tensors(lambda t: t.to(device, non_blocking=device.type == "cuda"))


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
