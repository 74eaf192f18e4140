"""Recall@K on hand-made score matrices (both directions, 5 texts per image, ties), against a sorting reference,
and the COCO-1K five-fold protocol."""

from __future__ import annotations

import pytest
import torch

import pixelbert_pl.metrics.retrieval as retrieval
from pixelbert_pl.metrics import coco_1k_recall, retrieval_recall


def test_recall_two_texts_per_image() -> None:
    t2i = [0, 0, 1, 1, 2, 2]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],  # own best 0.9, nothing above: rank 0
            [0.7, 0.6, 0.1, 0.5, 0.2, 0.3],  # own best 0.5, above it 0.7, 0.6: rank 2
            [0.95, 0.8, 0.7, 0.6, 0.5, 0.1],  # own best 0.5, above it 0.95, 0.8, 0.7, 0.6: rank 4
        ]
    )
    # Text -> image ranks, column by column (own image's score vs the others'):
    # t0 0.9 vs 0.7, 0.95 -> 1; t1 0.1 vs 0.6, 0.8 -> 2; t2 0.1 vs 0.8, 0.7 -> 2; t3 0.5 vs 0.2, 0.6 -> 1;
    # t4 0.5 vs 0.3, 0.2 -> 0; t5 0.1 vs 0.4, 0.3 -> 2.
    got = retrieval_recall(scores, t2i, ks=(1, 2, 3, 5))
    expected = {
        "i2t_r1": 1 / 3,
        "i2t_r2": 1 / 3,
        "i2t_r3": 2 / 3,
        "i2t_r5": 1.0,
        "t2i_r1": 1 / 6,
        "t2i_r2": 3 / 6,
        "t2i_r3": 1.0,
        "t2i_r5": 1.0,
    }
    assert got == pytest.approx(expected)


def test_recall_five_texts_per_image_default_ks() -> None:
    t2i = [0] * 5 + [1] * 5
    scores = torch.tensor(
        [
            # own best 0.5; 0.9, 0.8, 0.7, 0.6 of image 1's texts above it: rank 4 (hit at 5, not at 1)
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8, 0.7, 0.6, 0.05],
            # own best 0.95, nothing above: rank 0
            [0.15, 0.1, 0.35, 0.3, 0.45, 0.6, 0.7, 0.8, 0.85, 0.95],
        ]
    )
    # Text -> image: the other image scores higher for t0 (0.15 > 0.1), t2, t5 (0.9 > 0.6), t6: 4 misses at R@1.
    got = retrieval_recall(scores, torch.tensor(t2i))
    assert set(got) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    assert got == pytest.approx(
        {"i2t_r1": 0.5, "i2t_r5": 1.0, "i2t_r10": 1.0, "t2i_r1": 0.6, "t2i_r5": 1.0, "t2i_r10": 1.0}
    )


def test_ties_count_against_the_ground_truth() -> None:
    # Constant scores: every positive ties with a wrong candidate, which is ranked ahead of it.
    flat = retrieval_recall(torch.full((2, 2), 0.5), [0, 1], ks=(1, 2))
    assert flat == {"i2t_r1": 0.0, "i2t_r2": 1.0, "t2i_r1": 0.0, "t2i_r2": 1.0}
    # Two texts of image 0 tied at its best score do not push each other down; a tied wrong text does.
    t2i = [0, 0, 1]
    assert retrieval_recall(torch.tensor([[0.7, 0.7, 0.6], [0.0, 0.0, 1.0]]), t2i, ks=(1,))["i2t_r1"] == 1.0
    assert retrieval_recall(torch.tensor([[0.7, 0.7, 0.7], [0.0, 0.0, 1.0]]), t2i, ks=(1,))["i2t_r1"] == 0.5


