"""Preprocessing (a leaf: imports nothing else of the package): `ProcessingConfig`, the image resize and
normalisation, and the tokenizers. The model config, the DataModules, checkpoints, exports and `Predictor` all
read one `ProcessingConfig`."""

from pixelbert_pl.processing.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PROCESSING_FIELDS,
    ProcessingConfig,
    split_processing,
)
from pixelbert_pl.processing.images import (
    ImageTransform,
    UnreadableImageError,
    load_image,
    normalize_pixels,
    resize_shape,
    to_rgb,
)
from pixelbert_pl.processing.tokenizer import (
    TOKENIZER_FILES,
    basic_split,
    load_tokenizer,
    tokenizer_files,
    tokenizer_from_files,
    write_wordpiece_vocab,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROCESSING_FIELDS",
    "TOKENIZER_FILES",
    "ImageTransform",
    "ProcessingConfig",
    "UnreadableImageError",
    "basic_split",
    "load_image",
    "load_tokenizer",
    "normalize_pixels",
    "resize_shape",
    "split_processing",
    "to_rgb",
    "tokenizer_files",
    "tokenizer_from_files",
    "write_wordpiece_vocab",
]
