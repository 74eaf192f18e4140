"""`RetrievalEvaluator`: image-text retrieval evaluated the paper's way (Sec. 4.3), every image of the split against
every text, as `RetrievalTask`'s evaluator (see `PixelBertTask.configure_evaluator`).

Each val / test batch is a batch of images: their pixel tokens are computed once and scored against every text
of the split (`PixelBertForImageTextRetrieval.score_matrix`). At the epoch's end every rank's rows are gathered,
in image order, and ranked into R@K; with `rerank_top_k` the scores are a coarse first stage that the
candidates' exact scores then reorder (`RetrievalTask`'s docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from pixelbert_pl.distributed import gather_lists
from pixelbert_pl.metrics import coco_1k_recall, rerank_candidates, rerank_scores, retrieval_recall
from pixelbert_pl.models import PixelBertForImageTextRetrieval
from pixelbert_pl.models.visual import PixelTokens
from pixelbert_pl.processing.batches import RetrievalImageBatch, RetrievalTexts

log = logging.getLogger(__name__)


class RetrievalEvaluator:
    """Accumulates an evaluation epoch's (images x texts) fp16 score rows and ranks them.

    Args:
        net: the scorer (its `score_matrix` / `score_pairs`).
        split_texts: a stage's ("val", "test") texts.
        step_context: a stage's autocast, as its steps run (reranking happens at the epoch's end, outside them).
        protocols: "full" and / or "coco_1k" (see `RetrievalTask`).
        rerank_top_k: two-stage evaluation (None: exhaustive).
        coarse_pool: as rerank_top_k, two-stage evaluation's: the coarse stage's pooling block side.
    """

    def __init__(
        self, net: PixelBertForImageTextRetrieval, split_texts: Callable[[str], RetrievalTexts],
        step_context: Callable[[str], AbstractContextManager[Any]], protocols: tuple[str, ...],
        rerank_top_k: int | None, coarse_pool: int,
    ) -> None:  # fmt: skip
        self.net, self.split_texts, self.step_context = net, split_texts, step_context
        self.protocols, self.rerank_top_k, self.coarse_pool = protocols, rerank_top_k, coarse_pool
        self.reset()

    def reset(self) -> None:
        self._scores: list[tuple[torch.Tensor, torch.Tensor]] = []  # (image positions, (n, texts) scores)
        self._texts: RetrievalTexts | None = None  # this epoch's texts, on the model's device
        self._text_lengths: torch.Tensor | None = None  # their real lengths, on the host
        self._pixels: list[tuple[torch.Tensor, PixelTokens, Any]] = []  # (positions, tokens, sizes), for reranking

    def update(self, batch: RetrievalImageBatch, stage: str) -> None:
        pixels = self.net.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        if self._texts is None:  # the split's texts go to the device once per epoch, not once per image batch
            texts = self.split_texts(stage)
            device = pixels.tokens.device
            self._text_lengths = texts.attention_mask.cpu().sum(dim=1)
            self._texts = RetrievalTexts(
                texts.input_ids.to(device), texts.attention_mask.to(device), texts.text_to_image
            )
        positions = batch.image_positions.cpu()
        if self.rerank_top_k is None:
            scores = self.net.score_matrix(pixels, self._texts, self._text_lengths, batch.image_sizes)
        else:  # the coarse stage; the pixel tokens wait on the device for the exact one at the epoch's end
            scores = self.net.score_matrix(pixels, self._texts, self._text_lengths, batch.image_sizes, self.coarse_pool)
            self._pixels.append((positions, pixels, batch.image_sizes))
        self._scores.append((positions, scores))

    def gather_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's (image positions, scores), concatenated in position order; a repeated image is an error."""
        parts = gather_lists(self._scores)
        positions = torch.cat([p for p, _ in parts])
        order = positions.argsort()
        positions, scores = positions[order], torch.cat([s for _, s in parts])[order]
        if positions.unique().numel() != positions.numel():
            raise RuntimeError("retrieval evaluation scored an image twice: use a sampler that repeats no image")
        return positions, scores

    def compute(self, stage: str) -> dict[str, float]:
        """R@K as fractions in [0, 1] (and with "full" `rsum`, the sum of the six, in [0, 6]) over the images
        scored this epoch (all of the split, unless `limit_*_batches` cut it short) and the texts of those images;
        {} when nothing was scored."""
        if not self._scores:
            return {}
        positions, scores = self.gather_scores()
        t2i = self.split_texts(stage).text_to_image.cpu()
        texts = torch.isin(t2i, positions)
        if not texts.all():
            log.warning("retrieval %s: %d of the split's images scored; recall is over those", stage, len(positions))
        scores, t2i = scores[:, texts].float(), torch.searchsorted(positions, t2i[texts])
        if self.rerank_top_k is not None:
            scores = self.rerank(scores, positions, texts.nonzero().squeeze(1), stage)
        result: dict[str, float] = {}
        if "full" in self.protocols:
            result.update(retrieval_recall(scores, t2i))
            result["rsum"] = sum(v for k, v in result.items() if k[:3] in ("i2t", "t2i"))
        if "coco_1k" in self.protocols:
            result.update({f"coco1k_{k}": v for k, v in coco_1k_recall(scores, t2i).items()})
        return result

    def rerank(self, coarse: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor, stage: str) -> torch.Tensor:
        """The second stage of `rerank_top_k`: each image's k best texts and each text's k best images under the
        gathered `coarse` (images at `positions` x texts `columns` of the split) scored again with all pixel tokens,
        each rank its own images (their tokens kept from the steps), then ranked above the rest (`rerank_scores`)."""
        assert self.rerank_top_k is not None and self._texts is not None
        chosen = rerank_candidates(coarse, self.rerank_top_k)
        mine = []
        with self.step_context(stage), torch.no_grad():  # the steps' autocast; epoch-end hooks run outside it
            for batch_positions, pixels, sizes in self._pixels:
                rows = torch.searchsorted(positions, batch_positions)
                images, cols = chosen[rows].nonzero(as_tuple=True)
                exact = self.net.score_pairs(pixels, self._texts, images, columns[cols], self._text_lengths, sizes)
                mine.append((rows[images], cols, exact))
        parts = gather_lists(mine)
        rows, cols, exact = (torch.cat([p[i] for p in parts]) for i in range(3))
        return rerank_scores(coarse, rows, cols, exact)
