"""Every benchmark figure in one process, cheapest first, each measurement on its own so that one failure
does not lose the rest; the JSON lines go to stdout and to `--out`. The last line is the summary with the ratios
against the compiled yardstick.

    python -m benchmarks.suite --out benchmarks/results/h200.jsonl                       # GPU: everything
    python -m benchmarks.suite --device cpu --size 96 96 --batch 2 --out cpu.jsonl       # CPU: same-shape ratio
    python -m benchmarks.suite --retrieval-only --retrieval-measure 32 --out retrieval.jsonl  # GPU: retrieval alone
    python -m benchmarks.suite --coco-like --budget-s 470 --out coco_like.jsonl           # GPU: COCO-like sizes alone

On the CPU it times the yardstick's plain (fp32, eager) configuration against the Lightning path with the same
model (pixelbert_r50) and shapes, and the tiny preset's step, since neither bf16 nor torch.compile pays there.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import allow_many_compiled_models, emit, environment, log_to
from benchmarks.latency import measure_latency
from benchmarks.loader import measure_loader, write_jpegs
from benchmarks.retrieval_cost import measure_retrieval
from benchmarks.train_throughput import TrainShape, measure_training
from benchmarks.yardstick import DEFAULT_PATH, load_yardstick, run_latency, run_training, yardstick_args

RESULTS: dict[str, dict[str, Any]] = {}


def attempt(name: str, fn: Callable[[], dict[str, Any]]) -> None:
    try:
        RESULTS[name] = emit({"name": name, **fn()})
    except Exception as err:  # report and go on: the other figures stand alone
        emit({"name": name, "error": repr(err)[:500], "trace": traceback.format_exc()[-1500:]})
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attempt_in_process(name: str, argv: list[str], timeout: float | None = None) -> None:
    """A training figure in a fresh Python process: torch.compile keeps per-function state (dynamic-shape
    decisions, cache entries) that would let one model's compilation change the next one's. A figure cut by
    `timeout` keeps the named lines it printed before."""
    command = [sys.executable, "-m", *argv, "--name", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        partial = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        for line in partial.splitlines():
            if line.startswith('{"name"'):
                record = json.loads(line)
                RESULTS[record["name"]] = emit(record)
        cut = f"cut after {timeout:.0f} s (the suite's --budget-s)"
        emit({"name": name, "error": cut, "command": " ".join(argv), "trace": str(err)[-300:]})
        return
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"name"')]
    for record in lines:
        RESULTS[record["name"]] = emit(record)
    if done.returncode != 0 or not lines:
        trace = (done.stdout + done.stderr)[-1500:]
        emit({"name": name, "error": f"exit {done.returncode}", "command": " ".join(argv), "trace": trace})
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            print(line, flush=True)  # profiler tables


def ratio(ours: str, theirs: str) -> float | None:
    if ours in RESULTS and theirs in RESULTS:
        return round(RESULTS[ours]["samples_per_s"] / RESULTS[theirs]["samples_per_s"], 3)
    return None


# Flickr30K's and COCO's typical 4:3 photos at the paper's 800-pixel short side, landscape and portrait in turn.
REAL_SIZES = (800, 1067, 1067, 800)


def retrieval_figures(args: argparse.Namespace) -> None:
    """Compiled retrieval evaluation at the training size (every image 800 x 1344, the worst case) and at the
    datasets' real 4:3 sizes, mixed in each batch: exhaustive (the paper's protocol), then two-stage
    (`RetrievalTask(rerank_top_k=...)`) at the real sizes."""
    figures = (
        ("retrieval_compiled", tuple(args.size), None),
        ("retrieval_compiled_real_sizes", REAL_SIZES, None),
        ("retrieval_compiled_real_sizes_rerank", REAL_SIZES, args.rerank_top_k),
    )
    for name, size, k in figures:
        attempt(name, lambda s=size, k=k: measure_retrieval(
            args.preset, s, args.device, args.retrieval_images, args.retrieval_measure, eval_chunk=args.eval_chunk,
            compile=True, rerank_top_k=k, coarse_pool=args.coarse_pool,
        ))  # fmt: skip


def gpu_suite(args: argparse.Namespace) -> None:
    if args.retrieval_only:
        retrieval_figures(args)
        return
    start = time.monotonic()
    if args.coco_like:
        run_budgeted(coco_like_figures(args), args, start)
        return
    size, batch, device = tuple(args.size), args.batch, args.device
    yardstick = load_yardstick(args.yardstick, device)
    y = yardstick_args(size, batch, device, warmup=args.warmup, steps=args.steps)
    if not args.training_only:
        cheap_figures(args, yardstick, y)
        start = time.monotonic()  # the budget is the compiled figures'
    run_budgeted(compiled_training(args), args, start)
    if args.training_only:
        return
    run_budgeted(coco_like_figures(args), args, start)
    for mode in ("pretrain", "finetune"):
        attempt(f"yardstick_{mode}_compiled_cudnn_benchmark", lambda m=mode: run_training(
            yardstick, y, m, True, True, True
        ))  # fmt: skip
    retrieval_figures(args)


def cheap_figures(args: argparse.Namespace, yardstick: Any, y: argparse.Namespace) -> None:
    """Figures that compile nothing: latency, retrieval (eager), loader, eager training steps."""
    size, batch, device, preset = tuple(args.size), args.batch, args.device, args.preset
    for variant in ("fp32", "bf16", "bf16_cuda_graph") if device == "cuda" else ("fp32",):
        attempt(f"latency_{variant}", lambda v=variant: measure_latency(preset, size, device, v))
    for tuned in (False, True):
        attempt(f"yardstick_latency_tuned_{tuned}", lambda t=tuned: run_latency(yardstick, y, t))
    attempt("retrieval_eager", lambda: measure_retrieval(
        preset, size, device, args.retrieval_images, args.retrieval_measure, eval_chunk=args.eval_chunk,
    ))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.loader_images)
        for workers in args.loader_workers:
            attempt(f"loader_{workers}", lambda w=workers: measure_loader(paths, w))
        attempt("loader_1_normalize_on_host", lambda: measure_loader(paths, 1, normalize_on_host=True))
    for mode in ("pretrain", "finetune"):
        attempt(f"yardstick_{mode}_tuned_eager", lambda m=mode: run_training(yardstick, y, m, True, False, False))
        attempt(f"ours_{mode}_strict_eager", lambda m=mode: measure_training(
            TrainShape(mode=m, preset=preset, size=size, batch=batch), device, args.warmup, args.steps
        ))  # fmt: skip


def compiled_training(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """Compiled training, each configuration in its own process, most needed first: the yardstick as the comparison
    runs it (--compile, cuDNN benchmark off), the project as shipped (profiled, syncs counted), then the variants."""
    size, batch = tuple(args.size), args.batch
    shapes = ["--size", *map(str, size), "--batch", str(batch), "--warmup", str(args.warmup)]
    shapes += ["--steps", str(args.steps), "--preset", args.preset]
    shipped = {"pretrain": ["--captions-per-image", "2", "--frozen-stages", "1"], "finetune": ["--frozen-stages", "1"]}
    throughput = ["benchmarks.train_throughput", "--compile", *shapes, "--mode"]
    yardstick = ["benchmarks.yardstick", "--compile", "--yardstick", args.yardstick, "--size", *map(str, size)]
    yardstick += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    figures = [
        ("yardstick_compiled", [*yardstick, "--batch", str(batch)]),
        ("ours_pretrain_shipped_compiled", [
            *throughput, "pretrain", *shipped["pretrain"], "--sync-debug", "--profile",
        ]),
        ("ours_finetune_shipped_compiled", [*throughput, "finetune", *shipped["finetune"], "--sync-debug"]),
        # VQA questions two to an image (VQA v2 has 5.4 per image): the CNN runs once for both, as in pre-training.
        ("ours_finetune_shared_image_compiled", [*throughput, "finetune", *shipped["pretrain"]]),
        # CUDA graphs for the compiled regions (fewer launches from the host).
        ("ours_pretrain_shipped_reduce_overhead", [
            *throughput, "pretrain", *shipped["pretrain"], "--compile-mode", "reduce-overhead",
        ]),
        ("ours_pretrain_strict_compiled", [*throughput, "pretrain"]),
        ("ours_finetune_strict_compiled", [*throughput, "finetune"]),
    ]  # fmt: skip
    return figures


# The shipped recipes' batches in rows (`coco_vg_r50.yaml`: 32 items of 2 captions; `vqa_r50.yaml`: 16 questions,
# 2 an image), and the yardstick at the same rows per step (one image each), as in the fixed-size comparison.
COCO_LIKE_ROWS = {"pretrain": 64, "finetune": 16}


def coco_like_figures(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The shipped paths on COCO-like batches (`train_throughput --coco-like`: the recipes' resize, padded shapes,
    text multiple 8, compile with CUDA graphs, channels_last, bf16, 2 captions / questions an image, stem and layer1
    frozen) and the compiled yardstick on random batches of the same sizes, each padded to its maximum
    (`yardstick --coco-like`); in pairs, pre-training first, so a budget cut loses a whole ratio."""
    k = args.coco_like_batches
    rows = dict(zip(("pretrain", "finetune"), args.coco_like_rows, strict=True))
    # Two cycles of warm-up (each shape compiled, then its CUDA graph recorded), two timed: every batch weighs one.
    steps = ["--warmup", str(2 * k), "--steps", str(2 * k), "--mix-batches", str(k)]
    ours = ["benchmarks.train_throughput", "--coco-like", "--compile", "--compile-mode", "reduce-overhead"]
    ours += ["--captions-per-image", "2", "--frozen-stages", "1", "--preset", args.preset, *steps, "--mode"]
    yardstick = ["benchmarks.yardstick", "--coco-like", "--compile", "--yardstick", args.yardstick]
    yardstick += ["--coco-batches", str(k), "--warmup", str(args.warmup), "--steps", str(args.steps), "--mode"]
    figures = []
    for mode in ("pretrain", "finetune"):
        figures.append((f"ours_{mode}_coco_like", [*ours, mode, "--batch", str(rows[mode])]))
        figures.append(("yardstick_coco_like_compiled", [*yardstick, mode, "--batch", str(rows[mode])]))
    return figures


