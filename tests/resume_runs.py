"""Resume through `pixelbert fit` as users run it: the demo's pre-training recipe (tiny preset, ShapesWorld, dropout
on so that the RNG state matters), 1 or 2 processes, 0 or 2 DataLoader workers.

One uninterrupted run of two epochs keeps a checkpoint every half epoch (mid-epoch ones and one at an epoch's last
step) and one from the epoch-end hook (`ModelCheckpoint(every_n_epochs=1, save_on_train_epoch_end=True)`); a run
resumed from each with `--ckpt_path` must end with exactly the same tensors, and Lightning must not say the loader
is not resumable. tests/test_resume.py runs part of the matrix; `python tests/resume_runs.py` prints all of it
(experiments/results/resume_table.md).

The second table is how runs end (`ENDINGS`): max_steps off the save interval, max_epochs, early stopping, SIGTERM
to the process group, Ctrl-C, kill -9. Each stopped run's `last.ckpt` must be the uninterrupted run's state at the
step it stopped, and `--ckpt_path last` from it must end with the uninterrupted run's tensors; both exit codes are
in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelbert_pl.check_data import read_recipe
from pixelbert_pl.harness.demo import CONFIG as RECIPE

TESTS = Path(__file__).resolve().parent
BATCH_SIZE = 4
# 16 training images, 3 items each (2 matched caption rows an item, 5 captions): 12 steps an epoch at BATCH_SIZE.
CORPUS_IMAGES = 20
NOT_RESUMABLE = "dataloader is not resumable"
# Where a resumed run starts: the checkpoint file the uninterrupted run wrote there (S = steps per epoch).
SOURCES = {
    "mid_epoch": lambda s: f"epoch=1-step={s + s // 2}.ckpt",  # half-way through the second epoch
    "epoch_end_step": lambda s: f"epoch=0-step={s}.ckpt",  # after the first epoch's last step
    "epoch_end_hook": lambda s: "epoch-end-0.ckpt",  # written in on_train_epoch_end of the first epoch
}


def steps_per_epoch(root: Path, devices: int) -> int:
    from pixelbert_pl.harness.datamodules import ShapesWorldDataModule

    settings = read_recipe(RECIPE)["data"]["init_args"]  # what `pixelbert fit` will build (base and all)
    settings.update(root=str(root), batch_size=BATCH_SIZE, num_workers=0)
    data = ShapesWorldDataModule(**settings)
    data.setup("fit")
    steps = len(data.dataset(data.train_records)) // devices // BATCH_SIZE  # items: the epoch's image-caption pairs
    assert steps % 2 == 0 and steps >= 4, f"{steps} steps an epoch: the runs need an even number, at least 4"
    return steps


def fit_args(
    root: Path,
    out: Path,
    workers: int,
    devices: int,
    steps: int,
    ckpt_path: Path | None = None,
    data: Sequence[str] = (),
) -> list[str]:
    """`pixelbert fit` flags for the recipe on `root`; `data` (last, so it wins) may replace the data section."""
    callbacks = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": steps // 2, "save_top_k": -1}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"every_n_epochs": 1, "save_on_train_epoch_end": True, "save_top_k": -1,
                       "filename": "epoch-end-{epoch}", "auto_insert_metric_name": False}},
    ]  # fmt: skip
    args = [
        "fit", "--config", str(RECIPE),
        "--data.init_args.root", str(root),
        "--data.init_args.batch_size", str(BATCH_SIZE),
        "--data.init_args.num_workers", str(workers),
        "--model.init_args.model_overrides.hidden_dropout_prob", "0.1",
        "--trainer.max_steps", str(2 * steps),
        "--trainer.val_check_interval", str(steps // 2),
        "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.callbacks", json.dumps(callbacks),
        *data,
    ]  # fmt: skip
    if devices > 1:
        args += ["--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
    if ckpt_path is not None:
        args += ["--ckpt_path", str(ckpt_path)]
    return args


def run_fit(args: list[str], devices: int, cwd: Path) -> str:
    """Run `pixelbert fit` (in this process for 1 device, else as the console command under DDP); returns what it
    warned or printed to stderr."""
    if devices == 1:
        from pixelbert_pl.cli import main

        argv, sys.argv = sys.argv, ["pixelbert"]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                main(args)
        finally:
            sys.argv = argv
        return "\n".join(str(w.message) for w in caught)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "pixelbert_pl", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def checkpoints(out: Path) -> Path:
    return out / "pretrain" / "checkpoints"


def final_state(out: Path, steps: int) -> dict[str, torch.Tensor]:
    from pixelbert_pl.models.checkpoint_reader import load_checkpoint

    (path,) = checkpoints(out).glob(f"*-step={2 * steps}.ckpt")
    return load_checkpoint(path)["state_dict"]


@dataclass
class Resumed:
    differ: int  # tensors of the final state_dict that differ from the uninterrupted run's
    total: int
    warned_not_resumable: bool


def uninterrupted(
    root: Path, out: Path, workers: int, devices: int, steps: int | None = None, data: Sequence[str] = ()
) -> int:
    """The reference run; returns its steps per epoch."""
    steps = steps or steps_per_epoch(root, devices)
    run_fit(fit_args(root, out, workers, devices, steps, data=data), devices, out.parent)
    return steps


def resume(
    root: Path,
    reference: Path,
    out: Path,
    workers: int,
    devices: int,
    steps: int,
    source: str,
    data: Sequence[str] = (),
) -> Resumed:
    ckpt = checkpoints(reference) / SOURCES[source](steps)
    assert ckpt.is_file(), f"the uninterrupted run wrote no {ckpt.name}: {sorted(os.listdir(ckpt.parent))}"
    said = run_fit(fit_args(root, out, workers, devices, steps, ckpt_path=ckpt, data=data), devices, out.parent)
    expected, state = final_state(reference, steps), final_state(out, steps)
    differ = sum(not torch.equal(v, state[k]) for k, v in expected.items())
    return Resumed(differ, len(expected), NOT_RESUMABLE in said)


def resume_with_data(
    root: Path, tmp_path: Path, class_path: str, settings: dict[str, Any], steps: int, workers: int, source: str
) -> Resumed:
    """An uninterrupted run and one resumed from its `source` checkpoint, both with the recipe's data section
    replaced by `class_path` with `settings` (init_args), in `tmp_path`."""
    data = ["--data", json.dumps({"class_path": class_path, "init_args": settings})]
    reference = tmp_path / "full"
    uninterrupted(root, reference, workers, 1, steps=steps, data=data)
    return resume(root, reference, tmp_path / "resumed", workers, 1, steps, source, data=data)


def recipe_data(*keys: str) -> dict[str, Any]:
    """These settings of the recipe's data section."""
    settings = read_recipe(RECIPE)["data"]["init_args"]
    return {k: settings[k] for k in keys}


