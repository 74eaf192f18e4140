"""LightningModules: one per task, all sharing `PixelBertTask`'s model, optimiser recipe and schedule."""

from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.nlvr2 import NLVR2Task
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig
from pixelbert_pl.tasks.pretrain import PretrainTask
from pixelbert_pl.tasks.retrieval import RetrievalTask
from pixelbert_pl.tasks.vqa import VQAResultWriter, VQATask

__all__ = [
    "AdamWSGD",
    "NLVR2Task",
    "OptimizerConfig",
    "PixelBertTask",
    "PretrainTask",
    "RetrievalTask",
    "VQAResultWriter",
    "VQATask",
]