def run_budgeted(figures: list[tuple[str, list[str]]], args: argparse.Namespace, start: float) -> None:
    """Each figure in its own process. With `--budget-s` (counted from `start`), a figure is skipped when less than
    `--figure-s` seconds are left and cut when the budget ends."""
    for name, argv in figures:
        left = None if args.budget_s is None else args.budget_s - (time.monotonic() - start)
        if left is not None and left < args.figure_s:
            emit({"name": name, "error": f"skipped: {left:.0f} s of the suite's --budget-s left"})
            continue
        attempt_in_process(name, argv, timeout=left)


def cpu_suite(args: argparse.Namespace) -> None:
    size, batch, device = tuple(args.size), args.batch, "cpu"
    yardstick = load_yardstick(args.yardstick, device)
    y = yardstick_args(size, batch, device, warmup=args.warmup, steps=args.steps)
    for mode in ("pretrain", "finetune"):
        attempt(f"yardstick_{mode}_plain_cpu", lambda m=mode: run_training(yardstick, y, m, False, False, False))
        attempt(f"ours_{mode}_r50_cpu", lambda m=mode: measure_training(
            TrainShape(mode=m, size=size, batch=batch, precision="32-true"), device, args.warmup, args.steps
        ))  # fmt: skip
        attempt(f"ours_{mode}_tiny_cpu", lambda m=mode: measure_training(
            TrainShape(mode=m, preset="pixelbert_tiny", size=(96, 96), batch=batch, precision="32-true"),
            device, args.warmup, args.steps,
        ))  # fmt: skip


