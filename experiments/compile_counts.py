"""Compiled graphs per epoch through `pixelbert fit`, with and without fixed padded shapes, on ShapesWorld images of
9 sizes (`write_mixed_sizes`), with torch.compile's real inductor backend on the CPU (the test,
tests/test_fixed_shapes.py, uses dynamo's eager backend for speed; this shows the same with code generation).

Each arm pre-trains the tiny preset for `--epochs` epochs with validation and checkpoints, printing dynamo's graph
count and the wall time after every epoch: with `pad_long_sides` the count stops after the first epoch and later
epochs compile nothing; without, the second size met turns each module into one dynamic-shape graph, which
`reduce-overhead` cannot record CUDA graphs of.

    python -m experiments.compile_counts --out /tmp/cc
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from pixelbert_pl.cli import main as fit


class CountGraphs(pl.Callback):
    """Dynamo's compiled-graph count, the batch shapes met and the wall time at the end of each epoch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.shapes.add((*batch.pixel_values.shape[-2:], batch.input_ids.shape[1]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        stats = torch._dynamo.utils.counters["stats"]
        self.rows.append({
            "epoch": trainer.current_epoch, "graphs": stats["unique_graphs"],
            "batch_shapes_so_far": len(self.shapes), "wall_s": round(time.perf_counter() - self.start, 1),
        })  # fmt: skip


# One padded shape set and one text width (texts padded to max_text_length: validation draws other captions each
# epoch, whose width combinations a shorter multiple would leave to chance).
FIXED_SHAPES = ["--data.init_args.pad_long_sides", "[96]", "--data.init_args.text_pad_multiple", "24"]


def fit_args(corpus: Path, out: Path, epochs: int = 3) -> list[str]:
    """`pixelbert fit` of the tiny preset, compiled, on `corpus` (`write_mixed_sizes`) at resize 64 / 128 / 16."""
    return [
        "fit", "--model", "pixelbert_pl.tasks.PretrainTask", "--model.init_args.preset", "pixelbert_tiny",
        "--model.init_args.compile", "true",
        "--data", "pixelbert_pl.data.PretrainDataModule",
        "--data.init_args.karpathy_file", str(corpus / "karpathy.json"), "--data.init_args.image_root", str(corpus),
        "--data.init_args.train_splits", "[train]", "--data.init_args.tokenizer", str(corpus / "vocab.txt"),
        "--data.init_args.image_min_size", "64", "--data.init_args.image_max_size", "128",
        "--data.init_args.size_divisor", "16", "--data.init_args.max_text_length", "24",
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", str(epochs),
        "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def run(corpus: Path, out: Path, epochs: int, fixed: bool) -> list[dict[str, Any]]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    sys.argv = ["pixelbert"]
    callback = "--trainer.callbacks+=experiments.compile_counts.CountGraphs"
    cli = fit([*fit_args(corpus, out, epochs), *(FIXED_SHAPES if fixed else []), callback])
    # By name: run as `-m`, this file is __main__ and the CLI's callback the class of experiments.compile_counts.
    (counter,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CountGraphs"]
    return counter.rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate, write_mixed_sizes

    generate(args.out / "shapes", ShapesWorldConfig(num_images=60, num_nlvr2=0), seed=0)
    corpus = write_mixed_sizes(args.out / "shapes", args.out / "mixed")
    for fixed in (True, False):
        rows = run(corpus, args.out / ("fixed" if fixed else "free"), args.epochs, fixed)
        print(json.dumps({"fixed_padded_shapes": fixed, "epochs": rows}), flush=True)


if __name__ == "__main__":
    main()
