"""pixelbert-pl: Pixel-BERT (Huang et al. 2020, arXiv 2004.00849) as PyTorch Lightning modules."""

from pixelbert_pl.models import (
    PixelBertConfig,
    PixelBertModel,
    PixelBertOutput,
    create_model,
    get_config,
    list_models,
    load_tokenizer,
)

__version__ = "0.1.0"

__all__ = [
    "PixelBertConfig",
    "PixelBertModel",
    "PixelBertOutput",
    "__version__",
    "create_model",
    "get_config",
    "list_models",
    "load_tokenizer",
]
