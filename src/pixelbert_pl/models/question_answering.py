"""`PixelBertForQuestionAnswering`: VQA v2 as multi-label classification over an answer vocabulary (paper Sec. 4.1).

Loss: binary cross-entropy against the soft scores 0.3 / 0.6 / 0.9 / 1.0 (1.0 for each answer of a question with only 1
or 2, `vqa_soft_targets`), times the number of answers (the usual scaling, so the loss does not shrink with a
3,129-way vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pixelbert_pl.models.heads import ClassificationHead
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.task_model import PixelBertTaskModel, image_text_items, register_task_model
from pixelbert_pl.processing.batches import VQABatch, collate_vqa
from pixelbert_pl.processing.items import VQAItem
from pixelbert_pl.processing.padding import BatchPadding


@register_task_model
class PixelBertForQuestionAnswering(PixelBertTaskModel):
    """Args: answer_vocab: the answer strings, index = class (saved with the model, so predictions decode)."""

    options = ("top_k",)

    def __init__(self, backbone: PixelBertModel, answer_vocab: Sequence[str]) -> None:
        super().__init__(backbone)
        if not answer_vocab:
            raise ValueError(f"{type(self).__name__} needs answer_vocab (the CLI links it from data.answer_vocab)")
        self.answer_vocab = list(answer_vocab)
        self.vqa_head = ClassificationHead(backbone.config, len(self.answer_vocab))

    def task_args(self) -> dict[str, Any]:
        return {"answer_vocab": self.answer_vocab}

    def forward(self, batch: VQABatch) -> torch.Tensor:
        """(b, answers) logits; the CNN runs once per distinct image of the batch."""
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        out = self.model(
            batch.input_ids, batch.attention_mask, pixel_tokens=pixels, image_index=batch.image_index, outputs="cls"
        )
        return self.vqa_head(out.cls_output).float()

    def loss(self, outputs: torch.Tensor, batch: VQABatch) -> dict[str, torch.Tensor]:
        return {"vqa": F.binary_cross_entropy_with_logits(outputs, batch.targets.float()) * outputs.shape[1]}

    def decode(self, logits: torch.Tensor) -> list[str]:
        """The arg-max answer of each row."""
        return [self.answer_vocab[i] for i in logits.argmax(-1).tolist()]

    def collate(self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int) -> VQABatch:
        rows: list[VQAItem] = [
            {**row, "targets": {}, "answers": [], "answer_type": None, "question_id": i}
            for i, row in enumerate(image_text_items(items))
        ]
        return collate_vqa(rows, len(self.answer_vocab), pad_token_id, padding)

    def postprocess(self, outputs: torch.Tensor, batch: VQABatch, **options: Any) -> list[dict[str, Any]]:
        """{"answer", "score"} per question (score: the answer's probability; trained with binary cross-entropy),
        and with the option `top_k` > 1 the k best as "answers": [[answer, score], ...]."""
        top_k = options.get("top_k", 1)
        scores, labels = outputs.float().sigmoid().topk(top_k, dim=-1)
        results = []
        for row_labels, row_scores in zip(labels.tolist(), scores.tolist(), strict=True):
            best = [[self.answer_vocab[label], score] for label, score in zip(row_labels, row_scores, strict=True)]
            result: dict[str, Any] = {"answer": best[0][0], "score": best[0][1]}
            if top_k > 1:
                result["answers"] = best
            results.append(result)
        return results