def summary(device: str, args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {**environment(device), "kind": "summary", "size": args.size, "batch": args.batch}
    if args.suite == "gpu":
        record.update(
            ratio_vs_compiled_yardstick_pretrain=ratio("ours_pretrain_shipped_compiled", "yardstick_compiled_pretrain"),
            ratio_vs_compiled_yardstick_finetune=ratio("ours_finetune_shipped_compiled", "yardstick_compiled_finetune"),
            ratio_strict_pretrain=ratio("ours_pretrain_strict_compiled", "yardstick_compiled_pretrain"),
            ratio_strict_finetune=ratio("ours_finetune_strict_compiled", "yardstick_compiled_finetune"),
            ratio_shared_image_finetune=ratio("ours_finetune_shared_image_compiled", "yardstick_compiled_finetune"),
            ratio_vs_cudnn_benchmark_yardstick_pretrain=ratio(
                "ours_pretrain_shipped_compiled", "yardstick_pretrain_compiled_cudnn_benchmark"
            ),
            ratio_vs_cudnn_benchmark_yardstick_finetune=ratio(
                "ours_finetune_shipped_compiled", "yardstick_finetune_compiled_cudnn_benchmark"
            ),
            ratio_coco_like_pretrain=ratio("ours_pretrain_coco_like", "yardstick_coco_like_compiled_pretrain"),
            ratio_coco_like_finetune=ratio("ours_finetune_coco_like", "yardstick_coco_like_compiled_finetune"),
            shipped="pretrain: captions_per_image 2 (CNN once per image for both), cnn_frozen_stages 1; "
            "finetune: cnn_frozen_stages 1; strict: one caption per image, every CNN stage trained; coco_like: "
            "the recipes' padded shapes, CUDA graphs, 2 captions / questions an image, against the compiled "
            "yardstick on random batches of the same sizes padded to their maximum",
        )  # fmt: skip
    else:
        record.update(
            ratio_cpu_pretrain=ratio("ours_pretrain_r50_cpu", "yardstick_pretrain_plain_cpu"),
            ratio_cpu_finetune=ratio("ours_finetune_r50_cpu", "yardstick_finetune_plain_cpu"),
        )
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--suite", choices=["gpu", "cpu"], default=None, help="default: gpu on a GPU, else cpu")
    p.add_argument("--preset", default="pixelbert_r50", help="the project's model in the gpu suite")
    p.add_argument("--yardstick", default=str(DEFAULT_PATH))
    p.add_argument("--size", type=int, nargs=2, default=None, help="default 800 1344 (GPU), 96 96 (CPU)")
    p.add_argument("--batch", type=int, default=None, help="default 16 (GPU), 2 (CPU)")
    p.add_argument("--warmup", type=int, default=3, help="training steps before timing (the first compiles)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--retrieval-images", type=int, default=1000)
    p.add_argument("--retrieval-measure", type=int, default=16)
    p.add_argument("--eval-chunk", type=int, default=2048)
    p.add_argument("--rerank-top-k", type=int, default=100, help="k of the two-stage retrieval figure")
    p.add_argument("--coarse-pool", type=int, default=2, help="its coarse stage's pixel-token pooling")
    p.add_argument("--loader-images", type=int, default=192)
    p.add_argument("--loader-workers", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--out", default=None)
    p.add_argument("--training-only", action="store_true", help="only the compiled training figures and ratios")
    p.add_argument("--retrieval-only", action="store_true", help="only the compiled retrieval figures")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the compiled figures")
    p.add_argument("--figure-s", type=float, default=90.0, help="seconds a compiled figure needs (with --budget-s)")
    p.add_argument("--coco-like", action="store_true", help="only the COCO-like figures (compiled) and their ratios")
    p.add_argument("--coco-like-batches", type=int, default=8, help="distinct COCO-like batches per figure")
    p.add_argument(
        "--coco-like-rows",
        type=int,
        nargs=2,
        default=list(COCO_LIKE_ROWS.values()),
        metavar=("PRETRAIN", "FINETUNE"),
        help="rows per step of the COCO-like figures (the recipes')",
    )
    args = p.parse_args()
    args.suite = args.suite or ("gpu" if args.device == "cuda" else "cpu")
    gpu = args.suite == "gpu"
    if args.coco_like and not gpu:
        p.error("--coco-like runs the compiled GPU figures: give --suite gpu on a GPU")
    args.size = args.size or ([800, 1344] if gpu else [96, 96])
    args.batch = args.batch or (16 if gpu else 2)
    log_to(args.out)
    allow_many_compiled_models()
    emit(environment(args.device))
    (gpu_suite if gpu else cpu_suite)(args)
    emit(summary(args.device, args))


if __name__ == "__main__":
    main()
