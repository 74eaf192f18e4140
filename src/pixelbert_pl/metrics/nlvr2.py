"""NLVR2 accuracy and consistency, as the official `nlvr2/eval/metrics.py` defines them (docs/paper_facts.md §6.3).

Predictions and labels may be bools, 0/1 (ints, numpy or tensor scalars) or the strings "True"/"False" in any
case (the official script compares lowercased strings); anything else is an error rather than a silent miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from pixelbert_pl.distributed import gather_lists


def _as_bool(value: Any, name: str, index: int) -> bool:
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy and torch scalars
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name}[{index}]={value!r}: expected True/False, 1/0 or 'True'/'False'")


def _correct(predictions: Sequence[Any], labels: Sequence[Any]) -> list[bool]:
    if len(predictions) != len(labels):
        raise ValueError(f"len(predictions)={len(predictions)}: expected len(labels)={len(labels)}")
    if len(labels) == 0:
        raise ValueError("labels is empty: expected at least one example")
    return [
        _as_bool(p, "predictions", i) == _as_bool(y, "labels", i)
        for i, (p, y) in enumerate(zip(predictions, labels, strict=True))
    ]


def nlvr2_group_key(identifier: str) -> str:
    """The consistency group of an example: its identifier with the pair_id field blanked.

    `split-set_id-pair_id-sentence_id`, e.g. "dev-850-0-0" -> "dev-850--0": one sentence judged against the
    different image pairs of its set. (Dropping the last field instead would give the image pair, not the group.)
    """
    fields = identifier.split("-") if isinstance(identifier, str) else []
    if len(fields) != 4:
        raise ValueError(f"identifier={identifier!r}: expected 'split-set_id-pair_id-sentence_id'")
    split, set_id, _, sentence_id = fields
    return f"{split}-{set_id}--{sentence_id}"


def nlvr2_accuracy(predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """Fraction in [0, 1] of examples whose prediction equals the label."""
    correct = _correct(predictions, labels)
    return sum(correct) / len(correct)


def nlvr2_consistency(identifiers: Sequence[str], predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """Fraction in [0, 1] of groups (see `nlvr2_group_key`) whose examples are all predicted correctly.

    Each identifier must appear once: a repeated one (e.g. from a padding DistributedSampler) is an error, since
    the official script, reading a dict, would keep only one prediction per identifier.
    """
    correct = _correct(predictions, labels)
    if isinstance(identifiers, str):
        raise ValueError(f"identifiers={identifiers!r}: expected a sequence of identifiers, not one string")
    if len(identifiers) != len(correct):
        raise ValueError(f"identifiers: {len(identifiers)} items; expected one per prediction ({len(correct)})")
    seen: set[str] = set()
    group_ok: dict[str, bool] = {}
    for identifier, ok in zip(identifiers, correct, strict=True):
        if identifier in seen:
            raise ValueError(f"identifier={identifier!r} appears more than once: expected unique identifiers")
        seen.add(identifier)
        key = nlvr2_group_key(identifier)
        group_ok[key] = group_ok.get(key, True) and ok
    return sum(group_ok.values()) / len(group_ok)


class NLVR2Metric(Metric):
    """Accuracy and consistency over an epoch, as fractions; under DDP every rank's examples are gathered first.

    Identifiers are strings, which torchmetrics cannot reduce, so they are kept per process and gathered with
    `all_gather_object` in `compute`. Use a sampler that does not repeat examples: a repeat is an error.
    """

    full_state_update = False
    # States registered by add_state; declared so that mypy sees tensors rather than Module.__getattr__'s union.
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self._records: list[tuple[str, bool, bool]] = []

    def update(self, identifiers: Sequence[str], predictions: torch.Tensor, labels: torch.Tensor) -> None:
        preds, golds = predictions.bool().tolist(), labels.bool().tolist()
        self._records += list(zip(identifiers, preds, golds, strict=True))
        self.correct += int(sum(p == g for p, g in zip(preds, golds, strict=True)))
        self.total += len(golds)

    def compute(self) -> dict[str, torch.Tensor]:
        records = gather_lists(self._records)
        identifiers, preds, golds = zip(*records, strict=True) if records else ((), (), ())
        return {
            "accuracy": torch.tensor(nlvr2_accuracy(preds, golds)),
            "consistency": torch.tensor(nlvr2_consistency(identifiers, preds, golds)),
        }

    def reset(self) -> None:
        super().reset()
        self._records = []
