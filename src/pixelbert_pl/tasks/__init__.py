"""LightningModules: one per task, all sharing `PixelBertTask`'s model, optimiser recipe and schedule."""

from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.nlvr2 import NLVR2ResultWriter, NLVR2Task
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig
from pixelbert_pl.tasks.pretrain import PretrainTask
from pixelbert_pl.tasks.registry import get_task, list_tasks, register_task
from pixelbert_pl.tasks.retrieval import RetrievalTask
from pixelbert_pl.tasks.vqa import VQAResultWriter, VQATask

for _task in (PretrainTask, VQATask, NLVR2Task, RetrievalTask):
    register_task(_task, f"pixelbert_pl.tasks.{_task.__name__}")  # also under the path the YAMLs use

__all__ = [
    "AdamWSGD",
    "NLVR2ResultWriter",
    "NLVR2Task",
    "OptimizerConfig",
    "PixelBertTask",
    "PretrainTask",
    "RetrievalTask",
    "VQAResultWriter",
    "VQATask",
    "get_task",
    "list_tasks",
    "register_task",
]
