"""`VQATask`: VQA v2 fine-tuning (paper Sec. 4.1) around `PixelBertForQuestionAnswering`. Metric: the accuracy of the
arg-max answer, over every question including those whose answers are all outside the vocabulary (docs/prior_art.md
L5: dropping them inflates the score). Each question is scored by its number of human answers (`question_accuracy`):
the official VQA accuracy with 3 or more (VQA v2's ten), exact match with 1 or 2 (GQA-style), where the official
leave-one-out rule would score a right answer 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean, VQAAccuracy
from pixelbert_pl.models import PixelBertForQuestionAnswering, PixelBertModel
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
    net: PixelBertForQuestionAnswering

    def __init__(self, answer_vocab: Sequence[str] = (), **kwargs: Any) -> None:
        self.answer_vocab = list(answer_vocab)  # before super().__init__(), which calls build_task_model
        super().__init__(**kwargs)

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertForQuestionAnswering:
        return PixelBertForQuestionAnswering(backbone, self.answer_vocab)

    def configure_metrics(self) -> dict[str, Metric]:
        # Logged as {stage}/vqa_accuracy_overall (every question by its rule; the monitor), _yes/no, _number, _other,
        # and _official / _exact_match: the questions each rule scored, each only where the split has such questions.
        return {"vqa_accuracy": VQAAccuracy(by_rule=True)}

    def configure_train_metrics(self) -> dict[str, Metric]:
        # The soft target (0.3 / 0.6 / 0.9 / 1.0, or 1.0 for a question of 1 or 2 answers) of the arg-max answer, the
        # usual VQA training score, summed on the device: the official string-matching accuracy would read every
        # prediction back to the host per step.
        return {"vqa_score": DeviceMean()}

    def update_metrics(self, metrics: dict[str, Metric], outputs: torch.Tensor, batch: VQABatch) -> None:
        if "vqa_score" in metrics:
            metrics["vqa_score"].update(batch.targets.gather(1, outputs.argmax(-1, keepdim=True)).squeeze(1))
            return
        scored = [i for i, answers in enumerate(batch.answers) if answers]  # test-dev questions have none
        if scored:
            predictions = self.net.decode(outputs[scored])
            types = [batch.answer_types[i] for i in scored]
            metrics["vqa_accuracy"].update(
                predictions, [batch.answers[i] for i in scored], None if None in types else types
            )


class VQAResultWriter(ShardedResultWriter):
    """Writes `pixelbert predict` output as the EvalAI upload file `[{"question_id": int, "answer": str}]`, sorted
    by question id, each once (under DDP too)."""

    def __init__(self, output_file: str = "vqa_results.json") -> None:
        super().__init__(output_file)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.output_file.write_text(json.dumps([{"question_id": r["id"], "answer": r["answer"]} for r in rows]))
