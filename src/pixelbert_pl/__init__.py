"""pixelbert-pl: Pixel-BERT (Huang et al. 2020, arXiv 2004.00849) as PyTorch Lightning modules."""

# No Lightning below: loading and serving a model needs the base install only (Lightning is the `train` extra).
from pixelbert_pl.inference import Predictor
from pixelbert_pl.models import (
    PixelBertConfig,
    PixelBertModel,
    PixelBertOutput,
    create_model,
    get_config,
    list_models,
)
from pixelbert_pl.processing import ProcessingConfig, load_tokenizer
from pixelbert_pl.processing.processor import PixelBertProcessor

__version__ = "0.1.0"


__all__ = [
    "PixelBertConfig",
    "PixelBertModel",
    "PixelBertOutput",
    "PixelBertProcessor",
    "Predictor",
    "ProcessingConfig",
    "__version__",
    "create_model",
    "get_config",
    "list_models",
    "load_tokenizer",
]
