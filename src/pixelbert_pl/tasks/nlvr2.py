"""`NLVR2Task`: NLVR2 fine-tuning (paper Sec. 4.2) around `PixelBertForNLVR2`. Metrics are the official accuracy
and consistency (a statement's group is right only if all its image pairs are)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean, NLVR2Metric
from pixelbert_pl.models import PixelBertForNLVR2, PixelBertModel
from pixelbert_pl.processing.batches import NLVR2Batch
from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.writers import ShardedResultWriter


class NLVR2Task(PixelBertTask):
    """NLVR2 fine-tuning; arguments are `PixelBertTask`'s."""

    monitor = "val/nlvr2_accuracy"
    mode = "max"

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertForNLVR2:
        return PixelBertForNLVR2(backbone)

    def configure_metrics(self) -> dict[str, Metric]:
        return {"nlvr2": NLVR2Metric()}

    def configure_train_metrics(self) -> dict[str, Metric]:
        # Accuracy as a device-side mean (logged `train/nlvr2_accuracy`, as the official metric's is in val): the
        # official metric groups statements by identifier on the host, a read-back per step.
        return {"nlvr2_accuracy": DeviceMean()}

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


class NLVR2ResultWriter(ShardedResultWriter):
    """Writes `pixelbert predict` output as the official NLVR2 predictions file (test-P): one `identifier,prediction`
    line per example, prediction "True" or "False", no header, sorted by identifier, each once (under DDP too);
    the official evaluation aborts on a missing prediction, so a run with `limit_predict_batches` is not a
    submission."""

    def __init__(self, output_file: str = "nlvr2_predictions.csv") -> None:
        super().__init__(output_file)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.output_file.write_text("".join(f"{r['id']},{r['prediction']}\n" for r in rows))
