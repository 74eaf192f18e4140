"""What a task reads from its DataModule and asks of an evaluator, declared (no `getattr` on undeclared names)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.processing.batches import RetrievalTexts


@runtime_checkable
class TaskData(Protocol):
    """Every task's DataModule: the processing its batches were made with (checkpoints and exports carry it) and the
    tokenizer (checkpoints carry its files). `PixelBertDataModule` provides both."""

    processing: ProcessingConfig
    tokenizer: Any


@runtime_checkable
class RetrievalData(Protocol):
    """Retrieval's DataModule besides the images: each evaluated split's texts."""

    @property
    def val_texts(self) -> RetrievalTexts: ...

    @property
    def test_texts(self) -> RetrievalTexts: ...


@runtime_checkable
class LabelledData(Protocol):
    """A classification DataModule: its class names, index = class."""

    labels: list[str]


class Evaluator(Protocol):
    """An evaluation over a whole split, fed batch by batch (see `PixelBertTask.configure_evaluator`)."""

    def reset(self) -> None: ...

    def update(self, batch: Any, stage: str) -> None: ...

    def compute(self, stage: str) -> dict[str, float]: ...
