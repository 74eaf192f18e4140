"""Pure-PyTorch Pixel-BERT (no Lightning): config and presets, the backbone, its heads and the task models."""

from pixelbert_pl.models.classification import PixelBertForImageTextClassification
from pixelbert_pl.models.config import PixelBertConfig, get_config, list_models, preset_processing, register_preset
from pixelbert_pl.models.heads import ClassificationHead, ITMHead, MLMHead, NLVR2Head, RankHead
from pixelbert_pl.models.nlvr2 import PixelBertForNLVR2
from pixelbert_pl.models.pixel_bert import PixelBertModel, PixelBertOutput
from pixelbert_pl.models.pretraining import PixelBertForPreTraining
from pixelbert_pl.models.question_answering import PixelBertForQuestionAnswering
from pixelbert_pl.models.retrieval import PixelBertForImageTextRetrieval
from pixelbert_pl.models.task_model import (
    PixelBertTaskModel,
    get_task_model,
    list_task_models,
    register_task_model,
)
from pixelbert_pl.models.visual import PixelEncoder, PixelTokens
from pixelbert_pl.processing import ProcessingConfig


def create_model(
    name: str, processing: ProcessingConfig | None = None, vocab_size: int | None = None, text_length_buckets: int = 1,
    **overrides: object,
) -> PixelBertModel:  # fmt: skip
    """Build a preset by name, any `PixelBertConfig` field overridden; `processing` defaults to the preset's.

    `text_encoder` (HF name or local dir) loads BERT weights and takes the transformer's sizes from that
    checkpoint; `visual_weights` (torchvision enum name or local state_dict path) loads the trunk. `vocab_size` is
    the tokenizer's: the model's (a text encoder's own included) must match it. `text_length_buckets`: the
    transformer runs in up to this many groups of rows of similar text length (`models/buckets.py`).
    """
    if text_length_buckets < 1:
        raise ValueError(f"text_length_buckets={text_length_buckets}: expected >= 1 (1 = one transformer call)")
    if vocab_size is not None and overrides.get("text_encoder") is None:
        overrides["vocab_size"] = vocab_size
    model = PixelBertModel(get_config(name, **overrides), processing or preset_processing(name))
    if vocab_size is not None and model.config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size={vocab_size} (from the tokenizer) differs from text_encoder "
                         f"{overrides.get('text_encoder')!r}'s {model.config.vocab_size}")  # fmt: skip
    model.text_length_buckets = text_length_buckets
    return model


__all__ = [
    "ClassificationHead",
    "ITMHead",
    "MLMHead",
    "NLVR2Head",
    "PixelBertConfig",
    "PixelBertForImageTextClassification",
    "PixelBertForImageTextRetrieval",
    "PixelBertForNLVR2",
    "PixelBertForPreTraining",
    "PixelBertForQuestionAnswering",
    "PixelBertModel",
    "PixelBertOutput",
    "PixelBertTaskModel",
    "PixelEncoder",
    "PixelTokens",
    "RankHead",
    "create_model",
    "get_config",
    "get_task_model",
    "list_models",
    "list_task_models",
    "preset_processing",
    "register_preset",
    "register_task_model",
]
