"""`NLVR2Task`: one statement, two images, True / False (paper Sec. 4.2, docs/paper_facts.md §3.2).

The "pair" setting: (left image, statement) and (right image, statement) each go through Pixel-BERT, and the two
[CLS] vectors, concatenated left then right, feed a 2-way classifier trained with cross-entropy. Metrics are the
official accuracy and consistency (a statement's group is right only if all its image pairs are).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean, NLVR2Metric
from pixelbert_pl.models import NLVR2Head
from pixelbert_pl.processing.batches import NLVR2Batch
from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.writers import ShardedResultWriter


class NLVR2Task(PixelBertTask):
    """NLVR2 fine-tuning; arguments are `PixelBertTask`'s."""

    monitor = "val/nlvr2_accuracy"
    mode = "max"

    def configure_heads(self) -> None:
        self.nlvr2_head = NLVR2Head(self.model.config)

    def configure_metrics(self) -> dict[str, Metric]:
        return {"nlvr2": NLVR2Metric()}

    def configure_train_metrics(self) -> dict[str, Metric]:
        # Accuracy as a device-side mean (logged `train/nlvr2_accuracy`, as the official metric's is in val): the
        # official metric groups statements by identifier on the host, a read-back per step.
        return {"nlvr2_accuracy": DeviceMean()}

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

    def compute_loss(self, outputs: torch.Tensor, batch: NLVR2Batch) -> dict[str, torch.Tensor]:
        # Unlabelled rows (-1, hidden test sets) carry no loss; a batch of them gives 0, not NaN.
        # Summed over labelled rows / their count, with no branch on the device's values (a host sync per step).
        labelled = batch.labels >= 0
        loss = F.cross_entropy(outputs, batch.labels, ignore_index=-1, reduction="sum")
        return {"nlvr2": loss / labelled.sum().clamp(min=1)}

    def update_metrics(self, metrics: dict[str, Metric], outputs: torch.Tensor, batch: NLVR2Batch) -> None:
        if "nlvr2_accuracy" in metrics:
            correct = outputs.argmax(-1) == batch.labels
            metrics["nlvr2_accuracy"].update(correct, weights=batch.labels >= 0)
            return
        labelled = (batch.labels >= 0).tolist()
        if any(labelled):
            keep = torch.tensor(labelled, device=outputs.device)
            identifiers = [i for i, ok in zip(batch.identifiers, labelled, strict=True) if ok]
            metrics["nlvr2"].update(identifiers, outputs[keep].argmax(-1), batch.labels[keep])

    def predict_step(self, batch: NLVR2Batch, batch_idx: int) -> list[dict[str, Any]]:
        """Records in the official prediction-file form: identifier and "True" / "False"."""
        predictions = self(batch).argmax(-1).tolist()
        return [
            {"identifier": i, "prediction": "True" if p else "False"}
            for i, p in zip(batch.identifiers, predictions, strict=True)
        ]


class NLVR2ResultWriter(ShardedResultWriter):
    """Writes `pixelbert predict` output as the official NLVR2 predictions file (test-P): one `identifier,prediction`
    line per example, prediction "True" or "False", no header, sorted by identifier, each once (under DDP too);
    the official evaluation aborts on a missing prediction, so a run with `limit_predict_batches` is not a
    submission."""

    key = "identifier"

    def __init__(self, output_file: str = "nlvr2_predictions.csv") -> None:
        super().__init__(output_file)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.output_file.write_text("".join(f"{r['identifier']},{r['prediction']}\n" for r in rows))
