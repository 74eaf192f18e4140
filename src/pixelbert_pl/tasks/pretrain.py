"""`PretrainTask`: Masked Language Modelling + Image-Text Matching, both every step (paper Sec. 3.3).

Shapes: n images, r text rows (several per image), t text tokens, m masked tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from pixelbert_pl.metrics import DeviceMean
from pixelbert_pl.models import ITMHead, MLMHead
from pixelbert_pl.processing.batches import IGNORE_INDEX, PretrainBatch
from pixelbert_pl.tasks.base import PixelBertTask


def masked_positions(masked: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Flat row-major indices of the True entries of `masked`, as `masked.flatten().nonzero()` gives them.

    With `count` (the collate's host-side number of True entries) a stable sort finds them without reading the
    count back from the device, so the step never waits for the GPU here; without it, `nonzero` does.
    """
    flat = masked.flatten()
    if count is None:
        return flat.nonzero().squeeze(1)
    return torch.argsort(flat.to(torch.uint8), descending=True, stable=True)[:count]


class PretrainTask(PixelBertTask):
    """Pre-training. Loss = mlm_weight * MLM + itm_weight * ITM; a weight of 0 removes that loss and its head.

    Args:
        mlm_weight, itm_weight: real multipliers of the two losses (docs/prior_art.md L14); at least one positive.
        sample_pixels: keep `pixel_sample_size` random pixel tokens per row in training (the paper's K = 100).
        skip_pixel_rows: the last layer computes [CLS] and the text rows only (`outputs="text"`): MLM and ITM read
            nothing else, so the losses are the same up to float rounding and the pixel rows' query, output and
            feed-forward projections of one layer are saved. Off by default because the demo's recipe is sensitive
            to rounding: with it on, seed 0 settles in a worse basin (experiments/results/design_notes.md).
        **kwargs: `PixelBertTask` arguments (preset, text_encoder, visual_weights, optimizer, ...).
    """

    monitor = "val/itm_accuracy"
    mode = "max"
    init_heads = ("itm_head", "mlm_head")  # continuing a pre-training

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
        self.mlm_weight, self.itm_weight, self.use_sampling = mlm_weight, itm_weight, sample_pixels
        self.skip_pixel_rows = skip_pixel_rows
        super().__init__(**kwargs)

    def configure_heads(self) -> None:
        cfg = self.model.config
        self.mlm_head = MLMHead(cfg, self.model.word_embeddings) if self.mlm_weight > 0 else None
        self.itm_head = ITMHead(cfg) if self.itm_weight > 0 else None

    def configure_metrics(self) -> dict[str, Metric]:
        return {"mlm_accuracy": DeviceMean(), "itm_accuracy": DeviceMean()}

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"mlm": self.mlm_weight, "itm": self.itm_weight}

    def forward(self, batch: PretrainBatch, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Logits (and targets) of each loss for a batch; the CNN runs once per image for all its rows. Pixel
        tokens are sampled when `sample` is True, or when None (the default) in training with `sample_pixels`."""
        if sample is None:
            sample = self.training and self.use_sampling
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        out = self.model(
            batch.input_ids,
            batch.attention_mask,
            pixel_tokens=pixels,
            image_index=batch.image_index,
            sample_pixels=sample,
            pixel_sample_seeds=batch.pixel_sample_seeds,
            outputs=("text" if self.mlm_head is not None else "cls") if self.skip_pixel_rows else "all",
        )
        result: dict[str, torch.Tensor] = {}
        if self.mlm_head is not None:
            masked = batch.mlm_labels != IGNORE_INDEX  # (r, t)
            positions = masked_positions(masked, batch.num_masked)  # (m,) flat indices, row-major
            result["mlm_targets"] = batch.mlm_labels.flatten()[positions]  # (m,)
            result["mlm_logits"] = self.mlm_head(out.text_output.flatten(0, 1)[positions]).float()  # (m, vocab)
            result["mlm_count"] = masked.sum()
        if self.itm_head is not None:
            result["itm_logits"] = self.itm_head(out.cls_output).float()  # (r, 2)
        return result

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: PretrainBatch) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if "mlm_logits" in outputs:
            # Sum / max(m, 1): finite when a batch has no masked token (short VG phrases), docs/prior_art.md L12.
            mlm = F.cross_entropy(outputs["mlm_logits"], outputs["mlm_targets"], reduction="sum")
            parts["mlm"] = mlm / outputs["mlm_count"].clamp(min=1)
        if "itm_logits" in outputs:
            parts["itm"] = F.cross_entropy(outputs["itm_logits"], batch.itm_labels)
        return parts

    def update_metrics(self, metrics: dict[str, Metric], outputs: dict[str, torch.Tensor], batch: Any) -> None:
        if "mlm_logits" in outputs:
            metrics["mlm_accuracy"].update(outputs["mlm_logits"].argmax(-1) == outputs["mlm_targets"])
        if "itm_logits" in outputs:
            metrics["itm_accuracy"].update(outputs["itm_logits"].argmax(-1) == batch.itm_labels)
