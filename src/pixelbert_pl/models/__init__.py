"""Pure-PyTorch Pixel-BERT (no Lightning): config and presets, the model, its heads, tokenizers."""

from pixelbert_pl.models.config import PixelBertConfig, get_config, list_models, register_preset
from pixelbert_pl.models.heads import ClassificationHead, ITMHead, MLMHead, NLVR2Head, RankHead, VQAHead
from pixelbert_pl.models.pixel_bert import PixelBertModel, PixelBertOutput
from pixelbert_pl.models.tokenizer import load_tokenizer, write_wordpiece_vocab
from pixelbert_pl.models.visual import PixelEncoder, PixelTokens


def create_model(name: str, **overrides: object) -> PixelBertModel:
    """Build a preset by name, any `PixelBertConfig` field overridden.

    `text_encoder` (HF name or local dir) loads BERT weights and takes the transformer's sizes from that
    checkpoint; `visual_weights` (torchvision enum name or local state_dict path) loads the trunk.
    """
    return PixelBertModel(get_config(name, **overrides))


__all__ = [
    "ClassificationHead",
    "ITMHead",
    "MLMHead",
    "NLVR2Head",
    "PixelBertConfig",
    "PixelBertModel",
    "PixelBertOutput",
    "PixelEncoder",
    "PixelTokens",
    "RankHead",
    "VQAHead",
    "create_model",
    "get_config",
    "list_models",
    "load_tokenizer",
    "register_preset",
    "write_wordpiece_vocab",
]
