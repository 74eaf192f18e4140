"""`ImageTextClassificationTask`: (image, text) -> one of a set of named classes, around
`PixelBertForImageTextClassification`: visual entailment (SNLI-VE) or any benchmark of that shape, with the
package's `ImageTextClassificationDataModule` for its JSON-lines files, and a YAML, not code
(lightning_configs/classification/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.wrappers import ClasswiseWrapper

from pixelbert_pl.models import PixelBertForImageTextClassification, PixelBertModel
from pixelbert_pl.processing.batches import UNLABELLED, ImageTextClassificationBatch
from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.protocols import LabelledData


class ImageTextClassificationTask(PixelBertTask):
    """Classification of (image, text) pairs from [CLS], trained with cross-entropy; logs `{stage}/accuracy` and
    each class's `{stage}/class_accuracy_<label>`.

    Args:
        labels: the class names, index = class, in the data module's order (checked when a run starts; the CLI
            links the data's).
        images_per_sample: 1, or 2 for statements about image pairs (the CLI links the data's).
        **kwargs: `PixelBertTask` arguments (preset, model_overrides, optimizer, init_from, ...).
    """

    monitor = "val/accuracy"
    mode = "max"
    net: PixelBertForImageTextClassification

    def __init__(
        self, labels: Sequence[str] = ("entailment", "neutral", "contradiction"), images_per_sample: int = 1,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        # Before super().__init__(), which calls build_task_model and configure_metrics.
        self.labels, self.images_per_sample = list(labels), images_per_sample
        super().__init__(**kwargs)

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertForImageTextClassification:
        return PixelBertForImageTextClassification(backbone, self.labels, self.images_per_sample)

    def batch_size(self, batch: ImageTextClassificationBatch) -> int:
        return int(batch.labels.shape[0])  # samples, not text rows (two a sample with two images)

    def configure_metrics(self) -> dict[str, Metric]:
        n = len(self.labels)
        return {
            "accuracy": MulticlassAccuracy(n, average="micro", ignore_index=UNLABELLED),
            # A dict metric: logged as {stage}/class_accuracy_<label>, e.g. val/class_accuracy_neutral.
            "class": ClasswiseWrapper(
                MulticlassAccuracy(n, average=None, ignore_index=UNLABELLED), self.labels, prefix="accuracy_"
            ),
        }

    def update_metrics(
        self, metrics: dict[str, Metric], outputs: torch.Tensor, batch: ImageTextClassificationBatch
    ) -> None:
        for metric in metrics.values():
            metric.update(outputs, batch.labels)  # ignore_index skips unlabelled rows

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Class i of the head must be class i of the data: another order would train without an error, and wrong.
        data = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        if isinstance(data, LabelledData) and list(data.labels) != self.labels:
            raise ValueError(
                f"model labels {self.labels} differ from data labels {list(data.labels)}: give the task the data's "
                "labels, in their order (the CLI links them: leave model.init_args.labels out)"
            )
