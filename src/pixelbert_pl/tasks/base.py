"""`PixelBertTask`: the Lightning loop around a task model (`models/`: backbone, heads, loss, inference), with what
every task shares: the optimiser recipe and schedule, initialisation from a checkpoint, per-stage metrics and the
train / val / test / predict step template. A task for a new benchmark subclasses it and overrides the hooks
(torchgeo's template-method habit):

- `build_task_model(backbone)`: the task model (a registered `PixelBertTaskModel`) around the built backbone;
- `compute_loss(outputs, batch)` -> {part name: scalar}: the task model's `loss` by default; the base sums the
  parts (times `loss_weights`) into `loss` and logs `{stage}/loss` and each `{stage}/{part}_loss`;
- `configure_metrics()` -> {name: torchmetrics.Metric} and `update_metrics(metrics, outputs, batch)`;
  `configure_train_metrics()` when training should log something cheaper (no read-back per step);
- `configure_evaluator()`: an evaluation that is not a per-batch loss and metric (retrieval's ranking);
- `sample_ids(batch)`: each sample's identifier, for predictions and error reports.

Predictions (`pixelbert predict`) are the task model's `postprocess` rows with the sample's "id", written as JSON
lines (`PredictionsWriter`). Checkpoint contents and callbacks are `checkpoints.py`'s and `tasks/callbacks.py`'s.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Protocol, cast, runtime_checkable

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import Metric

from pixelbert_pl.checkpoints import save_task_model_entry
from pixelbert_pl.models import PixelBertModel, PixelBertTaskModel, create_model
from pixelbert_pl.models.checkpoint_reader import init_from as load_task_model_weights
from pixelbert_pl.models.compile import Compiled, compile_backbone
from pixelbert_pl.models.layouts import upgrade_state_dict
from pixelbert_pl.models.weights import weights_name
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.tasks.callbacks import task_callbacks
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig, build_param_groups, warmup_step_decay

CNN_PREFIXES = ("net.model.visual.trunk.",)
STAGES = ("train", "val", "test")
log = logging.getLogger(__name__)


@runtime_checkable
class TaskData(Protocol):
    """What a task reads from its DataModule: the processing its batches were made with (checkpoints and exports
    carry it) and the tokenizer (checkpoints carry its files). `PixelBertDataModule` provides both."""

    processing: ProcessingConfig
    tokenizer: Any


class Evaluator(Protocol):
    """An evaluation over a whole split, fed batch by batch (see `PixelBertTask.configure_evaluator`)."""

    def reset(self) -> None: ...

    def update(self, batch: Any, stage: str) -> None: ...

    def compute(self, stage: str) -> dict[str, float]: ...


class PixelBertTask(pl.LightningModule):
    """Base task. Typed `__init__` arguments are what LightningCLI turns into YAML.

    Args:
        preset: a `pixelbert_pl.list_models()` name.
        text_encoder: HF name or local directory of a BERT checkpoint to start the transformer from.
        visual_weights: torchvision enum name (e.g. IMAGENET1K_V1) or local state_dict file for the CNN trunk.
        vocab_size: the tokenizer's size when it differs from the preset's (the CLI links it from the data).
        model_overrides: any other `PixelBertConfig` field, e.g. `{backbone_stages: 3}`.
        processing: how images and texts become inputs (`ProcessingConfig`); the CLI links the DataModule's, and a
            Trainer run adopts the DataModule's when none is given. Checkpoints and exports carry it.
        optimizer: learning rates, weight decays, warm-up and step-decay milestones.
        init_from: a checkpoint or export (usually pre-training's) whose backbone, and any head of the same name and
            shape, this task starts from (`models.checkpoint_reader.init_from`).
        channels_last: store the CNN in channels_last memory format (tensor-core convolutions with no layout
            transposes); the shipped GPU configs turn it on.
        compile: `torch.compile` the CNN trunk and the transformer in place (`models.compile.compile_backbone`).
        compile_mode: `torch.compile`'s mode; None is torch's default. "reduce-overhead" replays CUDA graphs of the
            fixed-shape batches (figures: benchmarks/results/design_notes.md); validation should then run under
            `no_grad` (`Trainer(inference_mode=False)`, as the GPU configs set, pytorch/pytorch#135892).
        text_length_buckets: run the transformer in up to this many groups of rows of similar caption length
            (`models/buckets.py`): less padding for one call more; it pays on the CPU (design_notes.md).
    """

    monitor = "val/loss"
    mode = "min"
    evaluator_prog_bar: tuple[str, ...] = ()  # evaluator values shown in the progress bar

    def __init__(
        self,
        preset: str = "pixelbert_r50",
        text_encoder: str | None = None,
        visual_weights: str | None = None,
        vocab_size: int | None = None,
        model_overrides: dict[str, Any] | None = None,
        processing: ProcessingConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        text_length_buckets: int = 1,
    ) -> None:
        super().__init__()
        # Not init_from: the checkpoint holds the weights, and `test` / `predict --ckpt_path` must not reload the
        # pre-training file (which may not exist where they run).
        self.save_hyperparameters(ignore=["init_from"])
        visual_weights = self.hparams["visual_weights"] = weights_name(visual_weights)  # a WeightsEnum: plain text
        if isinstance(optimizer, Mapping):  # as the hyper-parameters of a checkpoint hold it
            optimizer = OptimizerConfig(**optimizer)
        if optimizer is not None:
            # Plain values in the checkpoint: any torch.load(weights_only=True) reads it with no allow-list.
            self.hparams["optimizer"] = dataclasses.asdict(optimizer)
        if isinstance(processing, Mapping):  # as the hyper-parameters of a checkpoint hold it
            processing = ProcessingConfig.from_dict(processing, "processing")
        self.hparams["processing"] = None if processing is None else processing.to_dict()
        if text_length_buckets < 1:
            raise ValueError(f"text_length_buckets={text_length_buckets}: expected >= 1 (1 = one transformer call)")
        overrides = dict(model_overrides or {}, text_encoder=text_encoder, visual_weights=visual_weights)
        if vocab_size is not None and text_encoder is None:
            overrides["vocab_size"] = vocab_size
        backbone = create_model(preset, processing=processing, **overrides)
        if vocab_size is not None and backbone.config.vocab_size != vocab_size:
            raise ValueError(f"vocab_size={vocab_size} (from the tokenizer) differs from text_encoder "
                             f"{text_encoder!r}'s {backbone.config.vocab_size}")  # fmt: skip
        backbone.text_length_buckets = text_length_buckets
        self.net = self.build_task_model(backbone)
        self.optimizer_config = optimizer or OptimizerConfig()
        for module in self.frozen_cnn_modules():
            # requires_grad=False (not just left out of the optimizer): no wasted backward, no DDP gradient wait.
            module.requires_grad_(False)
        self.evaluator = self.configure_evaluator()
        templates, train_templates = self.configure_metrics() or {}, self.configure_train_metrics()
        by_stage = {stage: templates for stage in STAGES} | ({"train": train_templates} if train_templates else {})
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": metric.clone() for stage in STAGES for name, metric in by_stage[stage].items()}
        )
        if init_from is not None:
            self.load_pretrained(init_from)
        if channels_last:
            self.model.visual.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        self._compiled: Compiled | None = None
        if compile:
            self.compile_model(compile_mode)

    @property
    def model(self) -> PixelBertModel:
        """The backbone of the task model."""
        return self.net.model

    # ------------------------------------------------------------------------------------------------ hooks

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertTaskModel:
        """The task model around `backbone`, with only the heads the task trains (an unused head would leave DDP
        waiting on a gradient that never comes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_task_model(backbone)")

    def configure_metrics(self) -> dict[str, Metric]:
        """Metric templates by name; the base class keeps one copy per stage (see `stage_metrics`)."""
        return {}

    def configure_train_metrics(self) -> dict[str, Metric] | None:
        """Training's metric templates when they differ from `configure_metrics` (None: the same): a metric that
        reads predictions back to the host costs a host-device sync per training step."""
        return None

    def update_metrics(self, metrics: dict[str, Metric], outputs: Any, batch: Any) -> None:
        """Feed one step's outputs to this stage's metrics (`metrics[name]`)."""

    def configure_evaluator(self) -> Evaluator | None:
        """An evaluation that replaces the per-batch loss and metrics in validation and test (None: there is
        none). It is reset at each epoch's start and its `compute(stage)` values logged as `{stage}/{key}`."""
        return None

    def compute_loss(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
        """The loss as named scalar parts, e.g. {"mlm": ..., "itm": ...}; see `total_loss`."""
        return self.net.loss(outputs, batch)

    @property
    def loss_weights(self) -> Mapping[str, float]:
        """Multipliers of `compute_loss`'s parts in the total (1 for a part not named)."""
        return {}

    def batch_size(self, batch: Any) -> int:
        return int(batch.input_ids.shape[0])

    def sample_ids(self, batch: Any) -> list[Any]:
        """Each sample's identifier in the batch, in order, for predictions and error reports."""
        for name in ("sample_ids", "question_ids", "identifiers", "example_ids", "image_positions"):
            ids = getattr(batch, name, None)
            if ids is not None:
                return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return list(range(self.batch_size(batch)))

    # ----------------------------------------------------------------------------------------- template

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        return self.net(batch, **kwargs)

    def total_loss(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `compute_loss`'s parts, in their order."""
        if not isinstance(parts, Mapping) or not parts or "loss" in parts:
            raise TypeError(f"{type(self).__name__}.compute_loss returned {type(parts).__name__}: expected a "
                            "non-empty dict of named scalar losses (not named 'loss', the total's name)")  # fmt: skip
        weights = self.loss_weights
        terms = [part if weights.get(name, 1.0) == 1.0 else weights[name] * part for name, part in parts.items()]
        return cast(torch.Tensor, sum(terms[1:], terms[0]))

    def losses(self, batch: Any, **forward_kwargs: Any) -> dict[str, torch.Tensor]:
        """{"loss": the total, then each part}: a training step's loss outside the Trainer (notebooks, tests)."""
        parts = self.compute_loss(self(batch, **forward_kwargs), batch)
        return {"loss": self.total_loss(parts), **parts}

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        prefix = f"{stage}_"
        return {k[len(prefix) :]: cast(Metric, m) for k, m in self.metrics.items() if k.startswith(prefix)}

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        outputs = self(batch)
        parts = self.compute_loss(outputs, batch)
        loss = self.total_loss(parts)
        values = {f"{stage}/loss": loss, **{f"{stage}/{name}_loss": part for name, part in parts.items()}}
        # Training logs to the logger only: progress-bar values are read back each step, a sync that idles the GPU.
        self.log_dict(values, batch_size=self.batch_size(batch), prog_bar=stage != "train",
                      on_step=stage == "train", on_epoch=True, sync_dist=stage != "train")  # fmt: skip
        with torch.no_grad():
            self.update_metrics(self.stage_metrics(stage), outputs, batch)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def evaluation_step(self, batch: Any, stage: str) -> torch.Tensor | None:
        if self.evaluator is not None:
            self.evaluator.update(batch, stage)
            return None
        return self.shared_step(batch, stage)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self.evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self.evaluation_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """One row per sample: {"id": its identifier, **the task model's `postprocess` result}."""
        results = self.net.postprocess(self(batch), batch)
        return [{"id": i, **r} for i, r in zip(self.sample_ids(batch), results, strict=True)]

    def log_stage_metrics(self, stage: str) -> None:
        """Compute, log and reset this stage's metrics; a metric with no update this epoch is skipped."""
        for name, metric in self.stage_metrics(stage).items():
            if metric.update_count == 0:
                continue
            value = metric.compute()
            for key, v in (value if isinstance(value, dict) else {"": value}).items():
                if torch.is_tensor(v) and v.isnan().all():
                    continue  # e.g. an answer type absent from this split
                self.log(f"{stage}/{name}_{key}" if key else f"{stage}/{name}", v, prog_bar=stage == "val" and not key)
            metric.reset()

    def log_evaluation(self, stage: str) -> None:
        if self.evaluator is None:
            return
        if not self.trainer.sanity_checking:
            for key, value in self.evaluator.compute(stage).items():
                # Identical on every rank (evaluators gather before computing), so no further reduction.
                self.log(f"{stage}/{key}", value, prog_bar=key in self.evaluator_prog_bar)
        # Reset in every case: state kept after the sanity check would sit on the device all the first epoch.
        self.evaluator.reset()

    def on_train_epoch_end(self) -> None:
        self.log_stage_metrics("train")

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")
        self.log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage_metrics("test")
        self.log_evaluation("test")

    # --------------------------------------------------------------------------- model set-up and weights

    def compile_model(self, mode: str | None = None) -> None:
        self._compiled = compile_backbone(self.model, mode)

    @property
    def compiled(self) -> Compiled | None:
        """(mode, static shapes) once compiled (`CudaGraphSteps` marks steps by it)."""
        return self._compiled

    def frozen_cnn_modules(self) -> list[nn.Module]:
        """The whole trunk when `cnn_optimizer` is "frozen", else the stem and the first `cnn_frozen_stages`
        residual stages (none by default)."""
        trunk = self.model.visual.trunk
        if self.optimizer_config.cnn_optimizer == "frozen":
            return [trunk]
        stages = self.optimizer_config.cnn_frozen_stages
        return list(trunk.children())[: 4 + stages] if stages else []

    def train(self, mode: bool = True) -> PixelBertTask:
        super().train(mode)
        for module in self.frozen_cnn_modules():
            module.eval()  # batch-norm statistics are part of a frozen CNN too
        return self

    def load_pretrained(self, path: str) -> None:
        """Start from another task's weights (`models.checkpoint_reader.init_from`), warning about heads that the
        checkpoint should have supplied and did not."""
        tensors, heads, theirs = load_task_model_weights(self.net, path)
        log.info("init_from %s: backbone (%d tensors) and heads %s", path, tensors, heads or "none")
        copied = {name.split(".")[0].split(" ")[0] for name in heads}
        wanted = [h for h in self.net.init_heads if getattr(self.net, h, None) is not None and h not in copied]
        if wanted:
            log.warning("init_from %s: nothing in it fits %s's %s, which start from random weights (its heads: %s; a "
                        "pre-training checkpoint is expected)", path, type(self).__name__, wanted, theirs)  # fmt: skip

    def setup(self, stage: str) -> None:
        # The data's processing is what the model is fed: checkpoints, exports and Predictor must feed it the same.
        data = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        if not isinstance(data, TaskData) or not isinstance(data.processing, ProcessingConfig):
            return
        # hparams hold the processing the task was given (None: the preset's, which the data's then replaces).
        if self.hparams["processing"] is not None and (differ := self.model.processing.differences(data.processing)):
            raise ValueError(
                f"{type(self).__name__}'s processing differs from {type(data).__name__}'s in "
                f"{ {k: {'task': a, 'data': b} for k, (a, b) in differ.items()} }: the model would be fed other inputs "
                "than it was trained or configured for; give the DataModule the task's settings"
            )
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

    # ------------------------------------------------------------------------------------------ optimiser

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        config = self.optimizer_config
        groups = build_param_groups(self.named_parameters(), CNN_PREFIXES, config)
        optimizer = AdamWSGD(groups, betas=config.betas)  # skips non-finite steps (see NonFiniteStepReport)
        total = self.trainer.estimated_stepping_batches
        if not isinstance(total, int) and not (isinstance(total, float) and total != float("inf")):
            raise ValueError("the lr schedule needs a finite run: set trainer.max_steps or trainer.max_epochs")
        scheduler = warmup_step_decay(optimizer, config, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
