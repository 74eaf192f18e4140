"""What every benchmark shares: the device, timing with the device synchronised, peak memory, FLOP counts, and
printing one JSON line per measurement (the yardstick's format: samples/s, achieved TFLOP/s, peak GiB)."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch

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
