"""`ProcessingConfig`: how raw images and texts become a model's inputs (resize, normalisation, tokenizer, text
length), kept apart from the architecture (`PixelBertConfig`) as Hugging Face keeps an image processor and a
tokenizer apart from a model's config.

One object serves training and serving: the DataModule builds it from its arguments, the CLI links it to the
task, checkpoints and exports carry it, and `Predictor` feeds a model what it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ProcessingConfig:
    """Image and text preprocessing.

    Args:
        tokenizer: HF name or local directory / vocab.txt of the BERT WordPiece tokenizer (None: the one shipped
            with a checkpoint or export).
        max_text_length: tokens per text, [CLS] and [SEP] included.
        image_min_size: the paper's resize, short side to `image_min_size` unless the long side would pass
            `image_max_size` (paper Sec. 4: 800).
        image_max_size: the cap on the long side in that resize (paper Sec. 4: 1333).
        size_divisor: both sides rounded down to a multiple of it (the CNN's stride).
        image_mean: per-channel mean normalising [0, 1] pixels (the trunk's ImageNet statistics).
        image_std: per-channel standard deviation normalising [0, 1] pixels (the trunk's ImageNet statistics).
        pad_long_sides: pad every batch to one of a fixed set of shapes (`PadShapes`: the square of the short side,
            and a landscape and a portrait shape for each of these long sides and the cap), and run the CNN on the
            padded batch, so compiled and CUDA graphs hold for a whole epoch; multiples of `size_divisor`.
            () pads each batch to its own maximum and runs the CNN once per real image size (exact, but one
            shape per size). Serving pads the same way, so the CNN sees what it was trained on.
    """

    tokenizer: str | None = "bert-base-uncased"
    max_text_length: int = 40
    image_min_size: int = 800
    image_max_size: int = 1333
    size_divisor: int = 32
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    pad_long_sides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            self.tokenizer = str(self.tokenizer)  # a Path from a caller; the checkpoint holds plain text
        if min(self.image_min_size, self.size_divisor) < 1 or self.image_max_size < self.image_min_size:
            raise ValueError(
                f"ProcessingConfig: image_min_size={self.image_min_size}, image_max_size={self.image_max_size}, "
                f"size_divisor={self.size_divisor}: expected 1 <= min_size <= max_size and size_divisor >= 1"
            )
        if self.max_text_length < 3:
            raise ValueError(f"ProcessingConfig.max_text_length={self.max_text_length}: expected >= 3 ([CLS] w [SEP])")
        self.image_mean = _three(self.image_mean, "image_mean")
        self.image_std = _three(self.image_std, "image_std")
        self.pad_long_sides = tuple(int(side) for side in self.pad_long_sides)
        divisor, cap = self.size_divisor, self.image_max_size
        bad = [side for side in self.pad_long_sides if side < divisor or side % divisor or side > cap]
        if bad:
            raise ValueError(
                f"ProcessingConfig.pad_long_sides={list(self.pad_long_sides)}: {bad} not multiples of "
                f"size_divisor={divisor} between {divisor} and image_max_size={cap}"
            )

    def replace(self, **overrides: Any) -> ProcessingConfig:
        unknown = sorted(set(overrides) - set(PROCESSING_FIELDS))
        if unknown:
            raise TypeError(f"unknown ProcessingConfig field(s) {unknown}; valid fields: {list(PROCESSING_FIELDS)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        lists = {name: list(getattr(self, name)) for name in ("image_mean", "image_std", "pad_long_sides")}
        return {**dataclasses.asdict(self), **lists}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "ProcessingConfig") -> ProcessingConfig:
        unknown = sorted(set(values) - set(PROCESSING_FIELDS))
        if unknown:
            raise ValueError(f"{source}: unknown processing field(s) {unknown}; expected {list(PROCESSING_FIELDS)}")
        return cls(**values)

    def check_same(self, other: ProcessingConfig, mine: str, theirs: str) -> None:
        """Raise, naming the fields, where `other` (`theirs`'s) differs: a model fed other inputs than it was trained
        or configured for gives wrong results without an error."""
        if differ := self.differences(other):
            raise ValueError(
                f"{mine}'s processing differs from {theirs}'s in "
                f"{ {k: {mine: a, theirs: b} for k, (a, b) in differ.items()} }: the model would be fed other inputs "
                f"than it was trained or configured for; give {theirs} {mine}'s settings"
            )

    def differences(self, other: ProcessingConfig) -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's)} where the two differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in PROCESSING_FIELDS if mine[k] != theirs[k]}


PROCESSING_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessingConfig))


def split_processing(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(architecture, processing) entries of a model config written when both lived in one dict (checkpoints and
    exports of earlier versions), so those still load."""
    architecture = {k: v for k, v in values.items() if k not in PROCESSING_FIELDS}
    processing = {k: v for k, v in values.items() if k in PROCESSING_FIELDS}
    return architecture, processing


def _three(values: Any, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"ProcessingConfig.{name}={list(values)}: expected one value per RGB channel")
    return values  # type: ignore[return-value]


def plain(value: Any) -> Any:
    """A config value as JSON, YAML and a checkpoint's hyper-parameters hold it: tuples as lists, mappings (a parsed
    config's namespaces included) as dicts, at any depth; so two spellings of one setting compare equal."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value
