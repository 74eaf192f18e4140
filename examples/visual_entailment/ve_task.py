"""`VisualEntailmentTask`: does the image entail, contradict or not decide the statement (SNLI-VE's 3 classes)?

The template for a new benchmark: a `PixelBertTask` subclass that builds its head, says what its outputs are, its
loss and its metrics; the base class brings the model, the optimiser recipe, `init_from` and the train / val / test
loop. Copy this file, change the four hooks, register the class, and point a YAML `class_path` at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.wrappers import ClasswiseWrapper

from pixelbert_pl.data.classification import SNLI_VE_LABELS, UNLABELLED
from pixelbert_pl.models import ClassificationHead
from pixelbert_pl.processing.batches import ImageTextClassificationBatch
from pixelbert_pl.tasks import PixelBertTask, register_task


@register_task  # so its checkpoints and exports load by name (Predictor never imports a class a file names)
class VisualEntailmentTask(PixelBertTask):
    """3-way classification of (image, statement) pairs from [CLS], trained with cross-entropy.

    Args:
        labels: the class names, index = class, in the data module's order (checked when training starts).
        **kwargs: `PixelBertTask` arguments (preset, model_overrides, optimizer, init_from, ...).
    """

    monitor = "val/accuracy"
    mode = "max"

    def __init__(self, labels: Sequence[str] = SNLI_VE_LABELS, **kwargs: Any) -> None:
        self.labels = list(labels)  # before super().__init__(), which calls configure_heads and configure_metrics
        super().__init__(**kwargs)

    def configure_heads(self) -> None:
        self.classifier = ClassificationHead(self.model.config, len(self.labels))

    def configure_metrics(self) -> dict[str, Metric]:
        n = len(self.labels)
        return {
            "accuracy": MulticlassAccuracy(n, average="micro", ignore_index=UNLABELLED),
            # A dict metric: logged as {stage}/class_accuracy_<label>, e.g. val/class_accuracy_neutral.
            "class": ClasswiseWrapper(
                MulticlassAccuracy(n, average=None, ignore_index=UNLABELLED), self.labels, prefix="accuracy_"
            ),
        }

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the model config records the data's resize and tokenizer (for checkpoints, exports)
        # Class i of the head must be class i of the data: another order would train without an error, and wrong.
        data_labels = getattr(self.trainer.datamodule, "labels", None)
        if data_labels is not None and list(data_labels) != self.labels:
            raise ValueError(
                f"model labels {self.labels} differ from data labels {list(data_labels)}: set model.init_args.labels "
                "and data.init_args.labels to one list, in one order"
            )

    def forward(self, batch: ImageTextClassificationBatch) -> torch.Tensor:
        """(b, num_classes) logits; the CNN runs once per distinct image of the batch."""
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        out = self.model(batch.input_ids, batch.attention_mask, pixel_tokens=pixels, image_index=batch.image_index)
        return self.classifier(out.cls_output).float()

    def compute_loss(self, outputs: torch.Tensor, batch: ImageTextClassificationBatch) -> dict[str, torch.Tensor]:
        labelled = batch.labels != UNLABELLED
        if not labelled.any():  # a batch of a hidden test split: no loss, and 0 rather than NaN
            return {"entailment": outputs.sum() * 0.0}
        return {"entailment": F.cross_entropy(outputs[labelled], batch.labels[labelled])}

    def update_metrics(
        self, metrics: dict[str, Metric], outputs: torch.Tensor, batch: ImageTextClassificationBatch
    ) -> None:
        for metric in metrics.values():
            metric.update(outputs, batch.labels)  # ignore_index skips unlabelled rows

    def predict_step(self, batch: ImageTextClassificationBatch, batch_idx: int) -> list[dict[str, str]]:
        """One {"id", "prediction"} record per example, the prediction as a class name."""
        predictions = self(batch).argmax(-1).tolist()
        return [{"id": i, "prediction": self.labels[p]} for i, p in zip(batch.example_ids, predictions, strict=True)]
