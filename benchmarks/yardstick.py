"""Runs `../shared/yardstick/naive_pixelbert_bench.py` (the straightforward Pixel-BERT our speed is measured
against) in this process, configuration by configuration, so that its figures and ours come from one run on one
machine. Its own code does the measuring; this module only loads it and picks the configurations."""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks.common import emit, environment

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "yardstick" / "naive_pixelbert_bench.py"


def load_yardstick(path: str | Path = DEFAULT_PATH, device: str = "cuda") -> ModuleType:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"yardstick script not found at {path}; pass --yardstick PATH")
    spec = importlib.util.spec_from_file_location("naive_pixelbert_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DEV = device  # what its main() sets from --device
    return module


def yardstick_args(
    size: tuple[int, int], batch: int, device: str, text_len: int = 32, warmup: int = 3, steps: int = 10
) -> argparse.Namespace:
    """Its argparse defaults, with our shapes."""
    return argparse.Namespace(
        depth="resnet50", size=list(size), text_len=text_len, n_sample=100, batch=batch, warmup=warmup,
        steps=steps, device=device, compile=False, no_pool=False, cudnn_benchmark=False,
    )  # fmt: skip


def run_training(
    module: ModuleType, args: argparse.Namespace, mode: str, tuned: bool, compiled: bool, cudnn_benchmark: bool
) -> dict[str, Any]:
    """One of its training configurations; `cudnn_benchmark` is its `--cudnn-benchmark` flag (off by default)."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    cfg: dict[str, Any] = {"mode": mode, "tuned": tuned, "batch": args.batch}
    if compiled:
        cfg["compile"] = True
    start = time.perf_counter()
    result = module.run(cfg, args)
    return {
        "kind": "yardstick", **result, "cudnn_benchmark": cudnn_benchmark,
        "wall_incl_compile_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def run_latency(module: ModuleType, args: argparse.Namespace, tuned: bool) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = False
    return {"kind": "yardstick_latency", **module.latency(tuned, args)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--yardstick", default=str(DEFAULT_PATH))
    p.add_argument("--size", type=int, nargs=2, default=[800, 1344])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--name", default=None, help="JSON lines are named NAME_pretrain and NAME_finetune")
    args = p.parse_args()
    module = load_yardstick(args.yardstick, args.device)
    emit(environment(args.device))
    y = yardstick_args(tuple(args.size), args.batch, args.device, warmup=args.warmup, steps=args.steps)
    for mode in ("pretrain", "finetune"):
        result = run_training(
            module, y, mode, tuned=args.device == "cuda", compiled=args.compile, cudnn_benchmark=False
        )
        emit({"name": f"{args.name}_{mode}", **result} if args.name else result)


if __name__ == "__main__":
    main()
