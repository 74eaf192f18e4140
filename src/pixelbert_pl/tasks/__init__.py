"""LightningModules: one per task, each the Lightning loop around a task model of `pixelbert_pl.models`."""

from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.classification import ImageTextClassificationTask
from pixelbert_pl.tasks.nlvr2 import NLVR2ResultWriter, NLVR2Task
from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig
from pixelbert_pl.tasks.pretrain import PretrainTask
from pixelbert_pl.tasks.registry import get_task, list_tasks, register_task
from pixelbert_pl.tasks.retrieval import RetrievalTask
from pixelbert_pl.tasks.vqa import VQAResultWriter, VQATask
from pixelbert_pl.tasks.writers import PredictionsWriter

for _task in (PretrainTask, VQATask, NLVR2Task, RetrievalTask, ImageTextClassificationTask):
    register_task(_task, f"pixelbert_pl.tasks.{_task.__name__}")  # also under the path the YAMLs use

__all__ = [
    "AdamWSGD",
    "ImageTextClassificationTask",
    "NLVR2ResultWriter",
    "NLVR2Task",
    "OptimizerConfig",
    "PixelBertTask",
    "PredictionsWriter",
    "PretrainTask",
    "RetrievalTask",
    "VQAResultWriter",
    "VQATask",
    "get_task",
    "list_tasks",
    "register_task",
]