def _reference_ranks(scores: torch.Tensor, t2i: torch.Tensor) -> tuple[list[int], list[int]]:
    """Sort every row/column with wrong items first among equal scores; take the first ground-truth position."""
    i2t, t2img = [], []
    for i in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: (-float(scores[i, j]), bool(t2i[j] == i)))
        i2t.append(next(pos for pos, j in enumerate(order) if t2i[j] == i))
    for j in range(scores.shape[1]):
        order = sorted(range(scores.shape[0]), key=lambda i: (-float(scores[i, j]), i == int(t2i[j])))
        t2img.append(order.index(int(t2i[j])))
    return i2t, t2img


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_matches_a_sorting_reference_with_many_ties(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "_SLICE_ELEMENTS", 16)  # many small slices
    gen = torch.Generator().manual_seed(1)
    t2i = torch.cat([torch.arange(7), torch.randint(0, 7, (13,), generator=gen)])[torch.randperm(20, generator=gen)]
    scores = torch.randint(0, 4, (7, 20), generator=gen).to(dtype)  # 4 distinct values: ties everywhere
    i2t_ranks, t2i_ranks = _reference_ranks(scores, t2i)
    ks = (1, 2, 3, 5, 10)
    expected = {f"i2t_r{k}": sum(r < k for r in i2t_ranks) / 7 for k in ks}
    expected.update({f"t2i_r{k}": sum(r < k for r in t2i_ranks) / 20 for k in ks})
    assert retrieval_recall(scores, t2i, ks=ks) == pytest.approx(expected)


def _two_fold_matrix() -> tuple[torch.Tensor, list[int]]:
    """4 images x 8 texts, 2 each; fold A = images 0-1 / texts 0-3, fold B = images 2-3 / texts 4-7."""
    scores = torch.full((4, 8), 9.0)  # cross-fold pairs outscore everything: only the fold protocol hides them
    scores[:2, :4] = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.8, 0.1, 0.5, 0.6]])
    scores[2:, 4:] = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.3, 0.4, 0.7, 0.1]])
    return scores, [0, 0, 1, 1, 2, 2, 3, 3]


def test_coco_1k_averages_recall_over_folds() -> None:
    scores, t2i = _two_fold_matrix()
    # Fold A: image ranks [0 (0.9 top), 1 (0.8 above own best 0.6)] -> i2t R@1 0.5, R@2 1;
    #   text ranks [0, 1 (0.1 tie with 0.1), 0, 0] -> t2i R@1 0.75, R@2 1.
    # Fold B: image ranks [2 (0.9, 0.8 above own best 0.2), 0] -> i2t R@1 0.5, R@2 0.5, R@3 1;
    #   text ranks [1, 1, 1, 1] (0.3 > 0.1, 0.4 > 0.2, 0.9 > 0.7, 0.8 > 0.1) -> t2i R@1 0, R@2 1.
    expected = {"i2t_r1": 0.5, "i2t_r2": 0.75, "i2t_r3": 1.0, "t2i_r1": 0.375, "t2i_r2": 1.0, "t2i_r3": 1.0}
    assert coco_1k_recall(scores, t2i, ks=(1, 2, 3), folds=2) == pytest.approx(expected)
    # Over all 4 images, the 4 cross-fold texts at 9.0 push every positive below R@3.
    assert retrieval_recall(scores, t2i, ks=(3,))["i2t_r3"] == 0.0
    assert coco_1k_recall(scores, t2i, ks=(1, 3), folds=1) == retrieval_recall(scores, t2i, ks=(1, 3))


def test_coco_1k_assigns_texts_to_folds_by_their_image_not_their_position() -> None:
    scores, t2i = _two_fold_matrix()
    perm = torch.tensor([7, 0, 5, 2, 4, 1, 6, 3])
    shuffled = coco_1k_recall(scores[:, perm], torch.tensor(t2i)[perm], ks=(1, 2, 3), folds=2)
    assert shuffled == pytest.approx(coco_1k_recall(scores, t2i, ks=(1, 2, 3), folds=2))


