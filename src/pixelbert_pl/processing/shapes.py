"""`PadShapes`: the small fixed set of padded image shapes a batch can take, so that compiled graphs and CUDA graphs
recorded for them hold for a whole real epoch.

The paper's resize (short side 800, long side at most 1333, both rounded down to the CNN stride) gives a COCO epoch
many sizes (16 on the COCO-like mix of benchmarks/padding.py), and batches padded to their own maximum more shapes
still (23 an epoch of VQA batches there). Here every batch is padded to the
smallest shape of the set that holds it: a square S x S, and a landscape S x L and a portrait L x S for each long
side L, S being the resize's short side and the capped long side always among the L. A batch mixing landscape and
portrait images (the DataModules' bucketed samplers avoid them) takes the one square of the largest side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pixelbert_pl.processing.config import ProcessingConfig


@dataclass(frozen=True)
class PadShapes:
    """Padded (height, width) shapes, in bucket order: portraits from the longest, the square, landscapes to the
    longest, so that neighbouring buckets share an orientation and a run of them fits the larger one. The last
    shape, the fallback, holds any image of the resize."""

    shapes: tuple[tuple[int, int], ...]

    @classmethod
    def from_config(cls, config: ProcessingConfig) -> PadShapes | None:
        """The shapes `config.pad_long_sides` names (None when it names none: batches pad to their own maximum)."""
        if not config.pad_long_sides:
            return None
        divisor = config.size_divisor
        short = max(divisor, config.image_min_size // divisor * divisor)
        cap = max(divisor, config.image_max_size // divisor * divisor)
        longs = sorted({side for side in config.pad_long_sides if side > short} | {cap})
        portrait = [(side, short) for side in reversed(longs) if side > short]
        landscape = [(short, side) for side in longs if side > short]
        fallback = [(cap, cap)] if cap > short else []
        return cls((*portrait, (short, short), *landscape, *fallback))

    def __len__(self) -> int:
        return len(self.shapes)

    def bucket(self, height: int, width: int) -> int:
        """Index of the smallest shape (by area, then bucket order) that holds a height x width image."""
        holding = [i for i, (h, w) in enumerate(self.shapes) if height <= h and width <= w]
        if not holding:
            raise ValueError(f"a {height}x{width} image exceeds every padded shape {list(self.shapes)}")
        return min(holding, key=lambda i: self.shapes[i][0] * self.shapes[i][1])

    def covering(self, sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
        """The shape a batch of images of these (height, width) sizes is padded to."""
        sizes = list(sizes)
        return self.shapes[self.bucket(max(h for h, _ in sizes), max(w for _, w in sizes))]


__all__ = ["PadShapes"]
