"""`PixelBertTask`: what every Pixel-BERT LightningModule shares (model, optimiser recipe, schedule).

A task for a new benchmark subclasses it and overrides the hooks (torchgeo's template-method habit):
`configure_heads` (build only the heads the task uses, so DDP never waits on a gradient that never comes),
`configure_metrics`, and the `*_step` methods. Typed `__init__` arguments are what LightningCLI turns into YAML.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from pixelbert_pl.models import create_model
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig, build_param_groups, warmup_step_decay

CNN_PREFIXES = ("model.visual.trunk.",)


class PixelBertTask(pl.LightningModule):
    """Base task.

    Args:
        preset: a `pixelbert_pl.list_models()` name.
        text_encoder: HF name or local directory of a BERT checkpoint to start the transformer from.
        visual_weights: torchvision enum name (e.g. IMAGENET1K_V1) or local state_dict file for the CNN trunk.
        vocab_size: the tokenizer's size when it differs from the preset's (the CLI links it from the data).
        model_overrides: any other `PixelBertConfig` field, e.g. `{backbone_stages: 3}`.
        optimizer: learning rates, weight decays, warm-up and step-decay milestones.
    """

    monitor = "val/loss"
    mode = "min"

    def __init__(
        self,
        preset: str = "pixelbert_r50",
        text_encoder: str | None = None,
        visual_weights: str | None = None,
        vocab_size: int | None = None,
        model_overrides: dict[str, Any] | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        overrides = dict(model_overrides or {})
        overrides.update(text_encoder=text_encoder, visual_weights=visual_weights)
        if vocab_size is not None and text_encoder is None:
            overrides["vocab_size"] = vocab_size
        self.model = create_model(preset, **overrides)
        if vocab_size is not None and self.model.config.vocab_size != vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} (from the tokenizer) differs from text_encoder {text_encoder!r}'s "
                f"{self.model.config.vocab_size}"
            )
        self.optimizer_config = optimizer or OptimizerConfig()
        self.configure_heads()
        self.configure_metrics()

    def configure_heads(self) -> None:
        """Build the task's heads as attributes."""

    def configure_metrics(self) -> None:
        """Build the task's torchmetrics as attributes."""

    def configure_optimizers(self) -> dict[str, Any]:
        config = self.optimizer_config
        groups = build_param_groups(self.named_parameters(), CNN_PREFIXES, config)
        optimizer = AdamWSGD(groups, betas=config.betas)
        total = self.trainer.estimated_stepping_batches
        if not isinstance(total, int) and not (isinstance(total, float) and total != float("inf")):
            raise ValueError("the lr schedule needs a finite run: set trainer.max_steps or trainer.max_epochs")
        scheduler = warmup_step_decay(optimizer, config, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