def test_coco_1k_five_folds_of_consecutive_images() -> None:
    # 10 images, 1 text each; each fold is 2 images. Fold f's diagonal is correct except in fold 0 (swapped).
    scores = torch.eye(10)
    scores[:2, :2] = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    got = coco_1k_recall(scores, list(range(10)), ks=(1,), folds=5)
    # Fold 0: 0 both ways; folds 1-4: 1 -> mean 0.8.
    assert got == pytest.approx({"i2t_r1": 0.8, "t2i_r1": 0.8})


@pytest.mark.parametrize(
    ("scores", "t2i", "kwargs", "error", "message"),
    [
        (torch.zeros(2, 3), [0, 1], {}, ValueError, r"text_to_image shape \(2,\): expected \(3,\)"),
        (torch.zeros(2, 2), [0, 2], {}, ValueError, r"text_to_image\[1\]=2: expected an image index in \[0, 2\)"),
        (torch.zeros(2, 2), [0, -1], {}, ValueError, r"text_to_image\[1\]=-1"),
        (torch.zeros(3, 2), [0, 1], {}, ValueError, "image 2 has no text"),
        (torch.zeros(2, 2), [0.0, 1.0], {}, TypeError, "text_to_image dtype torch.float32"),
        (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), [0, 1], {}, ValueError, "1 NaN"),
        (torch.zeros(4), [0, 1, 2, 3], {}, ValueError, r"scores: shape \(4,\)"),
        (torch.zeros(2, 2), [0, 1], {"ks": (1, 0)}, ValueError, r"ks=\(1, 0\)"),
    ],
)
def test_retrieval_recall_rejects_bad_inputs(scores, t2i, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        retrieval_recall(scores, t2i, **kwargs)


def test_coco_1k_rejects_folds_not_dividing_images() -> None:
    with pytest.raises(ValueError, match=r"folds=3: expected a positive int dividing the number of images \(4\)"):
        coco_1k_recall(torch.zeros(4, 4), [0, 1, 2, 3], folds=3)
    with pytest.raises(ValueError, match="folds=0"):
        coco_1k_recall(torch.zeros(4, 4), [0, 1, 2, 3], folds=0)


def test_rerank_candidates_are_each_rows_and_each_columns_top_k() -> None:
    coarse = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.8, 0.4, 0.7], [0.6, 0.2, 0.1, 0.0]])
    chosen = retrieval.rerank_candidates(coarse, 1)
    # Row tops: (0,0) (1,1) (2,0); column tops: (0,0) (1,1) (0,2) (1,3).
    expected = torch.zeros(3, 4, dtype=torch.bool)
    expected[[0, 1, 2, 0, 1], [0, 1, 0, 2, 3]] = True
    assert torch.equal(chosen, expected)
    assert bool(retrieval.rerank_candidates(coarse, 4).all())  # k >= both sides: every pair
    with pytest.raises(ValueError, match="k=0"):
        retrieval.rerank_candidates(coarse, 0)


def test_rerank_scores_rank_the_rescored_pairs_first_in_their_exact_order() -> None:
    torch.manual_seed(0)
    coarse = torch.randn(6, 30).half()
    chosen = retrieval.rerank_candidates(coarse, 3)
    rows, cols = chosen.nonzero(as_tuple=True)
    exact = torch.randn(rows.numel()) - 50  # far below every coarse score: the lift must still put them first
    key = retrieval.rerank_scores(coarse, rows, cols, exact)
    assert torch.equal(key[~chosen], coarse.float()[~chosen])  # the rest keep their coarse scores
    for lines, kept in ((key, chosen), (key.T, chosen.T)):  # each image's texts, then each text's images
        for line, mine in zip(lines, kept, strict=True):
            assert (~mine).any() and bool((line[mine].min() > line[~mine]).all())
    lifted = key[rows, cols]
    assert torch.allclose(lifted - lifted[0], exact - exact[0])  # one offset: exact order and gaps kept
    every = torch.ones(6, 30).nonzero(as_tuple=True)
    reversed_ = retrieval.rerank_scores(coarse, *every, exact=-coarse.flatten().float())
    assert torch.equal(reversed_.argsort(dim=1), (-coarse.float()).argsort(dim=1))  # all re-scored: exact ranking
