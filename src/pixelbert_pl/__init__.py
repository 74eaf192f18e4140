"""pixelbert-pl: Pixel-BERT (Huang et al. 2020, arXiv 2004.00849) as PyTorch Lightning modules."""

from pixelbert_pl.models import (
    PixelBertConfig,
    PixelBertModel,
    PixelBertOutput,
    create_model,
    get_config,
    list_models,
)
from pixelbert_pl.processing import ProcessingConfig, load_tokenizer

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `pixelbert_pl.Predictor` loads the tasks (and Lightning) only when asked for: `import pixelbert_pl` stays light.
    if name == "Predictor":
        from pixelbert_pl.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'pixelbert_pl' has no attribute {name!r}")


__all__ = [
    "PixelBertConfig",
    "PixelBertModel",
    "PixelBertOutput",
    "Predictor",
    "ProcessingConfig",
    "__version__",
    "create_model",
    "get_config",
    "list_models",
    "load_tokenizer",
]
