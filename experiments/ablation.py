"""The paper's Table 6 ablation on ShapesWorld, on the CPU, over seeds: `make ablation` (or this script).

For each variant (no pre-training; MLM only; ITM only; MLM + ITM without pixel sampling; MLM + ITM with it) and
seed: pre-train the tiny preset with the demo recipe and the same budget, score pre-training on val and on the
compositional `test_heldout` split (colour-shape combinations never seen in training), then fine-tune VQA, NLVR2
and retrieval from that checkpoint with the same budgets. "No pre-training" saves the randomly initialised model
(0 steps) and fine-tunes from it, so every variant goes through one code path.

Writes `runs.json` / `runs.csv` (one record per run), `table.md` (mean +- std per variant) and `ablation.png` to
`--out`, with the command, the commit and the date. `runs.json` is rewritten after every run, and a new invocation
with the same budgets skips the (variant, seed) runs it already holds: a two-hour job survives an interruption.

    python experiments/ablation.py --out experiments/results/ablation --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixelbert_pl.harness import demo
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.tasks.pretrain import PretrainTask

# variant -> pre-training flags (None: 0 pre-training steps)
VARIANTS: dict[str, list[str] | None] = {
    "no_pretraining": None,
    "mlm_only": ["--model.init_args.itm_weight", "0"],
    "itm_only": ["--model.init_args.mlm_weight", "0"],
    "mlm_itm_no_sampling": ["--model.init_args.sample_pixels", "false"],
    "mlm_itm": [],
}
HELDOUT = ("red triangle", "blue circle", "green square")
# table column -> run record key; every value is a fraction in [0, 1], as the metrics log it
COLUMNS = {
    "VQA acc": "vqa_accuracy",
    "NLVR2 acc": "nlvr2_accuracy",
    "i2t R@1": "retrieval_i2t_r1",
    "t2i R@1": "retrieval_t2i_r1",
    "ITM acc (val)": "val_itm_accuracy",
    "ITM acc (held-out)": "test_heldout_itm_accuracy",
    "MLM col+shape (val)": "val_mlm_attribute_accuracy",
    "MLM col+shape (held-out)": "test_heldout_mlm_attribute_accuracy",
}


def variant_flags(variant: str) -> list[str]:
    """The demo recipe's flags for one variant. The paper's variants draw ITM negatives from other images only, as
    the committed runs did: the demo's one-word twins would make "ITM only" another objective and mix two recipes
    in one resumed table."""
    return ["--data.init_args.hard_negative_probability", "0", *(VARIANTS[variant] or [])]


def pretrain(variant: str, seed: int, root: Path, out: Path, steps: int, extra: Sequence[str]) -> tuple[str, dict]:
    """Pre-train one variant; returns its checkpoint and its scores on val and test_heldout."""
    flags = VARIANTS[variant]
    args = [
        "fit", "--config", str(demo.CONFIG), "--data.init_args.root", str(root),
        "--data.init_args.holdout", json.dumps(list(HELDOUT)), "--seed_everything", str(seed),
        "--trainer.max_steps", str(steps if flags is not None else 0),
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false",
        *variant_flags(variant), *extra,
    ]  # fmt: skip
    cli = demo._cli(args)
    checkpoint = out / "pretrain.ckpt"
    cli.trainer.save_checkpoint(checkpoint, weights_only=True)
    task: PretrainTask = cli.model
    data: ShapesWorldDataModule = cli.datamodule
    scores: dict[str, Any] = {"pretrain_steps": int(cli.trainer.global_step)}
    for split in ("val", "test_heldout"):
        for key, value in demo.evaluate(task, data, split).items():
            if isinstance(value, dict):
                value = value.get("all")
            if not key.endswith("chance") and value is not None:
                scores[f"{split}_{key}"] = value
    return str(checkpoint), scores


def run_one(variant: str, seed: int, root: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, record = pretrain(variant, seed, root, out, args.pretrain_steps, args.pretrain_arg)
    finetune_args = [f"--seed_everything={seed}", f"--trainer.max_steps={args.finetune_steps}",
                     f"--trainer.val_check_interval={args.finetune_steps}",  # validate once, at the end
                     "--trainer.enable_progress_bar=false", *args.finetune_arg]  # fmt: skip
    for task in ("vqa", "nlvr2", "retrieval"):
        result = demo.finetune(task, out, checkpoint, finetune_args, root=root)
        if task == "retrieval":
            record.update(retrieval_i2t_r1=result["i2t_r1"], retrieval_t2i_r1=result["t2i_r1"])
        else:
            record[f"{task}_accuracy"] = result["accuracy"]
    budget = {"pretrain_budget": args.pretrain_steps, "finetune_budget": args.finetune_steps, "images": args.num_images}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"variant": variant, "seed": seed, **budget, **record, "seconds": round(time.perf_counter() - start, 1),
            "commit": commit, "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: mean +- std over seeds per variant and column."""
    header = "| variant | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for variant in VARIANTS:
        cells = []
        for key in COLUMNS.values():
            values = [r[key] for r in runs if r["variant"] == variant and key in r]
            if not values:
                cells.append("n/a")
            else:
                spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
                cells.append(f"{statistics.mean(values):.3f}{spread} (n={len(values)})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars (mean, with a std whisker) for the four downstream columns, drawn with Pillow."""
    from PIL import Image, ImageDraw

    columns = list(COLUMNS)[:4]
    colours = [(90, 90, 90), (200, 120, 40), (60, 130, 200), (150, 80, 170), (40, 160, 90)]
    width, height, margin = 900, 420, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    group = (width - 2 * margin) / len(columns)
    bar = group / (len(VARIANTS) + 1)
    draw.line([(margin, height - margin), (width - margin, height - margin)], fill="black")
    for c, name in enumerate(columns):
        key = COLUMNS[name]
        draw.text((margin + c * group + bar, height - margin + 8), name, fill="black")
        for v, variant in enumerate(VARIANTS):
            values = [r[key] for r in runs if r["variant"] == variant and key in r]
            if not values:
                continue
            mean, spread = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            x0 = margin + c * group + (v + 0.5) * bar
            top = height - margin - mean * (height - 2 * margin)
            draw.rectangle([x0, top, x0 + bar * 0.9, height - margin], fill=colours[v])
            whisker = spread * (height - 2 * margin)
            draw.line([(x0 + bar * 0.45, top - whisker), (x0 + bar * 0.45, top + whisker)], fill="black")
    for v, variant in enumerate(VARIANTS):
        draw.rectangle([margin + v * 170, 10, margin + v * 170 + 12, 22], fill=colours[v])
        draw.text((margin + v * 170 + 16, 10), variant, fill="black")
    draw.text((5, margin), "1", fill="black")
    draw.text((5, height - margin - 10), "0", fill="black")
    image.save(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/results/ablation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--num-images", type=int, default=2000, help="ShapesWorld images (generated once)")
    p.add_argument("--pretrain-arg", action="append", default=[], help="extra pre-training flag, FLAG=VALUE")
    p.add_argument("--finetune-arg", action="append", default=[], help="extra fine-tuning flag, FLAG=VALUE")
    p.add_argument("--report-only", action="store_true", help="write table.md / runs.csv / ablation.png from runs.json")
    argv = list(sys.argv[1:] if argv is None else argv)  # now: the fine-tunings' CLI later clears sys.argv
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = out / "shapesworld"
    args.pretrain_arg = [f"--data.init_args.num_images={args.num_images}", *args.pretrain_arg]
    budget = {"pretrain_budget": args.pretrain_steps, "finetune_budget": args.finetune_steps, "images": args.num_images}
    previous = json.loads((out / "runs.json").read_text()) if (out / "runs.json").is_file() else []
    runs = [r for r in previous if all(r.get(k) == v for k, v in budget.items())]  # same budgets only
    done = {(r["variant"], r["seed"]) for r in runs}
    for seed in [] if args.report_only else args.seeds:
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            runs.append(run_one(variant, seed, root, out / "runs" / f"{variant}_seed{seed}", args))
            (out / "runs.json").write_text(json.dumps(runs, indent=1))  # after every run: nothing is lost
    with (out / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in runs for k in r}))
        writer.writeheader()
        writer.writerows(runs)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = " ".join(["python experiments/ablation.py", *argv])
    planned = len(args.seeds) * len(args.variants)
    status = "" if len(runs) >= planned else f" PARTIAL: {len(runs)} of {planned} runs; rerun the command to finish."
    (out / "table.md").write_text(
        f"{table(runs)}\n\nCommand: `{command}`; commit {commit or 'unknown'}; {time.strftime('%Y-%m-%d')}; "
        f"held-out combinations: {', '.join(HELDOUT)}. Every value a fraction in [0, 1]; mean ± std over seeds "
        f"({', '.join(str(s) for s in sorted({r['seed'] for r in runs}))}).{status}\n"
    )
    plot(runs, out / "ablation.png")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
