"""`PixelBertTaskModel`: the backbone plus one task's heads, as a plain `nn.Module` (transformers'
`ViltForQuestionAnswering` habit): `forward` on a batch, the task's `loss`, and the way from raw inputs to a batch
(`collate`) and from outputs to per-sample results (`postprocess`), so that `Predictor` and `pixelbert predict` serve
any registered task the same way. The Lightning tasks (`tasks/`) wrap one and keep only the loop, the metrics and
the optimiser recipe.

A task model of one's own subclasses it, names its inputs, implements the four hooks and registers:

    @register_task_model
    class PixelBertForShapeCount(PixelBertTaskModel):
        inputs = ("image", "text")
        ...

Saved task models are looked up here by name: nothing a file says is imported (timm's `register_model` habit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from pixelbert_pl.models import pretrained
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.models.registry import Registry
from pixelbert_pl.processing.items import ImageTextItem
from pixelbert_pl.processing.padding import BatchPadding

ModelT = TypeVar("ModelT", bound="type[PixelBertTaskModel]")


class PixelBertTaskModel(nn.Module):
    """A Pixel-BERT backbone (`model`) and a task's heads.

    Class attributes:
        inputs: what one sample holds, in order: "text" and one or more image inputs ("image"; NLVR2's "left",
            "right"). `Predictor.predict` takes them by these names.
        options: the keyword options `postprocess` takes (VQA's "top_k"); `Predictor.predict` refuses others.
    """

    inputs: tuple[str, ...] = ("image", "text")  # an instance may set its own (a model of two images a sample)
    options: ClassVar[tuple[str, ...]] = ()
    # Heads a checkpoint to start from should supply (retrieval's rank head from pre-training's ITM head): one that
    # supplies none of them is warned about, as they would start from random weights.
    init_heads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backbone: PixelBertModel) -> None:
        super().__init__()
        self.model = backbone

    # ------------------------------------------------------------------------------------------- hooks

    def task_args(self) -> dict[str, Any]:
        """The constructor's arguments besides the backbone, as JSON values (answer vocabulary, label names): what
        `save_pretrained` writes and `from_pretrained` passes back."""
        return {}

    def loss(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
        """The loss as named scalar parts, e.g. {"mlm": ..., "itm": ...} (a Lightning task weights and sums them)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(outputs, batch)")

    def collate(self, items: list[dict[str, Any]], padding: BatchPadding, pad_token_id: int) -> Any:
        """A batch from raw samples, each {"images": [(3, h, w) uint8, one per image input], "image_keys": [a key
        per image: equal keys are one image, encoded once], "input_ids": [token ids], "sample_id": ...}; `padding`
        and `pad_token_id` are the processor's."""
        raise NotImplementedError(f"{type(self).__name__} must implement collate(items, padding, pad_token_id)")

    def postprocess(self, outputs: Any, batch: Any, **options: Any) -> list[dict[str, Any]]:
        """One JSON-ready result per sample of `batch`, in order (no sample id: the caller adds it); `options`
        are the task's own (VQA's `top_k`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement postprocess(outputs, batch)")

    def init_heads_from(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy every head tensor whose name and shape match `state`'s (task-model keys); returns the names copied.
        Override to start a head from a differently shaped one (retrieval's rank head from ITM)."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("model.") and k in state}
        copied = [k for k, v in own.items() if v.shape == state[k].shape]
        self.load_state_dict({k: state[k] for k in copied}, strict=False)
        return copied

    # --------------------------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | os.PathLike[str], processor: Any = None) -> Path:
        """config.json (the backbone's, with this class's registered name and `task_args`), model.safetensors (the
        backbone), heads.safetensors (everything else) and, given a `PixelBertProcessor`, its files."""
        extra = {"task_model": task_model_name(type(self)), "task_args": self.task_args()}
        tokenizer = None if processor is None else processor.tokenizer
        directory = self.model.save_pretrained(directory, tokenizer, extra_config=extra)
        if processor is not None:
            processor.save_pretrained(directory)
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        pretrained.save_tensors(heads, directory / pretrained.HEADS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str]) -> PixelBertTaskModel:
        """The task model a `save_pretrained` directory (or Hub repo id) holds, of the registered class its config
        names (a subclass of `cls`); only the directory's files are read and nothing is imported from them."""
        directory = pretrained.resolve_directory(name_or_dir)
        source = str(directory / pretrained.CONFIG_NAME)
        name, task_args = pretrained.read_task(directory)
        model_cls = get_task_model(name, source)
        if not issubclass(model_cls, cls):
            raise TypeError(f"{source}: holds a {model_cls.__name__}, not a {cls.__name__}")
        backbone = PixelBertModel.from_pretrained(directory)
        model = build_saved_task_model(model_cls, backbone, task_args, source)
        heads = pretrained.load_tensors(directory / pretrained.HEADS_NAME)
        # Heads tied to the backbone (the MLM decoder to the word embeddings) are not in the file: tying restores them.
        tied = {k for k, v in model.state_dict().items() if not k.startswith("model.") and _shares_storage(v, backbone)}
        missing = sorted(set(model.state_dict()) - tied - {f"model.{k}" for k in backbone.state_dict()} - set(heads))
        if missing:
            raise ValueError(f"{directory / pretrained.HEADS_NAME}: lacks {missing[:5]}; export the model again")
        model.load_state_dict(heads, strict=False)
        return model.eval()


def build_saved_task_model(
    model_cls: type[PixelBertTaskModel], backbone: PixelBertModel, task_args: dict[str, Any], source: str
) -> PixelBertTaskModel:
    """`model_cls(backbone, **task_args)` with the arguments a file (`source`) holds: its constructor is the list of
    what the file may set, and a mismatch names the file."""
    try:
        return model_cls(backbone, **task_args)
    except TypeError as error:
        raise ValueError(f"{source}: task_args {sorted(task_args)} do not fit {model_cls.__name__}: {error}") from None


def _shares_storage(tensor: torch.Tensor, module: nn.Module) -> bool:
    pointer = tensor.untyped_storage().data_ptr()
    return any(p.untyped_storage().data_ptr() == pointer for p in module.parameters())


_TASK_MODELS: Registry[type[PixelBertTaskModel]] = Registry("task model", "pixelbert_pl.models.register_task_model")


def register_task_model(cls: ModelT, *aliases: str) -> ModelT:
    """Register a task model under its class name and `aliases`; returns it, so it works as a decorator."""
    return _TASK_MODELS.register(cls, *aliases)


def get_task_model(name: str, source: str = "") -> type[PixelBertTaskModel]:
    """The registered task model called `name`; `source` (the file that named it) is for the error message."""
    return _TASK_MODELS.get(name, source)


def task_model_name(cls: type[PixelBertTaskModel]) -> str:
    return _TASK_MODELS.name_of(cls)


def list_task_models() -> list[str]:
    return _TASK_MODELS.names()


def image_text_items(items: Sequence[dict[str, Any]]) -> list[ImageTextItem]:
    """Raw single-image samples (see `PixelBertTaskModel.collate`) as `collate_image_texts` takes them."""
    return [
        {"pixel_values": item["images"][0], "image_key": item["image_keys"][0], "input_ids": item["input_ids"]}
        for item in items
    ]
