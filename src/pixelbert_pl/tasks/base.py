"""`PixelBertTask`: the Lightning loop around a task model (`models/`: backbone, heads, loss, inference), with what
every task shares: the optimiser recipe, `init_from`, per-stage metrics and the train / val / test / predict steps.
A new benchmark's task subclasses it and overrides the hooks that open the class (torchgeo's template-method habit):
`build_task_model` is the one every task writes. Predictions (`pixelbert predict`) are the task model's
`postprocess` rows with each sample's "id" (`PredictionsWriter` writes them as JSON lines); what checkpoints hold is
`checkpoints.py`'s, the callbacks every task declares `tasks/callbacks.py`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import torch
from torchmetrics import Metric

from pixelbert_pl.models import PixelBertModel, PixelBertTaskModel, create_model
from pixelbert_pl.models.compile import Compiled
from pixelbert_pl.models.weights import weights_name
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.tasks.optim import OptimizerConfig
from pixelbert_pl.tasks.protocols import Evaluator
from pixelbert_pl.tasks.runner import TaskRunner
from pixelbert_pl.tasks.stage_metrics import StageMetrics


class PixelBertTask(TaskRunner):
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
        compile_mode: the mode of that compile; "reduce-overhead" (CUDA graphs) wants
            `Trainer(inference_mode=False)`.
        text_length_buckets: run the transformer in up to this many groups of rows of similar caption length
            (`models/buckets.py`): less padding for one call more; it pays on the CPU (design_notes.md).
    """

    monitor = "val/loss"
    mode = "min"
    evaluator_prog_bar: tuple[str, ...] = ()  # evaluator values shown in the progress bar

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

    # ------------------------------------------------------------------------------------------ set-up

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
        overrides = dict(model_overrides or {}, text_encoder=text_encoder, visual_weights=visual_weights)
        backbone = create_model(preset, processing, vocab_size, text_length_buckets, **overrides)
        self.net = self.build_task_model(backbone)
        self.optimizer_config = optimizer or OptimizerConfig()
        for module in self.frozen_cnn_modules():
            # requires_grad=False (not just left out of the optimizer): no wasted backward, no DDP gradient wait.
            module.requires_grad_(False)
        self.evaluator = self.configure_evaluator()
        self.metrics = StageMetrics(self.configure_metrics() or {}, self.configure_train_metrics())
        if init_from is not None:
            self.load_pretrained(init_from)
        if channels_last:
            self.model.visual.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        self._compiled: Compiled | None = None
        if compile:
            self.compile_model(compile_mode)

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
        return self.metrics.of(stage)

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
        self.metrics.log_and_reset(stage, self.log)

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

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")
        self.log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage_metrics("test")
        self.log_evaluation("test")
