"""Data-loader throughput on JPEGs: decode (`load_image`), resize to the paper's 800 short side
(`ImageTransform`) and pad-collate (`pad_images`) — the per-image work of every DataModule here — in
`--workers` DataLoader worker processes. The DataModules send uint8 pixels that the model normalises on its
device; `--normalize-on-host` measures the float32 alternative (normalised in the workers) for comparison.
Reports images/s and images/s per worker, so that
`workers = step rate (images/s) / per-worker rate` says how many keep a training step fed.

`--pretrain --tokenizer DIR` compares the two pre-training data paths on the same JPEGs instead: the Karpathy-file
`PretrainDataModule` (one file per image) and Parquet shards (`write_shards`) read by `StreamingPretrainDataModule`,
both at 800 / 1333 with 2 captions per item, `--batches` timed batches each.

`--coco-like` writes the JPEGs at COCO-like sizes (`benchmarks.common.COCO_LIKE_SIZES`) and loads them as the
recipes' training loaders do with `pad_long_sides` [1056, 1184]: in `BucketedEpochKeyedSampler`'s batches, each
padded to its `PadShapes` shape; it also times decoding, resizing and the padded collate apart, in the main
process on one thread (as a worker runs them), so the host work per image and per worker is known.

    python -m benchmarks.loader --workers 1 4 8 --images 256
    python -m benchmarks.loader --coco-like --workers 1 4 8 --images 256
    python -m benchmarks.loader --pretrain --tokenizer DIR --workers 0 4 --images 256 --batches 20
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import bucketed_batches, coco_like_sizes, emit, environment, recipe_processing, resized_sizes
from pixelbert_pl.data import PixelBertDataModule, PretrainDataModule
from pixelbert_pl.data.shards import write_shards
from pixelbert_pl.data.streaming import StreamingPretrainDataModule
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.images import image_size, load_image
from pixelbert_pl.processing.padding import pad_images, real_sizes
from pixelbert_pl.processing.shapes import PadShapes


def write_jpegs(
    folder: Path, count: int, size: tuple[int, int] = (480, 640), seed: int = 0,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[Path]:  # fmt: skip
    """Photo-like JPEGs (smooth colour fields plus texture noise, quality 90) of `size` (height, width), or of
    `sizes[i]` for image i (`count` of them)."""
    if sizes is not None and len(sizes) != count:
        raise ValueError(f"write_jpegs: {len(sizes)} sizes for count={count} images: expected one per image")
    rng = np.random.default_rng(seed)
    grids: dict[tuple[int, int], np.ndarray] = {}
    paths = []
    for i in range(count):
        h, w = size if sizes is None else sizes[i]
        if (h, w) not in grids:
            grids[h, w] = np.mgrid[0:h, 0:w].astype(np.float32)
        yy, xx = grids[h, w]
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


def _padded_collate(images: list[torch.Tensor], shapes: PadShapes) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_images(images, shape=shapes.covering(real_sizes(images)))


def host_cost(
    paths: Sequence[Path], transform: ImageTransform, shapes: PadShapes, batch: int = 16, sample: int = 32
) -> dict[str, float]:
    """Decode (`load_image`), resize (`transform`) and padded collate (in batches of `batch`) of the first `sample`
    images, each timed apart in this process on one thread, as a DataLoader worker runs them (its torch threads
    are set to 1): ms per image, and the images per second one worker can give at most."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode = resize = 0.0
        resized = []
        for path in paths[:sample]:
            start = time.perf_counter()
            image = load_image(path)
            decoded = time.perf_counter()
            resized.append(transform(image))
            decode, resize = decode + decoded - start, resize + time.perf_counter() - decoded
        start = time.perf_counter()
        for i in range(0, len(resized), batch):
            _padded_collate(resized[i : i + batch], shapes)
        collate = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    count = len(resized)
    per_image = 1000 * (decode + resize + collate) / count
    return {
        "host_sample": count, "decode_ms_per_image": round(1000 * decode / count, 2),
        "resize_ms_per_image": round(1000 * resize / count, 2),
        "collate_ms_per_image": round(1000 * collate / count, 2), "host_ms_per_image": round(per_image, 2),
        "host_bound_images_per_s_per_worker": round(1000 / per_image, 1),
    }  # fmt: skip


