"""`PretrainTask`: Masked Language Modelling + Image-Text Matching, both every step (paper Sec. 3.3), around
`PixelBertForPreTraining`."""

from __future__ import annotations

from typing import Any

from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean
from pixelbert_pl.models import PixelBertForPreTraining, PixelBertModel
from pixelbert_pl.processing.batches import PretrainBatch
from pixelbert_pl.tasks.base import PixelBertTask


class PretrainTask(PixelBertTask):
    """Pre-training. Loss = mlm_weight * MLM + itm_weight * ITM; a weight of 0 removes that loss and its head.

    Args:
        mlm_weight: real multiplier of the MLM loss (docs/prior_art.md L14); it or itm_weight positive.
        itm_weight: real multiplier of the ITM loss (docs/prior_art.md L14); it or mlm_weight positive.
        sample_pixels: keep `pixel_sample_size` random pixel tokens per row in training (the paper's K = 100).
        skip_pixel_rows: the last layer computes [CLS] and the text rows only (`outputs="text"`): MLM and ITM read
            nothing else, so the losses are the same up to float rounding and the pixel rows' query, output and
            feed-forward projections of one layer are saved. Off by default because the demo's recipe is sensitive
            to rounding: with it on, seed 0 settles in a worse basin (experiments/results/design_notes.md).
        **kwargs: `PixelBertTask` arguments (preset, text_encoder, visual_weights, optimizer, ...).
    """

    monitor = "val/itm_accuracy"
    mode = "max"
    net: PixelBertForPreTraining

    def __init__(
        self,
        mlm_weight: float = 1.0,
        itm_weight: float = 1.0,
        sample_pixels: bool = True,
        skip_pixel_rows: bool = False,
        **kwargs: Any,
    ) -> None:
        if mlm_weight < 0 or itm_weight < 0 or mlm_weight + itm_weight == 0:
            raise ValueError(f"mlm_weight={mlm_weight}, itm_weight={itm_weight}: expected >= 0, not both 0")
        self.mlm_weight, self.itm_weight = mlm_weight, itm_weight
        # Without the ITM head there is no ITM accuracy: the best checkpoint follows MLM's (an MLM-only ablation).
        self.monitor = "val/itm_accuracy" if itm_weight > 0 else "val/mlm_accuracy"
        self.use_sampling, self.skip_pixel_rows = sample_pixels, skip_pixel_rows
        super().__init__(**kwargs)

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertForPreTraining:
        return PixelBertForPreTraining(
            backbone, mlm=self.mlm_weight > 0, itm=self.itm_weight > 0, sample_pixels=self.use_sampling,
            skip_pixel_rows=self.skip_pixel_rows,
        )  # fmt: skip

    def configure_metrics(self) -> dict[str, Metric]:
        return {"mlm_accuracy": DeviceMean(), "itm_accuracy": DeviceMean()}

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"mlm": self.mlm_weight, "itm": self.itm_weight}

    def update_metrics(self, metrics: dict[str, Metric], outputs: dict[str, Any], batch: Any) -> None:
        if "mlm_logits" in outputs:
            metrics["mlm_accuracy"].update(outputs["mlm_logits"].argmax(-1) == outputs["mlm_targets"])
        if "itm_logits" in outputs:
            metrics["itm_accuracy"].update(outputs["itm_logits"].argmax(-1) == batch.itm_labels)

    def predict_step(self, batch: PretrainBatch, batch_idx: int) -> list[dict[str, Any]]:
        """One row per (image, text) pair of the batch: {"id": "<sample>-<row>", "image": the sample, "match": the ITM
        probability that the text describes the image, "itm_label": 1 for its own caption, 0 for a negative}."""
        results = self.net.postprocess(self(batch), batch)
        samples = batch.sample_ids[batch.image_index].tolist()
        seen: dict[int, int] = {}
        rows = []
        for sample, label, result in zip(samples, batch.itm_labels.tolist(), results, strict=True):
            k = seen[sample] = seen.get(sample, -1) + 1
            rows.append({"id": f"{sample}-{k}", "image": sample, **result, "itm_label": label})
        return rows
