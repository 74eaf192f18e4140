"""`PixelBertForPreTraining`: Masked Language Modelling + Image-Text Matching heads (paper Sec. 3.3).

Shapes: n images, r text rows (several per image), t text tokens, m masked tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pixelbert_pl.models.heads import ITMHead, MLMHead
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.task_model import PixelBertTaskModel, image_text_items, register_task_model
from pixelbert_pl.processing.batches import IGNORE_INDEX, PretrainBatch, collate_image_texts
from pixelbert_pl.processing.padding import BatchPadding


def masked_positions(masked: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Flat row-major indices of the True entries of `masked`, as `masked.flatten().nonzero()` gives them.

    With `count` (the collate's host-side number of True entries) a stable sort finds them without reading the
    count back from the device, so the step never waits for the GPU here; without it, `nonzero` does.
    """
    flat = masked.flatten()
    if count is None:
        return flat.nonzero().squeeze(1)
    return torch.argsort(flat.to(torch.uint8), descending=True, stable=True)[:count]


@register_task_model
class PixelBertForPreTraining(PixelBertTaskModel):
    """Args (a continued pre-training starts its heads from the checkpoint's):
    mlm, itm: build the MLM / ITM head (a pre-training without one of the losses has no use for its head).
    sample_pixels: keep `pixel_sample_size` random pixel tokens per row in training (the paper's K = 100).
    skip_pixel_rows: the last layer computes [CLS] and the text rows only: MLM and ITM read nothing else, so the
        losses are the same up to float rounding and one layer's pixel-row projections are saved.
    """

    init_heads = ("itm_head", "mlm_head")

    def __init__(
        self, backbone: PixelBertModel, mlm: bool = True, itm: bool = True, sample_pixels: bool = True,
        skip_pixel_rows: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(backbone)
        if not (mlm or itm):
            raise ValueError(f"{type(self).__name__}: mlm=False and itm=False; expected at least one head")
        self.mlm_head = MLMHead(backbone.config, backbone.word_embeddings) if mlm else None
        self.itm_head = ITMHead(backbone.config) if itm else None
        self.sample_pixels, self.skip_pixel_rows = sample_pixels, skip_pixel_rows

    def task_args(self) -> dict[str, Any]:
        return {"mlm": self.mlm_head is not None, "itm": self.itm_head is not None,
                "sample_pixels": self.sample_pixels, "skip_pixel_rows": self.skip_pixel_rows}  # fmt: skip

    def forward(self, batch: PretrainBatch, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Logits (and targets) of each loss for a batch; the CNN runs once per image for all its rows. Pixel
        tokens are sampled when `sample` is True, or when None (the default) in training with `sample_pixels`."""
        if sample is None:
            sample = self.training and self.sample_pixels
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

    def loss(self, outputs: dict[str, torch.Tensor], batch: PretrainBatch) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if "mlm_logits" in outputs:
            # Sum / max(m, 1): finite when a batch has no masked token (short VG phrases), docs/prior_art.md L12.
            mlm = F.cross_entropy(outputs["mlm_logits"], outputs["mlm_targets"], reduction="sum")
            parts["mlm"] = mlm / outputs["mlm_count"].clamp(min=1)
        if "itm_logits" in outputs:
            parts["itm"] = F.cross_entropy(outputs["itm_logits"], batch.itm_labels)
        return parts

    def collate(self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int) -> PretrainBatch:
        """(image, text) pairs to match: nothing masked, nothing sampled."""
        fields = collate_image_texts(image_text_items(items), pad_token_id, padding)
        rows = fields["input_ids"].shape[0]
        return PretrainBatch(
            **fields, mlm_labels=torch.full_like(fields["input_ids"], IGNORE_INDEX),
            itm_labels=torch.zeros(rows, dtype=torch.long), pixel_sample_seeds=[0] * rows,
            sample_ids=torch.arange(rows), num_masked=0,
        )  # fmt: skip

    def postprocess(
        self, outputs: dict[str, torch.Tensor], batch: PretrainBatch, **options: Any
    ) -> list[dict[str, Any]]:
        """{"match": the ITM probability that the text describes the image} per (image, text) row."""
        if "itm_logits" not in outputs:
            raise TypeError(f"{type(self).__name__} has no ITM head: it predicts no image-text match")
        return [{"match": p} for p in outputs["itm_logits"].float().softmax(-1)[:, 1].tolist()]

    def match_log_odds(self, cls_output: torch.Tensor) -> torch.Tensor:
        """ITM log-odds (matched minus unmatched logit) of [CLS] vectors: a ranking score."""
        if self.itm_head is None:
            raise TypeError(f"{type(self).__name__} has no ITM head: it cannot rank")
        logits = self.itm_head(cls_output).float()
        return logits[:, 1] - logits[:, 0]
