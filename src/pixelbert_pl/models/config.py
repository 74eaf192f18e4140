"""`PixelBertConfig` and the named presets (`pixelbert_r50`, `pixelbert_x152`, `pixelbert_tiny`).

A preset is a function returning a config, registered by name like torchvision's or timm's models, so a
new variant is one decorated function. Every field can be overridden at `create_model(name, **overrides)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixelbert_pl.models.weights import weights_name
from pixelbert_pl.processing import ProcessingConfig


@dataclass
class PixelBertConfig:
    """Everything that fixes the architecture of a Pixel-BERT model (its inputs are `ProcessingConfig`'s).

    Transformer fields use `transformers.BertConfig`'s names so that a BERT checkpoint's config maps onto them.
    """

    # Visual path. The trunk is a torchvision ResNet/ResNeXt cut after stage `backbone_stages` (1-4), so its
    # stride is 2 ** (backbone_stages + 1): 32 for the paper's C5 features, less for small images.
    backbone: str = "resnet50"
    backbone_stages: int = 4
    # "frozen_batch_norm" for ImageNet-initialised trunks (the paper's setting: per-GPU batches of 800 px images
    # are too small for batch statistics); "batch_norm" or "group_norm" for trunks trained from scratch, which
    # a normalisation-free CNN does badly. Eval-mode batch norm uses running statistics, so evaluation stays
    # independent of the batch.
    backbone_norm: str = "frozen_batch_norm"
    visual_weights: str | None = None  # a WeightsEnum member is stored as "ResNet50_Weights.IMAGENET1K_V2"
    visual_kernel_size: int = 1
    visual_pool_size: int = 2
    # The paper gives pixel tokens no position (only s_v). When > 0, learned row and column embeddings for a
    # grid of up to this many tokens a side are added before sampling (ClipBERT's choice), off by default.
    visual_position_grid: int = 0
    # The paper's K: pixel tokens kept per image in pre-training; None disables sampling.
    pixel_sample_size: int | None = 100

    # Text path and the joint transformer (BERT).
    text_encoder: str | None = None
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # The paper reads the raw [CLS] vector (as SOHO does); ViLT and ClipBERT put BERT's tanh pooler on it.
    use_pooler: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.backbone_stages <= 4:
            raise ValueError(f"PixelBertConfig.backbone_stages={self.backbone_stages}: expected 1, 2, 3 or 4")
        if self.backbone_norm not in {"frozen_batch_norm", "batch_norm", "group_norm"}:
            raise ValueError(
                f"PixelBertConfig.backbone_norm={self.backbone_norm!r}: expected frozen_batch_norm, batch_norm or "
                "group_norm"
            )
        if self.visual_pool_size < 1:
            raise ValueError(f"PixelBertConfig.visual_pool_size={self.visual_pool_size}: expected >= 1 (1 = no pool)")
        if self.pixel_sample_size is not None and self.pixel_sample_size < 1:
            raise ValueError(f"PixelBertConfig.pixel_sample_size={self.pixel_sample_size}: expected >= 1 or None")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PixelBertConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        self.visual_weights = weights_name(self.visual_weights)

    @property
    def backbone_stride(self) -> int:
        return 2 ** (self.backbone_stages + 1)

    @property
    def token_stride(self) -> int:
        """Input pixels per visual token along one side (trunk stride x pool size)."""
        return self.backbone_stride * self.visual_pool_size

    def replace(self, **overrides: object) -> PixelBertConfig:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown PixelBertConfig field(s) {unknown}; valid fields: {sorted(self.to_dict())}")
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> PixelBertConfig:
        return cls().replace(**values)


_PRESETS: dict[str, Callable[[], PixelBertConfig]] = {}
_PRESET_PROCESSING: dict[str, ProcessingConfig] = {}


def register_preset(
    fn: Callable[[], PixelBertConfig] | None = None, *, processing: ProcessingConfig | None = None
) -> Any:
    """Register a preset under its function name (the timm/torchvision habit), with the preprocessing it is meant
    for (`preset_processing`): `@register_preset` or `@register_preset(processing=ProcessingConfig(...))`."""

    def register(fn: Callable[[], PixelBertConfig]) -> Callable[[], PixelBertConfig]:
        _PRESETS[fn.__name__] = fn
        _PRESET_PROCESSING[fn.__name__] = processing or ProcessingConfig()
        return fn

    return register if fn is None else register(fn)


def list_models() -> list[str]:
    return sorted(_PRESETS)


def get_config(name: str, **overrides: object) -> PixelBertConfig:
    if name not in _PRESETS:
        raise KeyError(f"unknown Pixel-BERT preset {name!r}; available: {list_models()}")
    return _PRESETS[name]().replace(**overrides)


def preset_processing(name: str) -> ProcessingConfig:
    """The preprocessing a preset is meant for, where no DataModule gives one (a model built by hand)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown Pixel-BERT preset {name!r}; available: {list_models()}")
    return _PRESET_PROCESSING[name]


@register_preset(processing=ProcessingConfig(image_min_size=800, image_max_size=1333))
def pixelbert_r50() -> PixelBertConfig:
    """The paper's main model: ResNet-50 (C5, stride 32) -> 1x1 conv 2048->768 -> 2x2 max-pool, BERT-base."""
    return PixelBertConfig(backbone="resnet50")


@register_preset(processing=ProcessingConfig(image_min_size=600, image_max_size=1000))
def pixelbert_x152() -> PixelBertConfig:
    """ResNeXt-152 32x8d, fed 600/1000 images ("considering GPU memory usage"); torchvision ships no weights."""
    return PixelBertConfig(backbone="resnext152_32x8d")


@register_preset(processing=ProcessingConfig(tokenizer=None, image_min_size=96, image_max_size=96, max_text_length=24))
def pixelbert_tiny() -> PixelBertConfig:
    """A model small enough to train on a CPU: for tests, the demo and the ablation.

    A one-block-per-stage ResNet cut after stage 2 (stride 8) then the 2x2 pool gives one token per 16 px, so on
    96 px ShapesWorld scenes a shape spans several of the 6x6 tokens.
    """
    return PixelBertConfig(
        backbone="resnet_tiny",
        backbone_stages=2,
        backbone_norm="batch_norm",
        pixel_sample_size=24,
        vocab_size=128,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=64,
    )


__all__ = ["PixelBertConfig", "get_config", "list_models", "preset_processing", "register_preset"]
