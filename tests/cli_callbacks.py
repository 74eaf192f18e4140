"""Callbacks the CLI tests name by class_path (tests/ is on sys.path; subprocesses get it through PYTHONPATH)."""

from __future__ import annotations

import pytorch_lightning as pl


class CrashAt(pl.Callback):
    """Raise before training step `step`, as a killed job would stop: the checkpoints written so far stay."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step == self.step:
            raise RuntimeError(f"crashed before step {self.step}")


class RecordSteps(pl.Callback):
    """The global step at the start of every training batch this run made."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.steps.append(trainer.global_step)


class RecordShapes(pl.Callback):
    """The padded image and text shapes of every training batch, and dynamo's count of compiled graphs at the end
    of every epoch (after its validation and checkpoint)."""

    def __init__(self) -> None:
        self.image_shapes: set[tuple[int, int]] = set()
        self.text_widths: set[int] = set()
        self.graphs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.image_shapes.add(tuple(batch.pixel_values.shape[-2:]))
        self.text_widths.add(batch.input_ids.shape[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        import torch._dynamo

        self.graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])


class SignalAt(pl.Callback):
    """Send `signum` before training step `step` (global step), to this process or, with `group`, to its whole
    process group (DataLoader workers and DDP ranks included), as a scheduler pre-empting the job does."""

    def __init__(self, step: int, signum: int = 15, group: bool = False) -> None:
        self.step, self.signum, self.group = step, signum, group

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        import os

        if trainer.global_step == self.step and trainer.is_global_zero:
            if self.group:
                os.killpg(os.getpgrp(), self.signum)
            else:
                os.kill(os.getpid(), self.signum)


class Payload:
    """Stands for anything a malicious checkpoint could pickle to run code on load."""
