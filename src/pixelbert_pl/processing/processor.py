"""`PixelBertProcessor`: raw images and texts to a model's inputs, as its `ProcessingConfig` says (the role of
transformers' `ViltProcessor`): decoding, the resize, the padded shapes, the tokenizer and the text length. The
DataModules and `Predictor` both build their inputs through one, so training and serving cannot drift.

    processor = PixelBertProcessor.from_pretrained("exported/")
    processor.image("scene.png")                  # (3, h, w) uint8, resized as in training
    processor.token_ids("what colour is it?")     # [CLS] ... [SEP] ids, cut at max_text_length
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.processing.config import ProcessingConfig
from pixelbert_pl.processing.images import ImageTransform, load_image
from pixelbert_pl.processing.padding import BatchPadding
from pixelbert_pl.processing.shapes import PadShapes
from pixelbert_pl.processing.tokenizer import load_tokenizer

ImageInput = str | os.PathLike[str] | Image.Image | torch.Tensor
PROCESSOR_NAME = "processor_config.json"
# Where exports written before the processor had a file of its own kept the processing: config.json's "processing".
_MODEL_CONFIG_NAME = "config.json"


class PixelBertProcessor:
    """Images and texts as a model trained under `config` was fed them.

    Args:
        config: the resize, normalisation (applied on the model's device), padded shapes and text length.
        tokenizer: the tokenizer itself; `from_config` loads the one `config.tokenizer` names.
        text_pad_multiple: texts padded to a multiple of this many tokens (a training-speed setting: the same
            predictions whatever it is).
    """

    def __init__(self, config: ProcessingConfig, tokenizer: PreTrainedTokenizerBase, text_pad_multiple: int = 1):
        self.config = config
        self.tokenizer = tokenizer
        # uint8 pixels leave the processor; the model normalises them on its device, in training as in serving.
        self.transform = ImageTransform.from_config(config, normalize=False)
        # Images padded to the fixed shapes the model was trained on, if any: its CNN then sees the same padding.
        self.padding = BatchPadding(PadShapes.from_config(config), text_pad_multiple)

    @classmethod
    def from_config(cls, config: ProcessingConfig, text_pad_multiple: int = 1) -> PixelBertProcessor:
        if config.tokenizer is None:
            raise ValueError("ProcessingConfig.tokenizer is None: name a tokenizer, or load a saved processor")
        return cls(config, load_tokenizer(config.tokenizer), text_pad_multiple)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # ------------------------------------------------------------------------------------------ inputs

    def image(self, image: ImageInput, name: str = "image") -> torch.Tensor:
        """One image (a path, a PIL image, or a (3, h, w) tensor: uint8, or float in [0, 1]) resized as in
        training: (3, h, w) uint8. `name` is what errors call it."""
        if isinstance(image, torch.Tensor):
            image = _tensor_to_pil(image, name)
        elif isinstance(image, str | os.PathLike):
            image = load_image(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"{name}: a {type(image).__name__}; expected a path, a PIL image or a (3, h, w) tensor")
        return self.transform(image)

    def token_ids(self, text: str) -> list[int]:
        """[CLS] text [SEP] ids, cut at `max_text_length` as in training."""
        if not isinstance(text, str):
            raise TypeError(f"a {type(text).__name__} to tokenise; expected a string")
        ids = self.tokenizer(text, truncation=True, max_length=self.config.max_text_length)["input_ids"]
        return cast(list[int], ids)

    # ------------------------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """`processor_config.json` and the tokenizer's files; the saved config names no tokenizer: the
        directory's own files are it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        config = self.config.replace(tokenizer=None).to_dict()
        (directory / PROCESSOR_NAME).write_text(json.dumps({"processing": config}, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> PixelBertProcessor:
        """A processor from a `save_pretrained` directory (an export). Only its files are read: the tokenizer is
        the directory's, whatever tokenizer its config names."""
        directory = Path(directory).expanduser()
        path = directory / PROCESSOR_NAME
        if not path.is_file():
            path = directory / _MODEL_CONFIG_NAME  # an export of an earlier version (models/layouts.py, layout 2)
        document = _read_json(path)
        processing = document.get("processing") if isinstance(document, dict) else None
        if not isinstance(processing, dict):
            raise ValueError(f"{path}: no 'processing' object; expected the file save_pretrained writes")
        if not ((directory / "vocab.txt").is_file() or (directory / "tokenizer.json").is_file()):
            raise FileNotFoundError(
                f"{directory}: no tokenizer files (vocab.txt or tokenizer.json); a saved processor carries its own "
                "and reads no other: save it again with save_pretrained or pixelbert-export"
            )
        config = ProcessingConfig.from_dict(processing, str(path)).replace(tokenizer=str(directory))
        return cls(config, load_tokenizer(directory))


def _tensor_to_pil(image: torch.Tensor, name: str) -> Image.Image:
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"{name}: a tensor of shape {tuple(image.shape)}; expected one image (3, h, w), channels first "
            "(a batch goes as a list or an (n, 3, h, w) tensor)"
        )
    if image.is_floating_point():
        if not (finite := torch.isfinite(image)).all():
            raise ValueError(
                f"{name}: a {image.dtype} tensor {tuple(image.shape)} with {int((~finite).sum())} NaN or infinite "
                "values; expected pixels in [0, 1] (or uint8 0-255): check what produced it"
            )
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return cast(Image.Image, F.to_pil_image(image.cpu()))  # torchvision leaves its return unannotated


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {PROCESSOR_NAME}; expected a directory save_pretrained wrote")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error}); save or download it again") from None
