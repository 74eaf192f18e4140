"""Data-loader throughput on JPEGs: decode (`load_image`), resize to the paper's 800 short side
(`ImageTransform`) and pad-collate (`pad_images`) — the per-image work of every DataModule here — in
`--workers` DataLoader worker processes. The DataModules send uint8 pixels that the model normalises on its
device; `--normalize-on-host` measures the float32 alternative (normalised in the workers) for comparison.
Reports images/s and images/s per worker, so that
`workers = step rate (images/s) / per-worker rate` says how many keep a training step fed.

`--pretrain --tokenizer DIR` compares the two pre-training data paths on the same JPEGs instead: the Karpathy-file
`PretrainDataModule` (one file per image) and Parquet shards (`write_shards`) read by `StreamingPretrainDataModule`,
both at 800 / 1333 with 2 captions per item, `--batches` timed batches each.

    python -m benchmarks.loader --workers 1 4 8 --images 256
    python -m benchmarks.loader --pretrain --tokenizer DIR --workers 0 4 --images 256 --batches 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import emit, environment
from pixelbert_pl.data.datamodules import PixelBertDataModule, PretrainDataModule
from pixelbert_pl.data.images import load_image, pad_images
from pixelbert_pl.data.shards import write_shards
from pixelbert_pl.data.streaming import StreamingPretrainDataModule
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


def _time_pretrain_loader(module: PixelBertDataModule, workers: int, batches: int) -> dict[str, Any]:
    # The loader lives only in here, so its workers are gone before the other path is timed.
    iterator = iter(module.train_dataloader())
    first = next(iterator)  # worker start-up and shard opening are not throughput
    short_sides = {min(first.pixel_values.shape[-2:])}
    start = time.perf_counter()
    count = 0
    for batch in itertools.islice(iterator, batches):
        count += batch.pixel_values.shape[0]  # item images decoded (each item: one image, 2 caption rows)
        short_sides.add(min(batch.pixel_values.shape[-2:]))
    rate = count / (time.perf_counter() - start)
    return {
        "images": count, "images_per_s": round(rate, 1), "images_per_s_per_worker": round(rate / max(workers, 1), 1),
        "short_sides": sorted(int(side) for side in short_sides),
    }  # fmt: skip


def measure_pretrain_loaders(
    folder: Path, paths: list[Path], tokenizer: str, workers: int, batch: int, batches: int
) -> dict[str, Any]:
    """Images/s of the Karpathy-file and the Parquet-shard pre-training loaders on `paths` (JPEGs in one folder),
    timing up to `batches` batches after a warm-up one; `folder` receives the Karpathy json and the shards."""
    karpathy = folder / "dataset_bench.json"
    images = [
        {"filename": path.name, "split": "train", "sentences": [{"raw": f"photo {i} caption {j}"} for j in range(5)]}
        for i, path in enumerate(paths)
    ]  # fmt: skip
    karpathy.write_text(json.dumps({"dataset": "flickr30k", "images": images}))  # flickr-style: no filepath, cocoid
    options = dict(
        tokenizer=tokenizer, image_min_size=800, image_max_size=1333, batch_size=batch, num_workers=workers,
        captions_per_image=2,
    )  # fmt: skip
    files = PretrainDataModule(
        karpathy_file=str(karpathy),
        image_root=str(paths[0].parent),
        train_splits=["train"],
        val_splits=[],  # the json holds train images only
        **options,
    )
    out = folder / "shards"
    # The stream gives every worker (or the main process) whole shards, so write several per worker.
    per_shard = max(1, len(paths) // (4 * max(1, workers)))
    write_shards(files.split_records("fit")["train"], out, split="train", records_per_shard=per_shard)
    shards = StreamingPretrainDataModule(shards=str(out), val_split=None, **options)
    return {
        "files": _time_pretrain_loader(files, workers, batches),
        "shards": _time_pretrain_loader(shards, workers, batches),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--normalize-on-host", action="store_true", help="float32 batches, normalised in the workers")
    p.add_argument("--pretrain", action="store_true", help="compare the Karpathy-file and Parquet-shard loaders")
    p.add_argument("--tokenizer", help="local BERT tokenizer directory (--pretrain; nothing is downloaded)")
    p.add_argument("--batches", type=int, default=20, help="--pretrain: timed batches per loader")
    args = p.parse_args()
    if args.pretrain and not args.tokenizer:
        p.error("--pretrain needs --tokenizer DIR")
    emit(environment("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        for workers in args.workers:
            if args.pretrain:
                results = measure_pretrain_loaders(Path(tmp), paths, args.tokenizer, workers, args.batch, args.batches)
                for name, result in results.items():
                    emit({"kind": "pretrain_loader", "path": name, "workers": workers, "batch": args.batch, **result})
                continue
            emit(measure_loader(paths, workers, args.batch, normalize_on_host=args.normalize_on_host))


if __name__ == "__main__":
    main()
