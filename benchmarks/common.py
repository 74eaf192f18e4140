"""What every benchmark shares: the device, timing with the device synchronised, peak memory, FLOP counts,
printing one JSON line per measurement (the yardstick's format: samples/s, achieved TFLOP/s, peak GiB), and the
COCO-like image sizes and text lengths the `--coco-like` figures draw, with the two training orders they compare."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from pixelbert_pl.data.samplers import BucketedEpochKeyedSampler
from pixelbert_pl.processing import ProcessingConfig, resize_shape
from pixelbert_pl.processing.shapes import PadShapes

_SINKS: list[TextIO] = []


def log_to(path: str | Path | None) -> None:
    """Also append every emitted line to `path` (the committed results file)."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _SINKS.append(Path(path).open("a", encoding="utf-8"))


def emit(record: dict[str, Any]) -> dict[str, Any]:
    line = json.dumps(record)
    print(line, flush=True)
    for sink in _SINKS:
        sink.write(line + "\n")
        sink.flush()
    return record


def environment(device: str) -> dict[str, Any]:
    import pytorch_lightning
    import torchvision
    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return {
        "kind": "environment", "device": gpu, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "transformers": transformers.__version__, "pytorch_lightning": pytorch_lightning.__version__,
        "python": sys.version.split()[0], "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (matrix products and convolutions, forward and backward), by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def median_ms(fn: Callable[[], Any], device: str, runs: int = 30, warmup: int = 10) -> float:
    """Median wall time of `fn` in ms, the device synchronised around each run."""
    times = []
    for i in range(warmup + runs):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return round(1000 * times[len(times) // 2], 3)


def allow_many_compiled_models() -> None:
    """Every model here compiles `nn.Sequential.forward` (the trunks) and BERT's forward: one dynamo cache entry
    per model instance and input shape. Past the default limit (8) dynamo would silently run later models eagerly."""
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)


# A COCO-like mix of original (height, width) image sizes with weights: approximate proportions after COCO's look
# (long side mostly 640, 4:3 the commonest; landscape about 60%, portrait 30%, square and near-square, within 5:4,
# 10%), not measured COCO statistics. Under the recipes' resize (800 / 1333 / 32) it gives 16 distinct sizes.
COCO_LIKE_SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    # landscape, 0.60
    ((480, 640), 0.30), ((427, 640), 0.08), ((426, 640), 0.04), ((425, 640), 0.03), ((424, 640), 0.02),
    ((428, 640), 0.02), ((375, 500), 0.03), ((360, 640), 0.02), ((383, 640), 0.01), ((400, 640), 0.01),
    ((453, 640), 0.01), ((443, 640), 0.01), ((465, 640), 0.01), ((334, 500), 0.01),
    # portrait, 0.30
    ((640, 480), 0.14), ((640, 427), 0.06), ((640, 426), 0.03), ((640, 425), 0.02), ((500, 375), 0.02),
    ((640, 428), 0.01), ((640, 360), 0.01), ((640, 453), 0.01),
    # square and near-square, 0.10
    ((640, 640), 0.03), ((612, 612), 0.02), ((500, 500), 0.01), ((640, 512), 0.01), ((512, 640), 0.01),
    ((480, 480), 0.01), ((640, 549), 0.01),
)  # fmt: skip

# Token counts, [CLS] and [SEP] included: captions about 10-25 (mean about 14, COCO's ~10.5 words), VQA questions
# about 6-15 (mean about 9, VQA v2's ~6.2 words); approximate, not measured. Both capped at max_text_length 40.
TEXT_LENGTHS = {"caption": (10, 4), "question": (6, 3)}  # kind -> (shortest, negative-binomial n at p = 1/2)


def coco_like_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """`count` original (height, width) sizes drawn from `COCO_LIKE_SIZES`, the same for the same seed."""
    rng = np.random.default_rng(seed)
    weights = np.array([weight for _, weight in COCO_LIKE_SIZES])
    picks = rng.choice(len(COCO_LIKE_SIZES), size=count, p=weights / weights.sum())
    return [COCO_LIKE_SIZES[int(i)][0] for i in picks]


def coco_like_text_lengths(count: int, kind: str = "caption", seed: int = 0, cap: int = 40) -> list[int]:
    """`count` token counts of COCO-like captions or VQA-like questions (`TEXT_LENGTHS`), at most `cap`."""
    if kind not in TEXT_LENGTHS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(TEXT_LENGTHS)}")
    shortest, n = TEXT_LENGTHS[kind]
    rng = np.random.default_rng(seed + 1)  # not the image sizes' stream
    return [min(cap, shortest + int(extra)) for extra in rng.negative_binomial(n, 0.5, size=count)]


def recipe_processing(
    min_size: int = 800, max_size: int = 1333, pad_long_sides: Sequence[int] = (1056, 1184), size_divisor: int = 32
) -> ProcessingConfig:
    """The shipped GPU recipes' resize and padded shapes (`lightning_configs/base/gpu.yaml`)."""
    return ProcessingConfig(
        tokenizer=None, image_min_size=min_size, image_max_size=max_size, size_divisor=size_divisor,
        pad_long_sides=tuple(pad_long_sides),
    )  # fmt: skip


def resized_sizes(sizes: Sequence[tuple[int, int]], processing: ProcessingConfig) -> list[tuple[int, int]]:
    p = processing
    return [resize_shape(h, w, p.image_min_size, p.image_max_size, p.size_divisor) for h, w in sizes]


def random_batches(count: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """The old training order: a seeded shuffle of `count` indices cut into batches, the partial last one dropped."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + batch_size] for i in range(0, count // batch_size * batch_size, batch_size)]


def bucketed_batches(
    sizes: Sequence[tuple[int, int]], shapes: PadShapes, batch_size: int, seed: int = 0
) -> list[list[int]]:
    """The bucketed training order over resized `sizes`: `BucketedEpochKeyedSampler`'s batches for epoch 0."""
    buckets = [shapes.bucket(h, w) for h, w in sizes]
    return BucketedEpochKeyedSampler(list(sizes), buckets, batch_size, seed=seed).batches()


def batch_max_shape(sizes: Iterable[tuple[int, int]], divisor: int = 32) -> tuple[int, int]:
    """What a batch padded to its own maximum takes: the largest height and width, rounded up to `divisor`."""
    sizes = list(sizes)
    return tuple(-(-max(side[i] for side in sizes) // divisor) * divisor for i in (0, 1))  # type: ignore[return-value]
