"""Runs `../shared/yardstick/naive_pixelbert_bench.py` (the straightforward Pixel-BERT our speed is measured
against) in this process, configuration by configuration, so that its figures and ours come from one run on one
machine. Its own code does the measuring; this module only loads it and picks the configurations.

`--coco-like` runs it as a user would on COCO-like data (`benchmarks.common.COCO_LIKE_SIZES`, resized by
`--resize`): `--coco-batches` random (ungrouped) batches, each padded to its own maximum rounded to 32 and its texts
to the longest (COCO-like caption lengths in pre-training, question lengths in VQA); its `run(cfg, args)` once per
distinct padded shape, at the longest text of that shape's batches, each with its own warm-up, and the
batch-weighted figure: all the batches' samples over the sum of each batch's step time. Compiled, each shape gets a
static graph of its own (`torch._dynamo.reset()` between them), the yardstick's best case: one model meeting
these shapes in one run would recompile once and then run a dynamic-shape graph.

    python -m benchmarks.yardstick --compile
    python -m benchmarks.yardstick --coco-like --compile --mode pretrain --batch 64
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks.common import (
    allow_many_compiled_models,
    batch_max_shape,
    coco_like_sizes,
    coco_like_text_lengths,
    emit,
    environment,
    recipe_processing,
    resized_sizes,
)

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


def coco_like_plan(
    mode: str, batch: int, batches: int, resize: tuple[int, int] = (800, 1333), seed: int = 0, divisor: int = 32,
    max_text_length: int = 40,
) -> list[dict[str, Any]]:  # fmt: skip
    """The shapes `batches` random batches of `batch` COCO-like images (one text each) take padded to their own
    maximum (rounded to `divisor`), texts to their longest: one entry per distinct image shape, in the order first
    met, with the longest text of its batches, its batch count and its padded and real pixels."""
    if batch < 1 or batches < 1:
        raise ValueError(f"batch={batch}, batches={batches}: expected >= 1")
    processing = recipe_processing(*resize, pad_long_sides=(), size_divisor=divisor)
    sizes = resized_sizes(coco_like_sizes(batch * batches, seed), processing)
    kind = "caption" if mode == "pretrain" else "question"
    lengths = coco_like_text_lengths(batch * batches, kind, seed, max_text_length)
    plan: dict[tuple[int, int], dict[str, Any]] = {}
    for b in range(batches):
        members = sizes[b * batch : (b + 1) * batch]
        shape = batch_max_shape(members, divisor)
        entry = plan.setdefault(shape, {"size": list(shape), "text_len": 0, "batches": 0, "padded": 0, "real": 0})
        entry["text_len"] = max(entry["text_len"], max(lengths[b * batch : (b + 1) * batch]))
        entry["batches"] += 1
        entry["padded"] += batch * shape[0] * shape[1]
        entry["real"] += sum(h * w for h, w in members)
    return list(plan.values())


def run_coco_like(
    module: ModuleType, args: argparse.Namespace, mode: str, tuned: bool, compiled: bool, plan: list[dict[str, Any]],
    name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One of its training configurations once per shape of `plan` (each shape's line emitted as it is measured,
    so a run cut short keeps them), then the batch-weighted figure over every batch of the plan."""
    shapes, total_s, total_flops, peaks = [], 0.0, 0.0, []
    start = time.perf_counter()
    for entry in plan:
        if compiled:
            torch._dynamo.reset()  # a static graph for this shape alone, not a dynamic one from the previous
        shaped = argparse.Namespace(**{**vars(args), "size": entry["size"], "text_len": entry["text_len"]})
        result = run_training(module, shaped, mode, tuned=tuned, compiled=compiled, cudnn_benchmark=False)
        line = {
            "kind": "yardstick_coco_like_shape", "mode": mode, "size": entry["size"], "text_len": entry["text_len"],
            "batches": entry["batches"], **{k: result[k] for k in ("step_s", "samples_per_s", "tflops_per_step")},
            "peak_gib": result["peak_gib"], "wall_incl_compile_s": result["wall_incl_compile_s"],
        }  # fmt: skip
        emit({"name": f"{name}_{mode}_{entry['size'][0]}x{entry['size'][1]}", **line} if name else line)
        shapes.append(line)
        total_s += entry["batches"] * result["step_s"]
        total_flops += entry["batches"] * result["tflops_per_step"]
        peaks.append(result["peak_gib"])
    count = sum(entry["batches"] for entry in plan)
    return {
        "kind": "yardstick_coco_like", "mode": mode, "tuned": tuned, "compile": compiled, "batch": args.batch,
        "batches": count, "distinct_shapes": len(plan), "samples_per_s": round(count * args.batch / total_s, 2),
        "step_s": round(total_s / count, 4), "tflops_per_step": round(total_flops / count, 3),
        "achieved_tflop_s": round(total_flops / total_s, 1),
        "peak_gib": max(peaks) if None not in peaks else None,
        "padded_to_real": round(sum(e["padded"] for e in plan) / sum(e["real"] for e in plan), 4),
        "shapes": [{k: s[k] for k in ("size", "text_len", "batches", "step_s")} for s in shapes],
        "wall_incl_compile_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def run_latency(module: ModuleType, args: argparse.Namespace, tuned: bool) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = False
    return {"kind": "yardstick_latency", **module.latency(tuned, args)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--yardstick", default=str(DEFAULT_PATH))
    p.add_argument("--size", type=int, nargs=2, default=[800, 1344])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mode", nargs="+", choices=["pretrain", "finetune"], default=["pretrain", "finetune"])
    p.add_argument("--coco-like", action="store_true", help="random batches of COCO-like images, one run per shape")
    p.add_argument("--resize", type=int, nargs=2, default=[800, 1333], metavar=("MIN", "MAX"), help="--coco-like")
    p.add_argument("--coco-batches", type=int, default=8, help="--coco-like: the batches whose shapes are run")
    p.add_argument("--seed", type=int, default=0, help="--coco-like: the draw of sizes and text lengths")
    p.add_argument("--name", default=None, help="JSON lines are named NAME_pretrain and NAME_finetune")
    args = p.parse_args()
    module = load_yardstick(args.yardstick, args.device)
    emit(environment(args.device))
    y = yardstick_args(tuple(args.size), args.batch, args.device, warmup=args.warmup, steps=args.steps)
    if args.coco_like:
        allow_many_compiled_models()  # one model instance per shape and mode
    tuned = args.device == "cuda"
    for mode in args.mode:
        if args.coco_like:
            plan = coco_like_plan(mode, args.batch, args.coco_batches, tuple(args.resize), args.seed)
            result = run_coco_like(module, y, mode, tuned, args.compile, plan, args.name)
        else:
            result = run_training(module, y, mode, tuned=tuned, compiled=args.compile, cudnn_benchmark=False)
        emit({"name": f"{args.name}_{mode}", **result} if args.name else result)


if __name__ == "__main__":
    main()
