"""Data-loader throughput on JPEGs: decode (`load_image`), resize to the paper's 800 short side
(`ImageTransform`) and pad-collate (`pad_images`) — the per-image work of every DataModule here — in
`--workers` DataLoader worker processes. The DataModules send uint8 pixels that the model normalises on its
device; `--normalize-on-host` measures the float32 alternative (normalised in the workers) for comparison.
Reports images/s and images/s per worker, so that
`workers = step rate (images/s) / per-worker rate` says how many keep a training step fed.

    python -m benchmarks.loader --workers 1 4 8 --images 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import emit, environment
from pixelbert_pl.data.images import load_image, pad_images
from pixelbert_pl.processing import ImageTransform


def write_jpegs(folder: Path, count: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields plus texture noise, quality 90) of `size` (height, width)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(count):
        base = np.stack([np.sin(xx / rng.uniform(20, 80) + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
        base = base * np.cos(yy / rng.uniform(20, 80))[..., None]
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform: ImageTransform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_image(self.paths[index]))


def _collate(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_images(images)


def measure_loader(
    paths: list[Path], workers: int, batch: int = 16, min_size: int = 800, max_size: int = 1333,
    normalize_on_host: bool = False,
) -> dict[str, Any]:  # fmt: skip
    transform = ImageTransform(min_size, max_size, normalize=normalize_on_host)
    loader = DataLoader(
        _Images(paths, transform), batch_size=batch, num_workers=workers,
        collate_fn=_collate, persistent_workers=False, prefetch_factor=4 if workers else None,
    )  # fmt: skip
    iterator = iter(loader)
    first = next(iterator)  # worker start-up and the first batch are not throughput
    start = time.perf_counter()
    count = 0
    for values, _ in iterator:
        count += values.shape[0]
    wall = time.perf_counter() - start
    rate = count / wall
    return {
        "kind": "loader", "workers": workers, "batch": batch, "dtype": str(first[0].dtype).removeprefix("torch."),
        "jpeg_size": list(Image.open(paths[0]).size[::-1]),
        "resized_to": list(first[0].shape[-2:]), "images": count, "images_per_s": round(rate, 1),
        "images_per_s_per_worker": round(rate / max(workers, 1), 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--normalize-on-host", action="store_true", help="float32 batches, normalised in the workers")
    args = p.parse_args()
    emit(environment("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        for workers in args.workers:
            emit(measure_loader(paths, workers, args.batch, normalize_on_host=args.normalize_on_host))


if __name__ == "__main__":
    main()
