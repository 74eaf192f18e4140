"""One scale for every metric: VQA accuracy and retrieval recall are fractions in [0, 1], like NLVR2's and ITM's,
so a perfect prediction scores exactly 1.0, never 100."""

from __future__ import annotations

import pytest
import torch

from pixelbert_pl.metrics import VQAAccuracy, coco_1k_recall, retrieval_recall


def test_vqa_accuracy_and_recall_are_fractions_perfect_is_exactly_one() -> None:
    perfect_vqa = VQAAccuracy()
    perfect_vqa.update(["yes", "2", "red"], [["yes"] * 10, ["2"] * 10, ["red"] * 4 + ["blue"] * 6])
    assert perfect_vqa.compute()["overall"].item() == 1.0
    # 1, 0.6 (2 of 10 annotators agree), 0 -> 1.6 / 3.
    partial_vqa = VQAAccuracy()
    partial_vqa.update(["yes", "2", "no"], [["yes"] * 10, ["2"] * 2 + ["3"] * 8, ["yes"] * 10])
    assert partial_vqa.compute()["overall"].item() == pytest.approx(1.6 / 3)

    t2i = [0, 0, 1, 1, 2, 2]  # 3 images, 2 texts each
    perfect = retrieval_recall(torch.eye(3).repeat_interleave(2, dim=1), t2i)
    assert perfect == {f"{d}_r{k}": 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert sum(perfect.values()) == 6.0  # rsum: six fractions, at most 6
    # Image 2's texts score highest for every image: images 0 and 1 rank their own texts behind them (rank 2),
    # image 2 hits. Texts 0-3 rank their own image first; texts 4-5 tie across all images, which counts against
    # them (rank 2).
    scores = torch.eye(3).repeat_interleave(2, dim=1)
    scores[:, 4:] = 2.0
    partial = retrieval_recall(scores, t2i, ks=(1, 2, 3))
    assert partial == pytest.approx(
        {"i2t_r1": 1 / 3, "i2t_r2": 1 / 3, "i2t_r3": 1.0, "t2i_r1": 4 / 6, "t2i_r2": 4 / 6, "t2i_r3": 1.0}
    )
    assert coco_1k_recall(torch.eye(4), [0, 1, 2, 3], ks=(1,), folds=2) == {"i2t_r1": 1.0, "t2i_r1": 1.0}