def signal_at(step: int, signum: int, group: bool = False) -> dict[str, Any]:
    """`cli_callbacks.SignalAt` as a `--trainer.callbacks` entry."""
    return {"class_path": "cli_callbacks.SignalAt", "init_args": {"step": step, "signum": int(signum), "group": group}}


# How a run ends: (its `pixelbert fit` flags and callbacks besides the ones every ending run has, the exit code
# expected). S = steps per epoch; every ending run saves every 5 steps (never on the step it stops at) with last.
ENDINGS: dict[str, tuple[Any, int]] = {
    "max_steps off the save interval": (lambda s: (["--trainer.max_steps", str(s // 2)], []), 0),
    "max_epochs": (lambda s: (["--trainer.max_steps", "-1", "--trainer.max_epochs", "1"], []), 0),
    "early stopping": (lambda s: ([], [{"class_path": "pytorch_lightning.callbacks.EarlyStopping",
                                        "init_args": {"monitor": "val/loss", "mode": "max", "patience": 0}}]), 0),
    "SIGTERM to the process group": (lambda s: ([], [signal_at(7, signal.SIGTERM, group=True)]), 143),
    "Ctrl-C (SIGINT to the process group)": (lambda s: ([], [signal_at(7, signal.SIGINT, group=True)]), 130),
    "kill -9": (lambda s: ([], [signal_at(7, signal.SIGKILL)]), -signal.SIGKILL),
}  # fmt: skip
# The schedule's length is the run's own (max_steps or max_epochs): with no decay (warm-up counts steps), the
# learning rate of every step is the same in a run of 6, 12 or 24 steps: a stopped run compares step for step.
SAME_SCHEDULE = ["--model.init_args.optimizer.decay_factor", "1.0"]
SAVE_LAST_EVERY_5 = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                     "init_args": {"save_last": True, "every_n_train_steps": 5}}  # fmt: skip


def ending_args(
    root: Path, out: Path, steps: int, workers: int, devices: int, callbacks: list[dict], *extra: str
) -> list[str]:
    args = fit_args(root, out, workers, devices, steps)
    args[args.index("--trainer.callbacks") + 1] = json.dumps(callbacks)
    return [*args, *SAME_SCHEDULE, *extra]


def run_command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`pixelbert fit` as a console command in a session of its own, so a signal to its process group reaches
    it, its DataLoader workers and its DDP ranks, and nothing else."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "pixelbert_pl", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900, start_new_session=True)  # fmt: skip


@dataclass
class Ended:
    exit_code: int
    stopped_at: int  # the global step of the stopped run's last.ckpt
    last_differs: int  # tensors of that last.ckpt that differ from the uninterrupted run's at the same step
    resumed_exit_code: int
    differ: int  # tensors that differ at the end, after `--ckpt_path last`
    total: int
    said: str  # what the two runs printed to stderr


def ending_reference(root: Path, out: Path, workers: int, devices: int) -> int:
    """An uninterrupted run with the ending runs' schedule, saving every step (`step=N.ckpt`); its steps per
    epoch."""
    steps = steps_per_epoch(root, devices)
    every_step = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"every_n_train_steps": 1, "save_top_k": -1, "filename": "step={step}",
                                "auto_insert_metric_name": False}}  # fmt: skip
    done = run_command(ending_args(root, out, steps, workers, devices, [every_step]), out.parent)
    assert done.returncode == 0, done.stderr[-4000:]
    return steps


def end_and_resume(
    root: Path, reference: Path, out: Path, steps: int, ending: str, workers: int, devices: int
) -> Ended:
    """Stop a run as `ending` says, then continue it with `--ckpt_path last` to the uninterrupted run's end."""
    from pixelbert_pl.models.checkpoint_reader import load_checkpoint

    how, _ = ENDINGS[ending]
    flags, callbacks = how(steps)
    stopped = run_command(ending_args(root, out, steps, workers, devices, [SAVE_LAST_EVERY_5, *callbacks], *flags),
                          out.parent)  # fmt: skip
    last = load_checkpoint(checkpoints(out) / "last.ckpt")
    step = int(last["global_step"])
    at_step = load_checkpoint(checkpoints(reference) / f"step={step}.ckpt")["state_dict"]
    last_differs = sum(not torch.equal(v, last["state_dict"][k]) for k, v in at_step.items())
    resumed = run_command(ending_args(root, out, steps, workers, devices, [SAVE_LAST_EVERY_5], "--ckpt_path", "last"),
                          out.parent)  # fmt: skip
    expected = load_checkpoint(checkpoints(reference) / f"step={2 * steps}.ckpt")["state_dict"]
    final = load_checkpoint(checkpoints(out) / "last.ckpt")
    assert int(final["global_step"]) == 2 * steps, (final["global_step"], resumed.stderr[-3000:])
    differ = sum(not torch.equal(v, final["state_dict"][k]) for k, v in expected.items())
    return Ended(stopped.returncode, step, last_differs, resumed.returncode, differ, len(expected),
                 stopped.stderr + resumed.stderr)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="the resume table: tensors that differ after a resume")
    parser.add_argument("--out", type=Path, help="write the table here as Markdown too")
    parser.add_argument("--endings-only", action="store_true", help="only the table of how runs end")
    args = parser.parse_args()
    from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate

    rows = []
    corpus = ShapesWorldConfig(num_images=CORPUS_IMAGES, num_nlvr2=4)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "shapes"
        generate(root, corpus, seed=0)
        for devices in () if args.endings_only else (1, 2):
            for workers in (0, 2):
                start = time.perf_counter()
                reference = work / f"full_{devices}_{workers}"
                steps = uninterrupted(root, reference, workers, devices)
                for source in SOURCES:
                    r = resume(root, reference, work / f"{source}_{devices}_{workers}", workers, devices, steps, source)
                    rows.append((devices, workers, source, r))
                    print(devices, workers, source, r, flush=True)
                print(f"{devices} process(es), {workers} workers: {time.perf_counter() - start:.0f} s", flush=True)
        endings = []
        for devices, names in ((1, list(ENDINGS)), (2, ["SIGTERM to the process group"])):
            start = time.perf_counter()
            reference = work / f"ending_full_{devices}"
            steps = ending_reference(root, reference, 2, devices)
            for i, name in enumerate(names):
                e = end_and_resume(root, reference, work / f"ending_{devices}_{i}", steps, name, 2, devices)
                endings.append((devices, name, e))
                print(devices, name, {k: v for k, v in vars(e).items() if k != "said"}, flush=True)
            print(f"endings, {devices} process(es): {time.perf_counter() - start:.0f} s", flush=True)
    header = "| processes | workers | resumed from | tensors that differ | 'not resumable' warning |"
    lines = [header, "|---|---|---|---|---|"]
    lines += [f"| {d} | {w} | {s} | {r.differ} of {r.total} | {'yes' if r.warned_not_resumable else 'no'} |"
              for d, w, s, r in rows]  # fmt: skip
    lines += [
        "",
        "| processes | workers | the run ended by | exit code | last.ckpt at step | its tensors that differ "
        "| exit code, `--ckpt_path last` | tensors that differ at the end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {d} | 2 | {name} | {e.exit_code} | {e.stopped_at} | {e.last_differs} of {e.total} | "
              f"{e.resumed_exit_code} | {e.differ} of {e.total} |" for d, name, e in endings]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))  # the subprocesses find cli_callbacks through PYTHONPATH; this one through here
    main()
