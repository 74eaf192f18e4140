"""`VQATask`: VQA v2 as multi-label classification over an answer vocabulary (paper Sec. 4.1, docs/paper_facts.md §3.1).

Loss: binary cross-entropy against the soft scores 0.3 / 0.6 / 0.9 / 1.0, times the number of answers (the
usual scaling, so the loss does not shrink with a 3,129-way vocabulary). Metric: the official VQA accuracy of the
arg-max answer against the ten human answers, over every question including those whose answers are all outside
the vocabulary (docs/prior_art.md L5: dropping them inflates the score).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean, VQAAccuracy
from pixelbert_pl.models import VQAHead
from pixelbert_pl.processing.batches import VQABatch
from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.writers import ShardedResultWriter


class VQATask(PixelBertTask):
    """VQA fine-tuning.

    Args:
        answer_vocab: the answer strings, index = class; the CLI links it from the data module, and it is saved
            in the checkpoint so that predictions can be decoded without the training annotations.
        **kwargs: `PixelBertTask` arguments (preset, init_from, optimizer, ...).
    """

    monitor = "val/vqa_accuracy_overall"
    mode = "max"

    def __init__(self, answer_vocab: Sequence[str] = (), **kwargs: Any) -> None:
        if not answer_vocab:
            raise ValueError("VQATask needs answer_vocab (the CLI links it from data.answer_vocab)")
        self.answer_vocab = list(answer_vocab)
        super().__init__(**kwargs)

    def configure_heads(self) -> None:
        self.vqa_head = VQAHead(self.model.config, len(self.answer_vocab))

    def configure_metrics(self) -> dict[str, Metric]:
        return {"vqa_accuracy": VQAAccuracy()}

    def configure_train_metrics(self) -> dict[str, Metric]:
        # The soft target (0.3 / 0.6 / 0.9 / 1.0) of the arg-max answer, the usual VQA training score, summed on
        # the device: the official string-matching accuracy would read every prediction back to the host per step.
        return {"vqa_score": DeviceMean()}

    def forward(self, batch: VQABatch) -> torch.Tensor:
        """(b, num_answers) logits; the CNN runs once per distinct image of the batch."""
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        out = self.model(
            batch.input_ids, batch.attention_mask, pixel_tokens=pixels, image_index=batch.image_index, outputs="cls"
        )
        return self.vqa_head(out.cls_output).float()

    def compute_loss(self, outputs: torch.Tensor, batch: VQABatch) -> dict[str, torch.Tensor]:
        return {"vqa": F.binary_cross_entropy_with_logits(outputs, batch.targets.float()) * outputs.shape[1]}

    def decode(self, logits: torch.Tensor) -> list[str]:
        return [self.answer_vocab[i] for i in logits.argmax(-1).tolist()]

    def update_metrics(self, metrics: dict[str, Metric], outputs: torch.Tensor, batch: VQABatch) -> None:
        if "vqa_score" in metrics:
            metrics["vqa_score"].update(batch.targets.gather(1, outputs.argmax(-1, keepdim=True)).squeeze(1))
            return
        scored = [i for i, answers in enumerate(batch.answers) if answers]  # test-dev questions have none
        if scored:
            predictions = self.decode(outputs[scored])
            types = [batch.answer_types[i] for i in scored]
            metrics["vqa_accuracy"].update(
                predictions, [batch.answers[i] for i in scored], None if None in types else types
            )

    def predict_step(self, batch: VQABatch, batch_idx: int) -> list[dict[str, Any]]:
        """EvalAI records: [{"question_id": int, "answer": str}]."""
        answers = self.decode(self(batch))
        return [{"question_id": int(q), "answer": a} for q, a in zip(batch.question_ids.tolist(), answers, strict=True)]


class VQAResultWriter(ShardedResultWriter):
    """Writes `pixelbert predict` output as the EvalAI upload file `[{"question_id": int, "answer": str}]`, sorted
    by question id, each once (under DDP too)."""

    key = "question_id"

    def __init__(self, output_file: str = "vqa_results.json") -> None:
        super().__init__(output_file)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.output_file.write_text(
            json.dumps([{"question_id": r["question_id"], "answer": r["answer"]} for r in rows])
        )
