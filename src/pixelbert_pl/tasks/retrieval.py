"""`RetrievalTask`: image-text retrieval fine-tuning and R@K evaluation (paper Sec. 4.3; protocols in
docs/paper_facts.md) around `PixelBertForImageTextRetrieval`. The CNN is frozen by default
(`optimizer.cnn_optimizer: frozen`), as in the paper.

Evaluation is exhaustive by default (the paper's protocol): every image of the split against every text, pairs
scored `eval_chunk` at a time into an fp16 (images x texts) matrix. Under DDP each rank scores its own images (the
data module's sampler repeats none) and every rank gathers the matrix.

`rerank_top_k=k` makes it two-stage, for speed: every pair is first scored with its image's pixel tokens averaged
over `coarse_pool` x `coarse_pool` blocks (a quarter of the tokens at 2), then each image's k best texts and each
text's k best images are scored again with all tokens and ranked first, in that exact order. R@K (K <= k) then
differs from exhaustive only where the coarse stage leaves a match out of both top-k lists; with k at least the
number of images and of texts it is exhaustive; experiments/results/retrieval_two_stage.md measures the gap.
Report which protocol gave a number. The evaluation epoch itself is `RetrievalEvaluator` (`tasks/ranking.py`).
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

from pixelbert_pl.models import PixelBertForImageTextRetrieval, PixelBertModel
from pixelbert_pl.processing.batches import RetrievalImageBatch, RetrievalTexts
from pixelbert_pl.tasks.base import PixelBertTask
from pixelbert_pl.tasks.optim import OptimizerConfig
from pixelbert_pl.tasks.protocols import RetrievalData
from pixelbert_pl.tasks.ranking import RetrievalEvaluator

PROTOCOLS = ("full", "coco_1k")


class RetrievalTask(PixelBertTask):
    """Retrieval fine-tuning and exhaustive R@K evaluation.

    Args:
        hard_negatives: negatives per image kept in the loss (the highest-scoring ones); None keeps them all.
        eval_chunk: image-text pairs per forward pass in evaluation.
        protocols: "full" (R@K over the whole split: Flickr30K 1K, COCO 5K) and / or "coco_1k" (5 folds of 1,000
            images, averaged).
        rerank_top_k: None (exhaustive) or k: two-stage evaluation (see the module docstring), which keeps every
            image's pixel tokens on the device until the epoch ends. Candidates are chosen over the whole scored
            split, also for "coco_1k".
        coarse_pool: the block side over which the coarse stage of `rerank_top_k` averages pixel tokens.
        predict_top_k: texts listed per image by `pixelbert predict`.
        **kwargs: `PixelBertTask` arguments; `optimizer` defaults to AdamW 1e-4 with the CNN frozen.
    """

    monitor = "val/rsum"
    mode = "max"
    evaluator_prog_bar = ("i2t_r1", "t2i_r1")
    net: PixelBertForImageTextRetrieval

    def __init__(
        self,
        hard_negatives: int | None = 5,
        eval_chunk: int = 1024,
        protocols: tuple[str, ...] = ("full",),
        rerank_top_k: int | None = None,
        coarse_pool: int = 2,
        predict_top_k: int = 5,
        **kwargs: Any,
    ) -> None:
        unknown = set(protocols) - set(PROTOCOLS)
        if unknown:
            raise ValueError(f"protocols={list(protocols)}: unknown {sorted(unknown)}; expected among {PROTOCOLS}")
        if rerank_top_k is not None and rerank_top_k < 1:
            raise ValueError(f"rerank_top_k={rerank_top_k}: expected >= 1 or None (exhaustive)")
        if coarse_pool < 1 or predict_top_k < 1:
            raise ValueError(f"coarse_pool={coarse_pool}, predict_top_k={predict_top_k}: expected >= 1")
        self.hard_negatives, self.eval_chunk, self.predict_top_k = hard_negatives, eval_chunk, predict_top_k
        self._evaluation = (tuple(protocols), rerank_top_k, coarse_pool)  # the evaluator's; it owns them after init
        kwargs.setdefault("optimizer", OptimizerConfig(cnn_optimizer="frozen", milestones=[0.6]))
        super().__init__(**kwargs)

    def build_task_model(self, backbone: PixelBertModel) -> PixelBertForImageTextRetrieval:
        return PixelBertForImageTextRetrieval(backbone, self.hard_negatives, self.eval_chunk)

    def configure_evaluator(self) -> RetrievalEvaluator:
        return RetrievalEvaluator(self.net, self.split_texts, self.step_context, *self._evaluation)

    def step_context(self, stage: str) -> AbstractContextManager[Any]:
        """The autocast `stage`'s steps run under (the trainer's precision), for work done outside a step."""
        plugin = getattr(self.trainer, "precision_plugin", None)
        return getattr(plugin, f"{stage}_step_context", nullcontext)()

    def batch_size(self, batch: Any) -> int:
        return int(batch.pixel_values.shape[0])

    def split_texts(self, stage: str) -> RetrievalTexts:
        """The texts of the split `stage` ("val"; "test", which `pixelbert predict` also reads) scores against."""
        data = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        # Looked up statically: Python 3.11's isinstance on the protocol evaluates both properties, which reads and
        # tokenises the test split at every validation (and fails where a source has none).
        if any(inspect.getattr_static(data, name, None) is None for name in ("val_texts", "test_texts")):
            raise TypeError(f"{type(data).__name__} has no val_texts / test_texts: RetrievalTask needs a split's texts")
        texts = cast(RetrievalData, data)
        return texts.val_texts if stage == "val" else texts.test_texts

    def predict_step(self, batch: RetrievalImageBatch, batch_idx: int) -> list[dict[str, Any]]:
        """One row per image of the test split: {"id": its position in the split, "texts": its `predict_top_k`
        best texts as [text position in the split's text list, score], best first}."""
        texts = self.split_texts("test")
        pixels = self.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
        device = pixels.tokens.device
        on_device = RetrievalTexts(texts.input_ids.to(device), texts.attention_mask.to(device), texts.text_to_image)
        scores = self.net.score_matrix(pixels, on_device, texts.attention_mask.sum(dim=1), batch.image_sizes).float()
        best, order = scores.topk(min(self.predict_top_k, scores.shape[1]), dim=1)
        return [
            {"id": position, "texts": [[t, s] for t, s in zip(row_order, row_best, strict=True)]}
            for position, row_order, row_best in zip(
                batch.image_positions.tolist(), order.tolist(), best.tolist(), strict=True
            )
        ]
