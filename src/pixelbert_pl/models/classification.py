"""`PixelBertForImageTextClassification`: (image, text) -> one of a set of named classes from [CLS], trained with
cross-entropy: visual entailment (SNLI-VE's entailment / neutral / contradiction) or any benchmark of that shape.
With two images a sample, each (image, text) pair goes through Pixel-BERT and the two [CLS] vectors, first image's
then second's, are classified together (NLVR2's "pair" setting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pixelbert_pl.models.heads import ClassificationHead
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.task_model import PixelBertTaskModel, image_text_items, register_task_model
from pixelbert_pl.processing.batches import (
    UNLABELLED,
    ImageTextClassificationBatch,
    check_labels,
    collate_image_text,
)
from pixelbert_pl.processing.items import ImageTextClassificationItem
from pixelbert_pl.processing.padding import BatchPadding


@register_task_model
class PixelBertForImageTextClassification(PixelBertTaskModel):
    """Args:
    labels: the class names, index = class (saved with the model, so predictions decode).
    images_per_sample: 1, or 2 for a statement about an image pair (inputs "image", "second_image", "text").
    """

    def __init__(self, backbone: PixelBertModel, labels: Sequence[str], images_per_sample: int = 1) -> None:
        super().__init__(backbone)
        if images_per_sample not in (1, 2):
            raise ValueError(f"images_per_sample={images_per_sample}: expected 1 or 2")
        self.labels = check_labels(labels, type(self).__name__)
        self.images_per_sample = images_per_sample
        self.inputs = ("image", "text") if images_per_sample == 1 else ("image", "second_image", "text")
        self.classifier = ClassificationHead(backbone.config, len(self.labels), images_per_sample)

    def task_args(self) -> dict[str, Any]:
        return {"labels": self.labels, "images_per_sample": self.images_per_sample}

    def forward(self, batch: ImageTextClassificationBatch) -> torch.Tensor:
        """(b, classes) logits; the CNN runs once per distinct image of the batch."""
        if batch.images_per_sample != self.images_per_sample:
            raise ValueError(
                f"a batch of {batch.images_per_sample} image(s) a sample for a model of {self.images_per_sample}: "
                "set the task's and the data's images_per_sample alike"
            )
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        out = self.model(
            batch.input_ids, batch.attention_mask, pixel_tokens=pixels, image_index=batch.image_index, outputs="cls"
        )
        cls = out.cls_output.reshape(batch.labels.shape[0], -1)  # a sample's rows side by side, first image first
        return self.classifier(cls).float()

    def loss(self, outputs: torch.Tensor, batch: ImageTextClassificationBatch) -> dict[str, torch.Tensor]:
        # Unlabelled rows (a hidden test split) carry no loss; a batch of them gives 0, not NaN, with no host sync.
        labelled = batch.labels != UNLABELLED
        loss = F.cross_entropy(outputs, batch.labels, ignore_index=UNLABELLED, reduction="sum")
        return {"classification": loss / labelled.sum().clamp(min=1)}

    def collate(
        self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int
    ) -> ImageTextClassificationBatch:
        rows: list[ImageTextClassificationItem] = [
            {**row, "label": UNLABELLED, "label_name": "", "example_id": str(i)}
            for i, row in enumerate(image_text_items(items))
        ]
        if self.images_per_sample == 2:
            for row, item in zip(rows, items, strict=True):
                row["second_pixel_values"], row["second_image_key"] = item["images"][1], item["image_keys"][1]
        return collate_image_text(rows, pad_token_id, padding)

    def postprocess(self, outputs: torch.Tensor, batch: Any, **options: Any) -> list[dict[str, Any]]:
        """{"label": the class name, "score": its probability, "scores": {class: probability}} per sample."""
        probabilities = outputs.float().softmax(-1).tolist()
        results = []
        for row in probabilities:
            best = max(range(len(row)), key=row.__getitem__)
            scores = dict(zip(self.labels, row, strict=True))
            results.append({"label": self.labels[best], "score": row[best], "scores": scores})
        return results
