"""Run by tests/test_distributed.py as `python distributed_run.py ROOT DEVICES OUT MODE`: validation of the
VQA, NLVR2 and retrieval tasks (MODE eval) or a short pre-training fit (MODE fit) on `DEVICES` CPU processes
(gloo DDP when DEVICES > 1; Lightning re-runs this script once per extra rank). Rank 0 writes OUT as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytorch_lightning as pl
import torch


def _trainer(devices: int, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kwargs,
    )  # fmt: skip


def evaluate(root: str, devices: int) -> dict[str, Any]:
    from pixelbert_pl.harness.datamodules import (
        ShapesWorldNLVR2DataModule,
        ShapesWorldRetrievalDataModule,
        ShapesWorldVQADataModule,
    )
    from pixelbert_pl.tasks import NLVR2Task, RetrievalTask, VQATask

    results: dict[str, Any] = {}
    cases = [
        ("vqa", ShapesWorldVQADataModule, lambda dm: VQATask(answer_vocab=dm.answer_vocab, **dm_args(dm))),
        ("nlvr2", ShapesWorldNLVR2DataModule, lambda dm: NLVR2Task(**dm_args(dm))),
        ("retrieval", ShapesWorldRetrievalDataModule, lambda dm: RetrievalTask(eval_chunk=64, **dm_args(dm))),
    ]
    for name, module, make_task in cases:
        dm = module(root=root, batch_size=3, num_workers=0)
        pl.seed_everything(0)  # the same weights whatever the number of processes
        task = make_task(dm)
        metrics = _trainer(devices).validate(task, datamodule=dm, verbose=False)[0]
        dm.setup("validate")
        results[name] = {k: float(v) for k, v in metrics.items()}
        results[f"{name}_val_records"] = len(dm.records("val"))
    return results


def dm_args(dm: Any) -> dict[str, Any]:
    return {"preset": "pixelbert_tiny", "vocab_size": dm.vocab_size}


def fit(root: str, devices: int) -> dict[str, Any]:
    from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
    from pixelbert_pl.tasks import PretrainTask

    dm = ShapesWorldDataModule(root=root, batch_size=9, num_workers=0)
    pl.seed_everything(0)
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=dm.vocab_size)
    trainer = _trainer(devices, max_epochs=2, limit_val_batches=3)
    trainer.fit(task, datamodule=dm)
    finite = all(bool(torch.isfinite(p).all()) for p in task.parameters())
    return {"global_step": trainer.global_step, "epochs": trainer.current_epoch, "finite": finite,
            "world_size": trainer.world_size, "train_items": len(dm.dataset(dm.train_records)),
            "batch_size": 9}  # fmt: skip


def main() -> None:
    root, devices, out, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    results = evaluate(root, devices) if mode == "eval" else fit(root, devices)
    if int(__import__("os").environ.get("LOCAL_RANK", "0")) == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