def measure_coco_like_loader(
    paths: list[Path], workers: int, batch: int = 16, min_size: int = 800, max_size: int = 1333,
    pad_long_sides: Sequence[int] = (1056, 1184), host_sample: int = 32,
) -> dict[str, Any]:  # fmt: skip
    """Images/s of decode + resize + padded collate over `paths` (JPEGs of any sizes) in the recipes' bucketed
    order: the bucket of each image from its header, `BucketedEpochKeyedSampler`'s batches, each batch padded to
    its `PadShapes` shape (`pad_images(shape=...)`); and the host work per image, step by step (`host_cost`)."""
    processing = recipe_processing(min_size, max_size, pad_long_sides)
    shapes = PadShapes.from_config(processing)
    assert shapes is not None  # recipe_processing checked the long sides
    sizes = resized_sizes([image_size(path) for path in paths], processing)
    batches = bucketed_batches(sizes, shapes, batch)
    if len(batches) < 2:
        raise ValueError(f"{len(paths)} images make {len(batches)} batches of {batch}: expected >= 2 (1 warms up)")
    transform = ImageTransform.from_config(processing, normalize=False)
    loader = DataLoader(
        _Images(paths, transform), batch_sampler=batches, num_workers=workers,
        collate_fn=functools.partial(_padded_collate, shapes=shapes), prefetch_factor=4 if workers else None,
    )  # fmt: skip
    iterator = iter(loader)
    first, _ = next(iterator)  # worker start-up and the first batch are not throughput
    met = {tuple(first.shape[-2:])}
    start = time.perf_counter()
    count = 0
    for values, _ in iterator:
        count += values.shape[0]
        met.add(tuple(values.shape[-2:]))
    rate = count / (time.perf_counter() - start)
    covering = [shapes.covering(sizes[i] for i in b) for b in batches]
    padded = sum(len(b) * h * w for b, (h, w) in zip(batches, covering, strict=True))
    real = sum(sizes[i][0] * sizes[i][1] for b in batches for i in b)
    host = host_cost(paths, transform, shapes, batch, host_sample)
    return {
        "kind": "loader_coco_like", "workers": workers, "batch": batch,
        "dtype": str(first.dtype).removeprefix("torch."),
        "jpeg_sizes": len({image_size(path) for path in paths}), "resized_sizes": len(set(sizes)),
        "batches": len(batches), "batch_shapes": sorted([int(h), int(w)] for h, w in met),
        "padded_to_real": round(padded / real, 4), "images": count, "images_per_s": round(rate, 1),
        "images_per_s_per_worker": round(rate / max(workers, 1), 1), **host,
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
    p.add_argument("--coco-like", action="store_true", help="COCO-like sizes, bucketed batches of padded shapes")
    p.add_argument("--seed", type=int, default=0, help="--coco-like: the draw of sizes")
    args = p.parse_args()
    if args.pretrain and not args.tokenizer:
        p.error("--pretrain needs --tokenizer DIR")
    if args.pretrain and args.coco_like:
        p.error("--pretrain and --coco-like measure different loaders: give one")
    emit(environment("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = coco_like_sizes(args.images, args.seed) if args.coco_like else None
        paths = write_jpegs(Path(tmp), args.images, sizes=sizes)
        for workers in args.workers:
            if args.coco_like:
                emit(measure_coco_like_loader(paths, workers, args.batch))
                continue
            if args.pretrain:
                results = measure_pretrain_loaders(Path(tmp), paths, args.tokenizer, workers, args.batch, args.batches)
                for name, result in results.items():
                    emit({"kind": "pretrain_loader", "path": name, "workers": workers, "batch": args.batch, **result})
                continue
            emit(measure_loader(paths, workers, args.batch, normalize_on_host=args.normalize_on_host))


if __name__ == "__main__":
    main()
