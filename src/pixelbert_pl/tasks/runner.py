"""`TaskRunner`: what a LightningModule needs to run a Pixel-BERT task model (`self.net`) under the Trainer, apart
from the task's own template (`tasks/base.py`): compiling, the frozen CNN, `init_from`, adopting the DataModule's
processing, what checkpoints hold, the callbacks every task declares, the optimiser and schedule."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import nn

from pixelbert_pl.checkpoints import save_task_model_entry
from pixelbert_pl.models import PixelBertModel, PixelBertTaskModel
from pixelbert_pl.models.checkpoint_reader import init_from as load_task_model_weights
from pixelbert_pl.models.compile import Compiled, compile_backbone
from pixelbert_pl.models.layouts import upgrade_state_dict
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.tasks.callbacks import task_callbacks
from pixelbert_pl.tasks.optim import OptimizerConfig, configure_optimizers, frozen_cnn_modules
from pixelbert_pl.tasks.protocols import TaskData

CNN_PREFIXES = ("net.model.visual.trunk.",)


class TaskRunner(pl.LightningModule):
    """Set by the subclass's `__init__`: `net` (the task model), `optimizer_config`, `_compiled`."""

    net: PixelBertTaskModel
    optimizer_config: OptimizerConfig
    _compiled: Compiled | None = None

    @property
    def model(self) -> PixelBertModel:
        """The backbone of the task model."""
        return self.net.model

    def compile_model(self, mode: str | None = None) -> None:
        self._compiled = compile_backbone(self.model, mode)

    @property
    def compiled(self) -> Compiled | None:
        """(mode, static shapes) once compiled (`CudaGraphSteps` marks steps by it)."""
        return self._compiled

    def frozen_cnn_modules(self) -> list[nn.Module]:
        return frozen_cnn_modules(self.model.visual.trunk, self.optimizer_config)

    def train(self, mode: bool = True) -> TaskRunner:
        super().train(mode)
        for module in self.frozen_cnn_modules():
            module.eval()  # batch-norm statistics are part of a frozen CNN too
        return self

    def load_pretrained(self, path: str) -> None:
        """Start from another task's weights (`models.checkpoint_reader.init_from`)."""
        load_task_model_weights(self.net, path)

    def setup(self, stage: str) -> None:
        # The data's processing is what the model is fed: checkpoints, exports and Predictor must feed it the same.
        data = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        if not isinstance(data, TaskData) or not isinstance(data.processing, ProcessingConfig):
            return
        # hparams hold the processing the task was given (None: the preset's, which the data's then replaces).
        if self.hparams["processing"] is not None:
            self.model.processing.check_same(data.processing, type(self).__name__, type(data).__name__)
        self.model.processing = data.processing
        self.hparams["processing"] = data.processing.to_dict()
        self._tokenizer = data.tokenizer
        if self._compiled is not None and self._compiled[1] != self.model.visual.padded_trunk:
            self.compile_model(self._compiled[0])  # the data's padded shapes came after __init__ compiled

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_task_model_entry(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])

    def configure_callbacks(self) -> list[pl.Callback]:
        """RNG state in checkpoints, non-finite step reports, skipped-sample counts, CUDA-graph steps, the final
        checkpoint and the predictions file (`tasks/callbacks.py`)."""
        return task_callbacks()

    def configure_optimizers(self) -> Any:
        names = self.named_parameters()
        return configure_optimizers(names, CNN_PREFIXES, self.optimizer_config, self.trainer.estimated_stepping_batches)
