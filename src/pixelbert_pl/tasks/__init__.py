"""LightningModules: one per task, all sharing `PixelBertTask`'s model, optimiser recipe and schedule."""

from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig
from pixelbert_pl.tasks.pretrain import PretrainTask

__all__ = ["AdamWSGD", "OptimizerConfig", "PixelBertTask", "PretrainTask"]
