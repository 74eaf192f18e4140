"""`PixelBertForImageTextRetrieval`: image-text retrieval as cross-encoder ranking (paper Sec. 4.3).

Training: each image with its positive caption and k random negatives is scored by a rank head on [CLS]; softmax
cross-entropy over the positive and the `hard_negatives` highest-scoring negatives (the paper's "5 negatives with the
highest loss"). The negatives are first scored without gradients, so only the kept rows pay for a backward pass.

Evaluation scores every image against every text (`score_matrix`), each image's pixel tokens computed once and
reused for all its pairs, with as little padding as the texts' lengths and the images' sizes allow (`score_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pixelbert_pl.models.buckets import group_rows
from pixelbert_pl.models.heads import ITMHead, RankHead
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.task_model import PixelBertTaskModel, image_text_items, register_task_model
from pixelbert_pl.models.visual import PixelTokens, crop_pixel_tokens, pool_pixel_tokens
from pixelbert_pl.processing.batches import ImageTextBatch, RetrievalTexts, RetrievalTrainBatch, collate_image_texts
from pixelbert_pl.processing.padding import BatchPadding


@register_task_model
class PixelBertForImageTextRetrieval(PixelBertTaskModel):
    """Args:
    hard_negatives: negatives per image kept in the loss (the highest-scoring ones); None keeps them all.
    eval_chunk: image-text pairs per forward pass when scoring (evaluation, `Predictor.rank`).
    """

    init_heads = ("rank_head",)  # from pre-training's ITM head

    def __init__(self, backbone: PixelBertModel, hard_negatives: int | None = 5, eval_chunk: int = 1024) -> None:
        super().__init__(backbone)
        if hard_negatives is not None and hard_negatives < 1:
            raise ValueError(f"hard_negatives={hard_negatives}: expected >= 1 or None")
        if eval_chunk < 1:
            raise ValueError(f"eval_chunk={eval_chunk}: expected >= 1")
        self.hard_negatives, self.eval_chunk = hard_negatives, eval_chunk
        self.rank_head = RankHead(backbone.config)

    def task_args(self) -> dict[str, Any]:
        return {"hard_negatives": self.hard_negatives, "eval_chunk": self.eval_chunk}

    def init_heads_from(self, state: dict[str, torch.Tensor]) -> list[str]:
        copied = super().init_heads_from(state)
        if not any(k.startswith("rank_head.") for k in copied) and "itm_head.fc.weight" in state:
            itm = ITMHead(self.model.config)
            itm.load_state_dict({"fc.weight": state["itm_head.fc.weight"], "fc.bias": state["itm_head.fc.bias"]})
            self.rank_head.init_from_itm(itm)
            copied.append("rank_head <- itm_head")
        return copied

    def score(self, pixels: PixelTokens, input_ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> Any:
        """Relevance of each text row to its image `index` of `pixels`."""
        out = self.model(input_ids, mask, pixel_tokens=pixels, image_index=index, outputs="cls")
        return self.rank_head(out.cls_output).float()

    def forward(self, batch: RetrievalTrainBatch | ImageTextBatch) -> torch.Tensor:
        """Training batches: (n, 1 + h) scores, the positive first, then the h hardest negatives of each image.
        (image, text) pairs (`ImageTextBatch`): one score per pair."""
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        if isinstance(batch, ImageTextBatch):
            return self.score(pixels, batch.input_ids, batch.attention_mask, batch.image_index)
        n, g = batch.pixel_values.shape[0], batch.group_size
        rows = torch.arange(n * g, device=batch.input_ids.device).view(n, g)
        h = g - 1 if self.hard_negatives is None else min(self.hard_negatives, g - 1)
        if h < g - 1:
            with torch.no_grad():
                negatives = rows[:, 1:].reshape(-1)
                detached = PixelTokens(pixels.tokens.detach(), pixels.mask, pixels.grid, pixels.index)
                scores = self.score(
                    detached, batch.input_ids[negatives], batch.attention_mask[negatives],
                    batch.image_index[negatives],
                ).view(n, g - 1)  # fmt: skip
            hardest = scores.topk(h, dim=1).indices + 1
            rows = torch.cat([rows[:, :1], rows.gather(1, hardest)], dim=1)
        keep = rows.reshape(-1)
        scores = self.score(pixels, batch.input_ids[keep], batch.attention_mask[keep], batch.image_index[keep])
        return scores.view(n, -1)

    def loss(self, outputs: torch.Tensor, batch: RetrievalTrainBatch) -> dict[str, torch.Tensor]:
        target = torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device)  # the positive is first
        return {"rank": F.cross_entropy(outputs, target)}

    def collate(self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int) -> ImageTextBatch:
        return ImageTextBatch(**collate_image_texts(image_text_items(items), pad_token_id, padding))

    def postprocess(self, outputs: torch.Tensor, batch: Any, **options: Any) -> list[dict[str, Any]]:
        """{"score": the pair's relevance (higher = better match; compare scores, not a probability)} per pair."""
        return [{"score": s} for s in outputs.float().tolist()]

    @torch.no_grad()
    def score_pairs(
        self,
        pixels: PixelTokens,
        texts: RetrievalTexts,
        images: torch.Tensor,
        text_rows: torch.Tensor,
        text_lengths: torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        pool: int = 1,
    ) -> torch.Tensor:
        """fp16 scores, on the CPU, of the pairs (image `images[i]` of `pixels`, text `text_rows[i]`), given as host
        long tensors; `eval_chunk` pairs per forward pass.

        Each pair costs a pass over its text and pixel tokens, padding included, so two host-side hints keep
        padding out of the passes without changing any score (padded keys are masked): `text_lengths` (the real
        tokens of each text) puts pairs of similar text length in one pass, cut after its longest text;
        `image_sizes` (each image's real (h, w), as the batches carry them) scores images in groups of one token
        grid, cropped to it, so that a 4:3 image batched with a 3:4 one does not carry the padding of their union
        (31% more tokens at 800 x 1067). Neither hint reads the device back.

        `pool` > 1 scores with each image's tokens averaged over `pool` x `pool` blocks of its grid
        (`pool_pixel_tokens`, the coarse stage of two-stage evaluation); 1 scores with all of them.
        """
        n, device = pixels.tokens.shape[0], pixels.tokens.device
        if images.shape != text_rows.shape or images.ndim != 1:
            raise ValueError(f"images {tuple(images.shape)}, text_rows {tuple(text_rows.shape)}: expected 1-D, equal")
        width = texts.input_ids.shape[1]
        lengths = torch.full((texts.input_ids.shape[0],), width) if text_lengths is None else text_lengths.cpu()
        grids = [pixels.grid] * n if image_sizes is None else [self.model.visual.token_grid(*s) for s in image_sizes]
        groups = group_rows(grids)
        out = torch.empty(images.shape[0], dtype=torch.float16, device=device)
        for grid, members in groups.items():
            m = len(members)
            local = torch.full((n,), -1, dtype=torch.long)
            local[members] = torch.arange(m)
            pairs = (local[images] >= 0).nonzero().squeeze(1)
            pairs = pairs[lengths[text_rows[pairs]].argsort(stable=True)]  # shortest texts first
            widths = lengths[text_rows[pairs]].tolist()
            part = pixels if m == n else pixels.select(torch.tensor(members).to(device))
            part = pool_pixel_tokens(crop_pixel_tokens(part, grid), pool)
            at, index, rows = (t.to(device) for t in (pairs, local[images[pairs]], text_rows[pairs]))
            for start in range(0, len(pairs), self.eval_chunk):
                stop = min(start + self.eval_chunk, len(pairs))
                chunk, w = rows[start:stop], widths[stop - 1]
                ids, mask = texts.input_ids[chunk, :w], texts.attention_mask[chunk, :w]
                out[at[start:stop]] = self.score(part, ids, mask, index[start:stop]).to(out.dtype)
        return out.cpu()  # one transfer per call; the gathered matrix lives on the CPU

    def score_matrix(
        self,
        pixels: PixelTokens,
        texts: RetrievalTexts,
        text_lengths: torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        pool: int = 1,
    ) -> torch.Tensor:
        """(n images, T texts) fp16 scores of every pair (see `score_pairs` for the arguments)."""
        n, num_texts = pixels.tokens.shape[0], texts.input_ids.shape[0]
        images, text_rows = torch.arange(n).repeat_interleave(num_texts), torch.arange(num_texts).repeat(n)
        scores = self.score_pairs(pixels, texts, images, text_rows, text_lengths, image_sizes, pool)
        return scores.view(n, num_texts)
