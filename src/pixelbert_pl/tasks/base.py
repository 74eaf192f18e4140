"""`PixelBertTask`: what every Pixel-BERT LightningModule shares (model, optimiser recipe, schedule, initialisation
from a pre-training checkpoint, per-stage metrics and the train / val / test step template).

A task for a new benchmark subclasses it and overrides the hooks (torchgeo's template-method habit):

- `configure_heads()`: build only the heads the task uses, so DDP never waits on a gradient that never comes;
- `forward(batch)`: the task's outputs (logits, scores) for a batch;
- `compute_loss(outputs, batch)` -> {part name: scalar}: the base sums them (times `loss_weights`) into `loss`
  and logs `{stage}/loss` and each `{stage}/{part}_loss`;
- `configure_metrics()` -> {name: torchmetrics.Metric} and `update_metrics(metrics, outputs, batch)`;
  `configure_train_metrics()` when training should log something cheaper (no read-back per step);
- `configure_evaluator()`: an evaluation that is not a per-batch loss and metric (retrieval's ranking of every
  image against every text): its `update(batch, stage)` takes the val / test batches and `compute(stage)` gives
  the values logged at the epoch's end.

The template clones the metrics once per stage, updates them every step and logs `{stage}/{name}` (or
`{stage}/{name}_{key}` for a metric returning a dict) at each epoch's end. RNG state, non-finite step reports and
skipped-sample counts are Callbacks (`tasks/callbacks.py`). Typed `__init__` arguments are what LightningCLI turns
into YAML.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import Metric

from pixelbert_pl.models import create_model, pretrained
from pixelbert_pl.models.weights import load_torch_file, read_weights, weights_name
from pixelbert_pl.processing import ProcessingConfig, split_processing, tokenizer_files
from pixelbert_pl.processing.config import plain
from pixelbert_pl.tasks.callbacks import task_callbacks
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig, build_param_groups, warmup_step_decay

CNN_PREFIXES = ("model.visual.trunk.",)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Graphs a compiled function may hold with fixed padded shapes: (shapes + fallback) x text lengths x image counts
# of a recipe stay well below it.
FIXED_SHAPE_GRAPHS = 256
STAGES = ("train", "val", "test")
CHECKPOINT_KEY = "pixelbert"  # a checkpoint's model config and tokenizer (see on_save_checkpoint)
log = logging.getLogger(__name__)


class Evaluator(Protocol):
    """An evaluation over a whole split, fed batch by batch (see `PixelBertTask.configure_evaluator`)."""

    def reset(self) -> None: ...

    def update(self, batch: Any, stage: str) -> None: ...

    def compute(self, stage: str) -> dict[str, float]: ...


def load_checkpoint(path: str | os.PathLike[str], setting: str = "checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint loaded with `weights_only=True`: nothing in the file can run code. The one non-tensor
    type our checkpoints pickled, the optimiser config in the hyper-parameters, is allowed by name. Errors name the
    file (`setting`: the option that named it)."""
    checkpoint = load_torch_file(path, setting, allowed=[OptimizerConfig])
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{setting}={str(path)!r} holds no 'state_dict': expected a checkpoint `pixelbert fit` "
                         "wrote (a bare state_dict or an export serves init_from instead)")  # fmt: skip
    return checkpoint


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights `init_from` names: a Lightning `.ckpt`, an export directory (`pixelbert-export`,
    `save_pretrained`), a `.safetensors` file or a plain torch state_dict."""
    directory = Path(path).expanduser()
    if directory.is_dir() and (directory / pretrained.WEIGHTS_NAME).is_file():
        state = {f"model.{k}": v for k, v in pretrained.load_tensors(directory / pretrained.WEIGHTS_NAME).items()}
        if (directory / pretrained.HEADS_NAME).is_file():
            state.update(pretrained.load_tensors(directory / pretrained.HEADS_NAME))
        return state
    return read_weights(path, "init_from", allowed=[OptimizerConfig])


def source_config(path: str | Path) -> dict[str, Any] | None:
    """The architecture (`PixelBertConfig` fields) a checkpoint or an export was trained with, if it says."""
    directory = Path(path).expanduser()
    if directory.is_dir():
        return split_processing(pretrained.read_config(directory)["model"])[0]
    if directory.suffix == ".safetensors":
        return None  # tensors only
    saved = load_torch_file(path, "init_from", allowed=[OptimizerConfig])
    config = saved.get(CHECKPOINT_KEY, {}).get("config") if isinstance(saved, dict) else None
    return split_processing(config)[0] if isinstance(config, dict) else None


class PixelBertTask(pl.LightningModule):
    """Base task.

    Args:
        preset: a `pixelbert_pl.list_models()` name.
        text_encoder: HF name or local directory of a BERT checkpoint to start the transformer from.
        visual_weights: torchvision enum name (e.g. IMAGENET1K_V1) or local state_dict file for the CNN trunk.
        vocab_size: the tokenizer's size when it differs from the preset's (the CLI links it from the data).
        model_overrides: any other `PixelBertConfig` field, e.g. `{backbone_stages: 3}`.
        processing: how images and texts become inputs (`ProcessingConfig`); the CLI links the DataModule's, and
            a Trainer run adopts the DataModule's when none is given. Checkpoints and exports carry it.
        optimizer: learning rates, weight decays, warm-up and step-decay milestones.
        init_from: a checkpoint (usually pre-training's `.ckpt`) whose backbone, and any head of the same name and
            shape, this task starts from; see `load_pretrained`.
        channels_last: store the CNN in channels_last memory format (tensor-core convolutions with no layout
            transposes); the shipped GPU configs turn it on.
        compile: `torch.compile` the CNN trunk and the transformer encoder in place (state_dict keys unchanged).
            Image sizes that vary across batches make the second distinct size compile a dynamic-shape graph that
            serves every later size, so there is no recompilation per batch. The shipped GPU configs turn it on.
        compile_mode: `torch.compile`'s mode; None is torch's default. "reduce-overhead" replays CUDA graphs of the
            compiled CNN and transformer instead of launching their kernels one by one from the host, whose launch
            overhead bounds a GPU step otherwise (figures: benchmarks/results/design_notes.md). Only batches of one
            fixed shape replay a graph; a module whose inputs changed shape runs as ordinary compiled code (no graph
            recorded per size). Validation should then run under `no_grad` (`Trainer(inference_mode=False)`, as the
            GPU configs set): graphs recorded under inference mode break later training calls (pytorch/pytorch#135892).
        text_length_buckets: run the transformer in up to this many groups of rows of similar caption length, each
            trimmed to its own longest caption (`models/buckets.py`): less padding for one call more. Outputs at
            real positions are unchanged. It pays on the CPU, where transformer time scales with padded length
            (experiments/results/design_notes.md); on a GPU, where a smaller call is not proportionally cheaper,
            measure before turning it on.
    """

    monitor = "val/loss"
    mode = "min"
    # Heads an `init_from` checkpoint should supply (retrieval's rank head from pre-training's ITM head): a
    # checkpoint that supplies none of them is warned about, as they would start from random weights.
    init_heads: tuple[str, ...] = ()
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
        if isinstance(optimizer, dict):  # as the hyper-parameters of a checkpoint hold it
            optimizer = OptimizerConfig(**optimizer)
        if optimizer is not None:
            # Plain values in the checkpoint: any torch.load(weights_only=True) reads it with no allow-list.
            self.hparams["optimizer"] = dataclasses.asdict(optimizer)
        overrides, legacy = split_processing(model_overrides or {})
        if isinstance(processing, Mapping):  # as the hyper-parameters of a checkpoint hold it
            processing = ProcessingConfig.from_dict(processing, "processing")
        if legacy:  # hyper-parameters of checkpoints from when the model config held preprocessing too
            log.warning("model_overrides %s are preprocessing settings: give them to the DataModule (the CLI links "
                        "its processing to the task)", sorted(legacy))  # fmt: skip
            processing = (processing or ProcessingConfig()).replace(**legacy)
            self.hparams["model_overrides"] = overrides
        self.hparams["processing"] = None if processing is None else processing.to_dict()
        overrides.update(text_encoder=text_encoder, visual_weights=visual_weights)
        if vocab_size is not None and text_encoder is None:
            overrides["vocab_size"] = vocab_size
        self.model = create_model(preset, processing=processing, **overrides)
        if vocab_size is not None and self.model.config.vocab_size != vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} (from the tokenizer) differs from text_encoder {text_encoder!r}'s "
                f"{self.model.config.vocab_size}"
            )
        self.optimizer_config = optimizer or OptimizerConfig()
        for module in self.frozen_cnn_modules():
            # requires_grad=False (not just left out of the optimizer): no wasted backward, no DDP gradient wait.
            module.requires_grad_(False)
        self.configure_heads()
        self.evaluator = self.configure_evaluator()
        templates = self.configure_metrics() or {}
        train_templates = self.configure_train_metrics()
        by_stage = {stage: templates for stage in STAGES}
        if train_templates is not None:
            by_stage["train"] = train_templates
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": metric.clone() for stage in STAGES for name, metric in by_stage[stage].items()}
        )
        if init_from is not None:
            self.load_pretrained(init_from)
        if text_length_buckets < 1:
            raise ValueError(f"text_length_buckets={text_length_buckets}: expected >= 1 (1 = one transformer call)")
        self.model.text_length_buckets = text_length_buckets
        if channels_last:
            self.model.visual.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        self._compiled: tuple[str | None, bool] | None = None  # (mode, static shapes) once compiled
        if compile:
            self.compile_model(compile_mode)

    def compile_model(self, mode: str | None = None) -> None:
        """`torch.compile` the CNN trunk and the transformer encoder in place (lazily: at their first call). The
        host-side glue between them (grouping images by size, pixel sampling) stays eager, so varying batches do
        not multiply graphs.

        With fixed padded shapes (`ProcessingConfig.pad_long_sides`) the inputs take a bounded set of shapes, so
        each gets a static graph (and, in "reduce-overhead", a CUDA graph) of its own; without, a module meeting a
        second shape compiles one dynamic graph for all, which CUDA graphs skip."""
        fixed = self.model.visual.padded_trunk
        if mode in CUDA_GRAPH_MODES:
            # Dynamic graphs would record a CUDA graph per size met (every caption length, every image size):
            # unbounded memory and recording time; they run without CUDA graphs instead. Process-wide.
            from torch._inductor import config as inductor_config

            inductor_config.triton.cudagraph_skip_dynamic_graphs = True
        if fixed:
            # Dynamo's default of 8 graphs per function would send the 9th shape of the set back to eager code.
            dynamo_config = torch._dynamo.config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, FIXED_SHAPE_GRAPHS)
            dynamo_config.accumulated_recompile_limit = max(
                dynamo_config.accumulated_recompile_limit, 4 * FIXED_SHAPE_GRAPHS
            )
        dynamic = False if fixed else None
        self.model.visual.trunk.compile(mode=mode, dynamic=dynamic)
        self.model.compile_transformer(mode, dynamic)
        self._compiled = (mode, fixed)

    @property
    def cnn_frozen(self) -> bool:
        return self.optimizer_config.cnn_optimizer == "frozen"

    def frozen_cnn_modules(self) -> list[nn.Module]:
        """The whole trunk when `cnn_optimizer` is "frozen", else the stem and the first `cnn_frozen_stages`
        residual stages (none by default)."""
        trunk = self.model.visual.trunk
        if self.cnn_frozen:
            return [trunk]
        stages = self.optimizer_config.cnn_frozen_stages
        return list(trunk.children())[: 4 + stages] if stages else []

    def train(self, mode: bool = True) -> PixelBertTask:
        super().train(mode)
        for module in self.frozen_cnn_modules():
            module.eval()  # batch-norm statistics are part of a frozen CNN too
        return self

    # ------------------------------------------------------------------------------------------------ hooks

    def configure_heads(self) -> None:
        """Build the task's heads as attributes."""

    def configure_metrics(self) -> dict[str, Metric]:
        """Metric templates by name; the base class keeps one copy per stage (see `stage_metrics`)."""
        return {}

    def configure_train_metrics(self) -> dict[str, Metric] | None:
        """Training's metric templates when they differ from `configure_metrics` (None: the same). A metric that
        reads predictions back to the host (string matching, grouping by identifier) costs a host-device sync per
        training step; training can log a device-side counterpart instead."""
        return None

    def compute_loss(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
        """The loss as named scalar parts, e.g. {"mlm": ..., "itm": ...}; see `total_loss`."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(outputs, batch)")

    @property
    def loss_weights(self) -> Mapping[str, float]:
        """Multipliers of `compute_loss`'s parts in the total (1 for a part not named)."""
        return {}

    def total_loss(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `compute_loss`'s parts, in their order."""
        if not isinstance(parts, Mapping) or not parts or "loss" in parts:
            raise TypeError(f"{type(self).__name__}.compute_loss returned {type(parts).__name__}: expected a "
                            "non-empty dict of named scalar losses (not named 'loss', the total's name)")  # fmt: skip
        weights = self.loss_weights
        total: torch.Tensor | None = None
        for name, part in parts.items():
            weight = weights.get(name, 1.0)
            term = part if weight == 1.0 else weight * part
            total = term if total is None else total + term
        return total  # type: ignore[return-value]

    def losses(self, batch: Any, **forward_kwargs: Any) -> dict[str, torch.Tensor]:
        """{"loss": the total, then each part}: a training step's loss outside the Trainer (notebooks, tests)."""
        parts = self.compute_loss(self(batch, **forward_kwargs), batch)
        return {"loss": self.total_loss(parts), **parts}

    def configure_evaluator(self) -> Evaluator | None:
        """An evaluation that replaces the per-batch loss and metrics in validation and test (None: there is
        none). It is reset at each epoch's start and its `compute(stage)` values logged as `{stage}/{key}`."""
        return None

    def update_metrics(self, metrics: dict[str, Metric], outputs: Any, batch: Any) -> None:
        """Feed one step's outputs to this stage's metrics (`metrics[name]`)."""

    def batch_size(self, batch: Any) -> int:
        return int(batch.input_ids.shape[0])

    def init_heads_from(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy every head tensor whose name and shape match the checkpoint's; returns the names copied. Override
        to start a new head from a differently shaped one (retrieval's rank head from ITM)."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("model.") and k in state}
        copied = [k for k, v in own.items() if v.shape == state[k].shape]
        self.load_state_dict({k: state[k] for k in copied}, strict=False)
        return copied

    # ------------------------------------------------------------------------------------ initialisation

    def load_pretrained(self, path: str | Path) -> None:
        """Start from another task's weights: the whole backbone must be there with the same shapes (a different
        tokenizer or preset is an error, not a silent partial load); heads follow `init_heads_from`."""
        state = read_state_dict(path)
        backbone = {k: v for k, v in state.items() if k.startswith("model.")}
        own = {k: v for k, v in self.state_dict().items() if k.startswith("model.")}
        missing = sorted(set(own) - set(backbone))
        if missing:
            raise ValueError(f"init_from={str(path)!r} lacks {len(missing)} backbone tensors, e.g. {missing[:3]}"
                             f"{self._config_differences(path)}")  # fmt: skip
        for key, value in own.items():
            if value.shape != backbone[key].shape:
                raise ValueError(
                    f"init_from={str(path)!r}: {key} has shape {tuple(backbone[key].shape)}, this task's model "
                    f"{tuple(value.shape)}{self._config_differences(path)}; use the same preset, model_overrides and "
                    "tokenizer as pre-training"
                )
        self.load_state_dict({k: backbone[k] for k in own}, strict=False)
        heads = self.init_heads_from(state)
        log.info("init_from %s: backbone (%d tensors) and heads %s", path, len(own), heads or "none")
        copied = {name.split(".")[0].split(" ")[0] for name in heads}
        if missing_heads := [h for h in self.init_heads if getattr(self, h, None) is not None and h not in copied]:
            theirs = sorted({k.split(".")[0] for k in state if not k.startswith("model.")})
            log.warning(
                "init_from %s: nothing in it fits %s's %s, which start from random weights (the checkpoint's heads: "
                "%s; a pre-training checkpoint is expected)", path, type(self).__name__, missing_heads, theirs,
            )  # fmt: skip

    def _config_differences(self, path: str | Path) -> str:
        """The architecture fields in which `path`'s model and this task's differ, for an error message."""
        theirs = source_config(path)
        if theirs is None:
            return " (it records no model config to compare)"
        ours = self.model.config.to_dict()
        weights = ("text_encoder", "visual_weights")  # where weights came from, not the architecture
        differ = {k: {"init_from": v, "this task": ours[k]} for k, v in theirs.items()
                  if k in ours and k not in weights and plain(v) != plain(ours[k])}  # fmt: skip
        return f"; the model configs differ in {differ}" if differ else ""

    # ----------------------------------------------------------------------------------------- template

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        prefix = f"{stage}_"
        # self.metrics holds only Metrics (built in __init__); ModuleDict types its values as Module.
        return {k[len(prefix) :]: cast(Metric, m) for k, m in self.metrics.items() if k.startswith(prefix)}

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        outputs = self(batch)
        parts = self.compute_loss(outputs, batch)
        loss = self.total_loss(parts)
        values = {f"{stage}/loss": loss, **{f"{stage}/{name}_loss": part for name, part in parts.items()}}
        self.log_dict(
            values, batch_size=self.batch_size(batch), prog_bar=stage != "train", on_step=stage == "train",
            on_epoch=True, sync_dist=stage != "train",
        )  # fmt: skip
        with torch.no_grad():
            self.update_metrics(self.stage_metrics(stage), outputs, batch)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # Logger only, no progress bar: Lightning reads progress-bar values back each step, a sync that idles the GPU.
        return self.shared_step(batch, "train")

    # ------------------------------------------------------------------------------ checkpoints and resume

    def setup(self, stage: str) -> None:
        # The data's processing is what the model is fed: checkpoints, exports and Predictor must feed it the same.
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        processing = getattr(datamodule, "processing", None)
        if not isinstance(processing, ProcessingConfig):
            return
        # hparams hold the processing the task was given (None: the preset's, which the data's then replaces).
        given = self.hparams["processing"] is not None
        if given and (differ := self.model.processing.differences(processing)):
            raise ValueError(
                f"{type(self).__name__}'s processing differs from {type(datamodule).__name__}'s in "
                f"{ {k: {'task': a, 'data': b} for k, (a, b) in differ.items()} }: the model would be fed other inputs "
                "than it was trained or configured for; give the DataModule the task's settings"
            )
        self.model.processing = processing
        self.hparams["processing"] = processing.to_dict()
        self._tokenizer = getattr(datamodule, "tokenizer", None)
        compiled = self._compiled
        if compiled is not None and compiled[1] != self.model.visual.padded_trunk:
            self.compile_model(compiled[0])  # the data's padded shapes came after __init__ compiled: static or not

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The whole model config and the tokenizer's files, as plain data: `Predictor.from_checkpoint` and
        # `pixelbert-export` rebuild the model from them, offline, with no weights to download and no data module.
        model = self.model
        checkpoint[CHECKPOINT_KEY] = {"config": model.config.to_dict(), "processing": model.processing.to_dict()}
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is not None:
            if getattr(self, "_tokenizer_files", None) is None:
                self._tokenizer_files = tokenizer_files(tokenizer)
            checkpoint[CHECKPOINT_KEY]["tokenizer_files"] = self._tokenizer_files

    def configure_callbacks(self) -> list[pl.Callback]:
        """RNG state in checkpoints, non-finite step reports and skipped-sample counts (`tasks/callbacks.py`)."""
        return task_callbacks()

    def sample_ids(self, batch: Any) -> Any:
        """The batch's sample identifiers (a tensor or a list), for error reports; read only when reporting."""
        for name in ("sample_ids", "question_ids", "identifiers", "example_ids", "image_positions"):
            ids = getattr(batch, name, None)
            if ids is not None:
                return ids
        return []

    def evaluation_step(self, batch: Any, stage: str) -> torch.Tensor | None:
        if self.evaluator is not None:
            self.evaluator.update(batch, stage)
            return None
        return self.shared_step(batch, stage)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self.evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self.evaluation_step(batch, "test")

    def log_stage_metrics(self, stage: str) -> None:
        """Compute, log and reset this stage's metrics; a metric with no update this epoch is skipped."""
        for name, metric in self.stage_metrics(stage).items():
            if metric.update_count == 0:
                continue
            value = metric.compute()
            values = value if isinstance(value, dict) else {"": value}
            for key, v in values.items():
                label = f"{stage}/{name}_{key}" if key else f"{stage}/{name}"
                if torch.is_tensor(v) and v.isnan().all():
                    continue  # e.g. an answer type absent from this split
                self.log(label, v, prog_bar=stage == "val" and not key)
            metric.reset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._mark_cuda_graph_step()

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_cuda_graph_step()

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_cuda_graph_step()

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_cuda_graph_step()

    def _mark_cuda_graph_step(self) -> None:
        # Under CUDA graphs, a batch is a new step: the previous one's graph outputs may be overwritten, which
        # torch cannot infer when evaluation or several encoder calls per batch interleave with training.
        compiled = self._compiled
        if compiled is not None and compiled[0] in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()

    def on_train_epoch_end(self) -> None:
        self.log_stage_metrics("train")

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def log_evaluation(self, stage: str) -> None:
        if self.evaluator is None:
            return
        if not self.trainer.sanity_checking:
            for key, value in self.evaluator.compute(stage).items():
                # Identical on every rank (evaluators gather before computing), so no further reduction.
                self.log(f"{stage}/{key}", value, prog_bar=key in self.evaluator_prog_bar)
        # Reset in every case: state kept after the sanity check would sit on the device all the first epoch.
        self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")
        self.log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage_metrics("test")
        self.log_evaluation("test")

    # ------------------------------------------------------------------------------------------ optimiser

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        config = self.optimizer_config
        groups = build_param_groups(self.named_parameters(), CNN_PREFIXES, config)
        optimizer = AdamWSGD(groups, betas=config.betas)  # skips non-finite steps (see on_train_batch_end)
        total = self.trainer.estimated_stepping_batches
        if not isinstance(total, int) and not (isinstance(total, float) and total != float("inf")):
            raise ValueError("the lr schedule needs a finite run: set trainer.max_steps or trainer.max_epochs")
        scheduler = warmup_step_decay(optimizer, config, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
