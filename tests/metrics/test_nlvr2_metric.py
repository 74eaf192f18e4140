"""NLVR2 accuracy and consistency on hand-made groups, with the official grouping by (split, set, sentence)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelbert_pl.metrics import nlvr2_accuracy, nlvr2_consistency, nlvr2_group_key


@pytest.mark.parametrize(
    ("identifier", "key"),
    [("dev-850-0-0", "dev-850--0"), ("dev-850-3-1", "dev-850--1"), ("test1-12-2-0", "test1-12--0")],
)
def test_group_key_blanks_the_pair_id(identifier: str, key: str) -> None:
    assert nlvr2_group_key(identifier) == key


def test_consistency_groups_one_sentence_across_image_pairs() -> None:
    rows = [
        # group dev-850--0: sentence 0 on pairs 0-3, all correct -> consistent
        ("dev-850-0-0", True, True),
        ("dev-850-1-0", False, False),
        ("dev-850-2-0", True, True),
        ("dev-850-3-0", False, False),
        # group dev-850--1: one wrong on pair 1 -> inconsistent
        ("dev-850-0-1", True, True),
        ("dev-850-1-1", True, False),
        # group dev-851--0: a single correct example -> consistent
        ("dev-851-0-0", False, False),
    ]
    ids, preds, labels = zip(*rows, strict=True)
    # 2 of 3 groups. Grouping by image pair (dropping the last field) would give 4 of 5 pairs instead.
    assert nlvr2_consistency(ids, preds, labels) == pytest.approx(2 / 3)
    assert nlvr2_accuracy(preds, labels) == pytest.approx(6 / 7)
    all_right = nlvr2_consistency(ids, labels, labels)
    assert all_right == 1.0
    assert nlvr2_consistency(ids, [not y for y in labels], labels) == 0.0


def test_prediction_and_label_formats() -> None:
    labels = ["True", "False", "True", "False", "True"]
    preds = ["true", 0, torch.tensor(1), np.bool_(False), False]  # last one wrong
    assert nlvr2_accuracy(preds, labels) == pytest.approx(4 / 5)
    assert nlvr2_accuracy(torch.tensor([1, 0, 1]), [True, False, False]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nlvr2_accuracy(["yes"], ["True"]), "predictions\\[0\\]='yes'"),
        (lambda: nlvr2_accuracy([1], [2]), "labels\\[0\\]=2"),
        (lambda: nlvr2_accuracy([1, 0], [1]), "len\\(predictions\\)=2: expected len\\(labels\\)=1"),
        (lambda: nlvr2_accuracy([], []), "labels is empty"),
        (lambda: nlvr2_consistency(["dev-1-0-0"], [1, 0], [1, 0]), "identifiers: 1 items"),
        (lambda: nlvr2_consistency("dev-1-0-0", [1], [1]), "not one string"),
        (lambda: nlvr2_consistency(["dev-1-0"], [1], [1]), "identifier='dev-1-0'"),
        (lambda: nlvr2_consistency(["dev-1-0-0", "dev-1-0-0"], [1, 1], [1, 1]), "'dev-1-0-0' appears more"),
    ],
)
def test_errors_name_the_bad_value(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
