"""Image-text retrieval recall@K from a full (images x texts) score matrix (docs/paper_facts.md §6.4).

Ties are broken pessimistically: a ground-truth item ranks behind every wrong item with an equal score. A model
whose scores collapse to a constant therefore gets (near) zero recall, instead of whatever an argsort's tie order
happens to give. The rank of a positive is the number of wrong candidates scoring at least as high; R@K is the
fraction in [0, 1] of ranks < K (papers report it in percent). Nothing of size (images x texts) beyond the input is
allocated: comparisons run over slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# Bool elements per comparison slice (16 MiB), so a 5K x 25K COCO matrix never needs a full-size temporary.
_SLICE_ELEMENTS = 1 << 24


def _check(scores: Any, text_to_image: Any, ks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores: shape {tuple(scores.shape)} dtype {scores.dtype}; expected a real (images, texts)")
    num_images, num_texts = scores.shape
    if num_images == 0 or num_texts == 0:
        raise ValueError(f"scores shape {tuple(scores.shape)}: expected at least one image and one text")
    # amax propagates NaN, so this finds one without a full-size mask.
    if scores.is_floating_point() and torch.isnan(scores.amax()):
        raise ValueError(
            f"scores has {int(torch.isnan(scores).sum())} NaN entries: expected none (ranks are undefined)"
        )
    t2i = torch.as_tensor(text_to_image)
    if t2i.is_floating_point() or t2i.is_complex() or t2i.dtype == torch.bool:
        raise TypeError(f"text_to_image dtype {t2i.dtype}: expected integer image indices")
    t2i = t2i.to(device=scores.device, dtype=torch.long)
    if t2i.shape != (num_texts,):
        raise ValueError(f"text_to_image shape {tuple(t2i.shape)}: expected ({num_texts},), one image per text")
    bad = (t2i < 0) | (t2i >= num_images)
    if bad.any():
        j = int(bad.nonzero()[0])
        raise ValueError(f"text_to_image[{j}]={int(t2i[j])}: expected an image index in [0, {num_images})")
    missing = (torch.bincount(t2i, minlength=num_images) == 0).nonzero()
    if len(missing):
        raise ValueError(f"image {int(missing[0])} has no text in text_to_image: expected >= 1 text per image")
    bad_ks = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad_ks or not ks:
        raise ValueError(f"ks={tuple(ks)}: expected a non-empty sequence of positive ints")
    return scores, t2i


def _ranks(scores: torch.Tensor, t2i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic 0-based rank of each image's best ground-truth text, and of each text's image."""
    num_images, num_texts = scores.shape
    positive = scores[t2i, torch.arange(num_texts, device=scores.device)]  # (texts,)

    t2i_rank = torch.empty(num_texts, dtype=torch.long, device=scores.device)
    step = max(1, _SLICE_ELEMENTS // num_images)
    for c in range(0, num_texts, step):
        # Minus one: the text's own image is among those scoring >= its score.
        t2i_rank[c : c + step] = (scores[:, c : c + step] >= positive[c : c + step]).sum(0) - 1

    # An image's first ground-truth text in the ranking is its best-scoring one; only wrong texts can precede it.
    best = torch.zeros(num_images, dtype=scores.dtype, device=scores.device)
    best = best.scatter_reduce(0, t2i, positive, "amax", include_self=False)
    positives_at_best = torch.zeros(num_images, dtype=torch.long, device=scores.device)
    positives_at_best.scatter_add_(0, t2i, (positive == best[t2i]).long())
    i2t_rank = torch.empty(num_images, dtype=torch.long, device=scores.device)
    step = max(1, _SLICE_ELEMENTS // num_texts)
    for r in range(0, num_images, step):
        at_least = (scores[r : r + step] >= best[r : r + step, None]).sum(1)
        i2t_rank[r : r + step] = at_least - positives_at_best[r : r + step]
    return i2t_rank, t2i_rank


def _recalls(i2t_rank: torch.Tensor, t2i_rank: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    out = {f"i2t_r{k}": (i2t_rank < k).double().mean().item() for k in ks}
    out.update({f"t2i_r{k}": (t2i_rank < k).double().mean().item() for k in ks})
    return out


def retrieval_recall(scores: Any, text_to_image: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K as a fraction in [0, 1], both directions, over all images and texts of `scores`.

    Args:
        scores: (images, texts) tensor (or array), higher = more relevant; any real dtype, fp16 included.
        text_to_image: the image index of each text (a sequence or tensor of ints); an image may have any
            number >= 1 of texts, in any order.
        ks: cut-offs.

    Returns:
        `i2t_r{k}` (text retrieval, TR: an image is a hit if any of its texts ranks in the top k of all texts) and
        `t2i_r{k}` (image retrieval, IR: a text is a hit if its image ranks in the top k of all images) for each k.
    """
    scores, t2i = _check(scores, text_to_image, ks)
    return _recalls(*_ranks(scores, t2i), ks)


def coco_1k_recall(scores: Any, text_to_image: Any, ks: Sequence[int] = (1, 5, 10), folds: int = 5) -> dict[str, float]:
    """COCO-1K: recall within each fold of consecutive images (with their own texts), averaged over folds.

    The 5K Karpathy test images, in file order, make 5 folds of 1,000; each fold ranks only its own 1,000
    images and their texts, and every `i2t_r{k}` / `t2i_r{k}` is the plain mean of the fold values (vsepp's
    `evalrank(fold5=True)`). Texts are assigned to folds through `text_to_image`, so they need not be contiguous.
    """
    scores, t2i = _check(scores, text_to_image, ks)
    num_images = scores.shape[0]
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1 or num_images % folds:
        raise ValueError(f"folds={folds!r}: expected a positive int dividing the number of images ({num_images})")
    size = num_images // folds
    per_fold = []
    for lo in range(0, num_images, size):
        texts = ((t2i >= lo) & (t2i < lo + size)).nonzero().squeeze(1)
        fold_scores = scores[lo : lo + size].index_select(1, texts)
        per_fold.append(_recalls(*_ranks(fold_scores, t2i[texts] - lo), ks))
    return {key: sum(f[key] for f in per_fold) / folds for key in per_fold[0]}


def rerank_candidates(coarse: torch.Tensor, k: int) -> torch.Tensor:
    """(images, texts) bool: each image's k best texts and each text's k best images under `coarse` scores, the
    pairs that the second stage of a two-stage evaluation scores again, exactly."""
    if coarse.ndim != 2 or k < 1:
        raise ValueError(f"coarse shape {tuple(coarse.shape)}, k={k}: expected (images, texts) scores and k >= 1")
    num_images, num_texts = coarse.shape
    chosen = torch.zeros(coarse.shape, dtype=torch.bool, device=coarse.device)
    chosen.scatter_(1, coarse.topk(min(k, num_texts), dim=1).indices, True)
    chosen.scatter_(0, coarse.topk(min(k, num_images), dim=0).indices, True)
    return chosen


def rerank_scores(coarse: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """float32 `coarse` with pair (rows[i], cols[i]) set to `exact[i]` plus one offset that lifts every exact score
    above every coarse one: in each row and column the re-scored pairs rank first, in their exact order, and the
    rest behind them in coarse order. Recall@K of the result is what a two-stage evaluation reports."""
    if not (rows.shape == cols.shape == exact.shape and rows.ndim == 1):
        shapes = f"rows {tuple(rows.shape)}, cols {tuple(cols.shape)}, exact {tuple(exact.shape)}"
        raise ValueError(f"{shapes}: expected three 1-D tensors of one length")
    key = coarse.float().clone()
    if exact.numel():
        exact = exact.float()
        key[rows, cols] = exact + (key.max() - exact.min() + 1)
    return key
