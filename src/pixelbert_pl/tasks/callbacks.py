"""What every task's run needs from the trainer, as Lightning Callbacks that the tasks declare in
`configure_callbacks` (so `pixelbert fit`, a notebook's `Trainer` and `Predictor` all get them):

- `RNGStateCheckpoint`: every rank's torch generators in the checkpoint, restored on resume;
- `NonFiniteStepReport`: optimizer steps that `AdamWSGD` skipped for non-finite gradients, with their samples;
- `SkippedSamplesLog`: unreadable training samples the DataModule replaced, per epoch;
- `FinalCheckpoint` (`checkpoints.py`): `last.ckpt` at the last step of every run that ends, SIGTERM and Ctrl-C
  included;
- `CudaGraphSteps`: each batch a new step for CUDA graphs, when the model runs under them;
- `PredictionsWriter` (`tasks/writers.py`): `pixelbert predict`'s rows to a JSON-lines file.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytorch_lightning as pl
import torch

from pixelbert_pl.checkpoints import FinalCheckpoint
from pixelbert_pl.models.compile import mark_cuda_graph_step
from pixelbert_pl.tasks.writers import PredictionsWriter

log = logging.getLogger(__name__)
RNG_KEY = "rng_states"  # the checkpoint key; fixed, as existing checkpoints hold their states under it


def rng_states() -> dict[str, torch.Tensor]:
    """This process's generators that dropout draws from: the CPU's and, on a GPU, its current device's."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


class RNGStateCheckpoint(pl.Callback):
    """Lightning checkpoints hold no RNG state, and dropout draws from torch's generators: without this a resumed
    run drops other units than an uninterrupted one (data randomness is keyed by seed, epoch and index instead).

    Every rank's state is kept, as the rows of one tensor: ranks draw different amounts, and only rank 0 writes.
    Lightning calls `on_save_checkpoint` on every rank, so the gather meets no lone rank."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = {name: self._gather(pl_module, state) for name, state in rng_states().items()}

    @staticmethod
    def _gather(pl_module: pl.LightningModule, state: torch.Tensor) -> torch.Tensor:
        """(world, n): this process's `state` as row `global_rank`, every other rank's in its row."""
        if pl_module.trainer.world_size == 1:
            return state.unsqueeze(0)
        # all_gather returns the type it is given (the stub's union covers dicts, lists and tuples of tensors).
        return cast(torch.Tensor, pl_module.all_gather(state.to(pl_module.device))).cpu()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Restores this rank's row of each state; states of another layout or another world size are reported
        and none is restored (the run goes on, its dropout drawn from the generators as they are)."""
        saved = checkpoint.get(RNG_KEY)
        if saved is None:
            return
        world = trainer.world_size
        if not (
            isinstance(saved, dict)
            and "torch" in saved
            and saved.keys() <= {"torch", "cuda"}
            and all(isinstance(s, torch.Tensor) and s.dim() == 2 and s.dtype == torch.uint8 for s in saved.values())
        ):
            log.warning("checkpoint RNG states (%s) are not in the layout RNGStateCheckpoint writes ('torch' and "
                        "optionally 'cuda', each a (processes, n) uint8 tensor): not restored, so dropout after the "
                        "resume differs from an uninterrupted run", _describe(saved))  # fmt: skip
            return
        if any(s.shape[0] != world for s in saved.values()):
            log.warning("checkpoint RNG states are for %d processes, this run has %d: not restored",
                        saved["torch"].shape[0], world)  # fmt: skip
            return
        rank = trainer.global_rank
        torch.set_rng_state(saved["torch"][rank].clone())
        if "cuda" in saved and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda"][rank].clone(), pl_module.device)


def _describe(saved: Any) -> str:
    """A short account of a saved RNG entry for a warning: the types and shapes, never the state bytes."""
    if not isinstance(saved, dict):
        return type(saved).__name__
    parts = {
        name: f"{tuple(s.shape)} {s.dtype}" if isinstance(s, torch.Tensor) else type(s).__name__
        for name, s in saved.items()
    }
    return str(parts)


class NonFiniteStepReport(pl.Callback):
    """Logs an error naming the step and the samples of every optimizer step that `AdamWSGD` skipped for a
    non-finite loss or gradient, and `train/nonfinite_steps` at each epoch's end.

    On a GPU the flag is copied to the host without waiting and read once the copy has landed (a step or so
    later), so the check never stalls the queue. The samples come from the task's `sample_ids(batch)`."""

    def __init__(self) -> None:
        self.nonfinite_steps = 0
        self._pending: list[tuple[Any, torch.Tensor, tuple[int, Any, Any]]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        optimizer = getattr(pl_module.optimizers(), "optimizer", None)
        flag = getattr(optimizer, "last_step_finite", None)
        if flag is None:
            return
        optimizer.last_step_finite = None  # type: ignore[union-attr]
        sample_ids = getattr(pl_module, "sample_ids", None)
        ids = sample_ids(batch) if callable(sample_ids) else []
        # The optimizer step has been counted already, skipped or not: this batch's step is the previous count.
        entry = (trainer.global_step - 1, ids, outputs)
        if flag.is_cuda:
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((event, host, entry))
        elif not bool(flag):
            self._report(*entry)
        while self._pending and self._pending[0][0].query():
            _, host, entry = self._pending.pop(0)
            if not bool(host):
                self._report(*entry)

    def _report(self, step: int, ids: Any, outputs: Any) -> None:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        self.nonfinite_steps += 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else loss
        log.error(
            "step %d: non-finite loss or gradients (loss %s); the update was skipped, the weights are unchanged. "
            "Samples: %s", step, value, ids[:32],
        )  # fmt: skip

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.nonfinite_steps:
            pl_module.log("train/nonfinite_steps", float(self.nonfinite_steps), reduce_fx="max", sync_dist=True)


class SkippedSamplesLog(pl.Callback):
    """Logs `train/skipped_samples`: unreadable training samples the DataModule's `skip_counter` replaced this
    epoch, summed over ranks, with a warning giving the reasons."""

    def __init__(self) -> None:
        self._skipped_before = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector, undeclared
        counter = getattr(datamodule, "skip_counter", None) if datamodule else None
        if counter is None:
            return
        skipped = counter.totals()[1]
        epoch_skips, self._skipped_before = skipped - self._skipped_before, skipped
        if epoch_skips:
            log.warning("epoch %d: %d unreadable training samples replaced (%s)", trainer.current_epoch, epoch_skips,
                        dict(counter.reasons) or "reasons logged by the DataLoader workers")  # fmt: skip
        pl_module.log("train/skipped_samples", float(epoch_skips), reduce_fx="sum", sync_dist=True)


class CudaGraphSteps(pl.Callback):
    """Marks each batch a new CUDA-graph step for a task compiled in a CUDA-graph mode (`mark_cuda_graph_step`)."""

    def _mark(self, pl_module: pl.LightningModule) -> None:
        mark_cuda_graph_step(getattr(pl_module, "compiled", None))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._mark(pl_module)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._mark(pl_module)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._mark(pl_module)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._mark(pl_module)


def task_callbacks() -> list[pl.Callback]:
    return [RNGStateCheckpoint(), NonFiniteStepReport(), SkippedSamplesLog(), FinalCheckpoint(), CudaGraphSteps(),
            PredictionsWriter()]  # fmt: skip
