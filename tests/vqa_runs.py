"""`pixelbert fit` flags of short runs of the demo's VQA recipe (tiny preset, ShapesWorld), shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

from pixelbert_pl.harness.demo import CONFIGS

VQA = CONFIGS / "vqa_shapes.yaml"
IMAGE_SIZE = 48  # the data's, not the recipe's (64): what a checkpoint must carry to predict


def vqa_args(root: Path, out: Path, *extra: str, max_steps: int = 6) -> list[str]:
    """The recipe on `root`, logging to `out`, `max_steps` steps with validation every 3, then `extra`."""
    return [
        "--config", str(VQA),
        "--data.init_args.root", str(root),
        "--data.init_args.image_min_size", str(IMAGE_SIZE), "--data.init_args.image_max_size", str(IMAGE_SIZE),
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--trainer.max_steps", str(max_steps),
        "--trainer.val_check_interval", "3",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out),
        *extra,
    ]  # fmt: skip
