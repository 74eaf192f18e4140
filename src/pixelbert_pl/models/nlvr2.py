"""`PixelBertForNLVR2`: one statement, two images, True / False (paper Sec. 4.2), in the "pair" setting: (left
image, statement) and (right image, statement) each go through Pixel-BERT, and the two [CLS] vectors, concatenated
left then right, feed a 2-way classifier trained with cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pixelbert_pl.models.heads import NLVR2Head
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.task_model import PixelBertTaskModel, register_task_model
from pixelbert_pl.processing.batches import NLVR2Batch, collate_nlvr2
from pixelbert_pl.processing.items import NLVR2Item
from pixelbert_pl.processing.padding import BatchPadding


@register_task_model
class PixelBertForNLVR2(PixelBertTaskModel):
    inputs = ("left", "right", "text")

    def __init__(self, backbone: PixelBertModel) -> None:
        super().__init__(backbone)
        self.nlvr2_head = NLVR2Head(backbone.config)

    def forward(self, batch: NLVR2Batch) -> torch.Tensor:
        """(b, 2) logits, index 1 = True."""
        b = batch.input_ids.shape[0]
        # 2b images: left, right, ...
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        rows = torch.arange(b, device=batch.input_ids.device).repeat_interleave(2)
        out = self.model(
            batch.input_ids[rows],
            batch.attention_mask[rows],
            pixel_tokens=pixels,
            image_index=torch.arange(2 * b, device=rows.device),
            outputs="cls",
        )
        cls = out.cls_output.view(b, 2, -1)
        return self.nlvr2_head(cls[:, 0], cls[:, 1]).float()

    def loss(self, outputs: torch.Tensor, batch: NLVR2Batch) -> dict[str, torch.Tensor]:
        # Unlabelled rows (-1, hidden test sets) carry no loss; a batch of them gives 0, not NaN.
        # Summed over labelled rows / their count, with no branch on the device's values (a host sync per step).
        labelled = batch.labels >= 0
        loss = F.cross_entropy(outputs, batch.labels, ignore_index=-1, reduction="sum")
        return {"nlvr2": loss / labelled.sum().clamp(min=1)}

    def collate(self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int) -> NLVR2Batch:
        rows: list[NLVR2Item] = [
            {"left": item["images"][0], "right": item["images"][1], "input_ids": item["input_ids"], "label": -1,
             "identifier": str(i)}
            for i, item in enumerate(items)
        ]  # fmt: skip
        return collate_nlvr2(rows, pad_token_id, padding)

    def postprocess(self, outputs: torch.Tensor, batch: NLVR2Batch, **options: Any) -> list[dict[str, Any]]:
        """{"prediction": "True" | "False" (the official file's spelling), "score": P(True)} per statement."""
        probabilities = outputs.float().softmax(-1)[:, 1].tolist()
        return [{"prediction": "True" if p > 0.5 else "False", "score": p} for p in probabilities]
