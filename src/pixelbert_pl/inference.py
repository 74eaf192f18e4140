"""`Predictor`: a trained Pixel-BERT task model behind a few calls, from a notebook, with no Trainer and no Lightning.

    predictor = Predictor.from_pretrained("exported/")          # or Predictor.from_checkpoint("last.ckpt")
    predictor.predict("scene.png", "a red circle")               # any registered task: its inputs, in order
    predictor.answer("scene.png", "what colour is the circle?")  # -> ("red", 0.93)
    predictor.match(image, "a red circle")                       # -> 0.88
    predictor.rank(images, captions)                             # -> (images x captions) scores
    predictor.nlvr2(left, right, "the left image has two squares")  # -> 0.71

Images may be paths, PIL images or tensors (uint8 (3, h, w), or float in [0, 1]); they go through the model's
`PixelBertProcessor` and its task model's own `collate`, `forward` and `postprocess`, the functions training and
`pixelbert predict` use, so a prediction here is what validation computes. Lists (and (n, 3, h, w) tensors) give
lists; one input, a path or a caption included, is one item and gives one result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pixelbert_pl.models import (
    PixelBertConfig,
    PixelBertForImageTextRetrieval,
    PixelBertForNLVR2,
    PixelBertForPreTraining,
    PixelBertForQuestionAnswering,
    PixelBertModel,
    PixelBertTaskModel,
    get_task_model,
    pretrained,
)
from pixelbert_pl.models.checkpoint_reader import CHECKPOINT_KEY, load_checkpoint
from pixelbert_pl.models.layouts import legacy_task, task_model_state
from pixelbert_pl.models.task_model import build_saved_task_model
from pixelbert_pl.processing import ProcessingConfig, load_tokenizer, tokenizer_from_files
from pixelbert_pl.processing.batches import RetrievalTexts
from pixelbert_pl.processing.padding import pad_images, real_sizes
from pixelbert_pl.processing.processor import ImageInput, PixelBertProcessor

DEFAULT_BATCH = 32  # samples per forward pass in `predict`


class Predictor:
    """Inference with a task model; `device` and `dtype` (bf16 / fp16 autocast, or None) as asked."""

    def __init__(
        self, model: PixelBertTaskModel, processor: PixelBertProcessor, device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:  # fmt: skip
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def processing(self) -> ProcessingConfig:
        return self.processor.config

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    # ---------------------------------------------------------------------------------------- loading

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], tokenizer: str | None = None, task: str | None = None,
        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
    ) -> Predictor:  # fmt: skip
        """A checkpoint `pixelbert fit` wrote (read with weights_only=True). The model is rebuilt from the config,
        processing and task model it records (a registered name; nothing is imported), and the tokenizer from its
        files; `tokenizer` (a name or path) replaces those. `task` names the Lightning task of a checkpoint from
        before task models were recorded that does not name it (`models/layouts.py`)."""
        checkpoint = load_checkpoint(path)
        source = str(path)
        saved = checkpoint.get(CHECKPOINT_KEY)
        if not isinstance(saved, dict):
            raise ValueError(f"{source}: no {CHECKPOINT_KEY!r} entry (model config and processing): not a checkpoint "
                             "`pixelbert fit` or a PixelBertTask wrote")  # fmt: skip
        if "task_model" in saved:
            name, task_args = str(saved["task_model"]), dict(saved.get("task_args") or {})
        else:  # layout 1: the Lightning task's name and hyper-parameters
            hparams = checkpoint.get("hyper_parameters") or {}
            named = task or hparams.get("_class_path")
            if named is None:
                raise ValueError(f"{source}: names no task (a Trainer run outside the CLI); pass task='VQATask' or the "
                                 "like")  # fmt: skip
            name, task_args = legacy_task(str(named), hparams, source)
        config = PixelBertConfig.from_dict(saved["config"]).replace(text_encoder=None, visual_weights=None)
        processing = ProcessingConfig.from_dict(saved["processing"], source)
        backbone = PixelBertModel(config, processing)
        model = build_saved_task_model(get_task_model(name, source), backbone, task_args, source)
        model.load_state_dict(task_model_state(checkpoint["state_dict"]))
        if tokenizer is not None:
            loaded = load_tokenizer(tokenizer)
        elif saved.get("tokenizer_files"):
            loaded = tokenizer_from_files(saved["tokenizer_files"], source=source)
        elif processing.tokenizer is not None:
            loaded = load_tokenizer(processing.tokenizer)
        else:
            raise ValueError(f"{source}: holds no tokenizer, and its processing names none: pass tokenizer=")
        return cls(model, PixelBertProcessor(processing, loaded), device, dtype)

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Predictor:
        """A directory written by `save_pretrained` (or `pixelbert-export`), or a Hub repo id. Its `config.json`
        names a registered task model (never imported from the file) and its arguments. Only the directory's files
        are read: weight sources and a tokenizer its config names are ignored."""
        directory = pretrained.resolve_directory(name_or_dir)
        model = PixelBertTaskModel.from_pretrained(directory)
        return cls(model, PixelBertProcessor.from_pretrained(directory), device, dtype)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """config.json (+ the task model's registered name and arguments), model.safetensors, heads.safetensors,
        processor_config.json and the tokenizer."""
        return self.model.save_pretrained(directory, self.processor)

    # ------------------------------------------------------------------------------------ any task

    @torch.inference_mode()
    def predict(self, *inputs: Any, batch_size: int = DEFAULT_BATCH, **named: Any) -> Any:
        """The task model's results (its `postprocess` rows: a dict per sample) for its `inputs` (e.g. image and
        text; NLVR2's left, right and text), given in that order or by name; other keyword arguments are the task's
        options (VQA's `top_k`). A single input goes with every row; lists must be as long as each other."""
        names = self.model.inputs
        if len(inputs) > len(names):
            raise TypeError(f"{len(inputs)} inputs given; {type(self.model).__name__} takes {list(names)}")
        columns = dict(zip(names, inputs, strict=False))
        for name in names:
            if name in named:
                if name in columns:
                    raise TypeError(f"{name} given twice (in order and by name)")
                columns[name] = named.pop(name)
        if missing := [name for name in names if name not in columns]:
            raise TypeError(f"missing {missing}: {type(self.model).__name__} takes {list(names)}")
        if unknown := sorted(set(named) - set(self.model.options)):
            raise TypeError(f"{type(self.model).__name__} takes no option {unknown}; its inputs are {list(names)}, "
                            f"its options {list(self.model.options)}")  # fmt: skip
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected an int >= 1")
        rows, single = _rows(**{n: _text_list(v, n) if n == "text" else _image_list(v, n) for n, v in columns.items()})
        images = [column for name, column in zip(names, rows, strict=True) if name != "text"]
        texts = rows[names.index("text")]
        resized: dict[str, torch.Tensor] = {}  # by label: an image given once for every row is resized once
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            items = []
            for i in range(start, min(start + batch_size, len(texts))):
                labelled = [column[i] for column in images]
                for label, image in labelled:
                    if label not in resized:
                        resized[label] = self.processor.image(image, label)
                items.append({"images": [resized[label] for label, _ in labelled], "sample_id": i,
                              "image_keys": [label for label, _ in labelled],
                              "input_ids": self.processor.token_ids(texts[i])})  # fmt: skip
            batch = self.model.collate(items, self.processor.padding, self.processor.pad_token_id).to(self.device)
            with self._autocast():
                results += self.model.postprocess(self.model(batch), batch, **named)
        return results[0] if single else results

    # ------------------------------------------------------------------------------------ the four tasks

    def answer(self, image: ImageInput | Sequence[ImageInput], question: str | Sequence[str], top_k: int = 1) -> Any:
        """VQA: (answer, probability), or the `top_k` best as a list, per question (one image per question)."""
        model = self._expect(PixelBertForQuestionAnswering, "answer", "a VQA model")
        answers = len(model.answer_vocab)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= answers:
            raise ValueError(f"top_k={top_k!r}: expected 1..{answers}, the number of answers this model knows")
        _rows(image=_image_list(image, "image"), question=_text_list(question, "question"))  # errors name these
        results = self.predict(image, question, top_k=top_k)

        def pairs(result: dict[str, Any]) -> Any:
            return (result["answer"], result["score"]) if top_k == 1 else [tuple(a) for a in result["answers"]]

        return pairs(results) if isinstance(results, dict) else [pairs(r) for r in results]

    def match(self, image: ImageInput | Sequence[ImageInput], caption: str | Sequence[str]) -> Any:
        """Image-text matching probability from the pre-training ITM head, per (image, caption) pair."""
        model = self._expect(PixelBertForPreTraining, "match", "a pre-trained model with an ITM head")
        if model.itm_head is None:
            raise TypeError("match() needs an ITM head; this pre-training model was trained without one")
        _rows(image=_image_list(image, "image"), caption=_text_list(caption, "caption"))
        results = self.predict(image, caption)
        return results["match"] if isinstance(results, dict) else [r["match"] for r in results]

    def nlvr2(
        self, left: ImageInput | Sequence[ImageInput], right: ImageInput | Sequence[ImageInput],
        statement: str | Sequence[str],
    ) -> Any:  # fmt: skip
        """NLVR2: probability that the statement is true of the (left, right) image pair."""
        self._expect(PixelBertForNLVR2, "nlvr2", "an NLVR2 model")
        _rows(left=_image_list(left, "left"), right=_image_list(right, "right"),
              statement=_text_list(statement, "statement"))  # fmt: skip
        results = self.predict(left, right, statement)
        return results["score"] if isinstance(results, dict) else [r["score"] for r in results]

    @torch.inference_mode()
    def rank(self, images: ImageInput | Sequence[ImageInput], captions: str | Sequence[str]) -> torch.Tensor:
        """(images, captions) relevance scores, higher = better match: every image with every caption, as the
        retrieval evaluation scores them (rank head; ITM log-odds for a pre-trained model). One image or one
        caption counts as one: (1, captions) or (images, 1) scores."""
        model = self.model
        if not isinstance(model, PixelBertForImageTextRetrieval | PixelBertForPreTraining):
            raise TypeError(f"rank() needs a retrieval or pre-trained model; this is {type(model).__name__}")
        resized = [self.processor.image(image, label) for label, image in _image_list(images, "images")[0]]
        sizes = real_sizes(resized)
        pixel_values = pad_images(resized, shape=self.processor.padding.image_shape(sizes))[0].to(self.device)
        texts = _text_list(captions, "captions")[0]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.processing.max_text_length, padding=True,
                                 return_tensors="pt")  # fmt: skip
        ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].bool().to(self.device)
        with self._autocast():
            pixels = model.model.encode_pixels(pixel_values, image_sizes=sizes)
            if isinstance(model, PixelBertForImageTextRetrieval):
                split = RetrievalTexts(ids, mask, torch.zeros(len(texts), dtype=torch.long))
                return model.score_matrix(pixels, split, mask.sum(dim=1).cpu(), sizes).float()
            n, t = len(resized), len(texts)
            rows = torch.arange(n, device=self.device).repeat_interleave(t)
            out = model.model(ids.repeat(n, 1), mask.repeat(n, 1), pixel_tokens=pixels, image_index=rows,
                              outputs="cls")  # fmt: skip
            return model.match_log_odds(out.cls_output).view(n, t).cpu()

    # ---------------------------------------------------------------------------------- helpers

    def _expect(self, kind: type[PixelBertTaskModel], call: str, what: str) -> Any:
        if not isinstance(self.model, kind):
            raise TypeError(f"{call}() needs {what} ({kind.__name__}); this one is a {type(self.model).__name__} "
                            "(predict() serves any task)")  # fmt: skip
        return self.model

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def _image_list(images: Any, name: str) -> tuple[list[tuple[str, ImageInput]], bool]:
    """([(label for errors, image)], single): one path, PIL image or (3, h, w) tensor is one image, never a
    sequence of characters or rows; a list, a tuple or an (n, 3, h, w) tensor is a batch."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        items = list(images)
    elif isinstance(images, str | os.PathLike | Image.Image | torch.Tensor):
        return [(name, images)], True
    elif isinstance(images, list | tuple):
        items = list(images)
    else:
        raise TypeError(
            f"{name}: a {type(images).__name__}; expected a path, a PIL image, a (3, h, w) tensor or a list of them"
        )
    if not items:
        raise ValueError(f"{name}: no images; give at least one")
    return [(f"{name}[{i}]", image) for i, image in enumerate(items)], False


def _text_list(texts: Any, name: str) -> tuple[list[str], bool]:
    """(texts, single): one string is one text, never a sequence of characters."""
    if isinstance(texts, str):
        return [texts], True
    if not isinstance(texts, list | tuple) or not texts:
        raise ValueError(f"{name}: {texts!r:.80}; expected a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}]: a {type(text).__name__}; expected a string")
    return list(texts), False


def _rows(**columns: tuple[list[Any], bool]) -> tuple[list[list[Any]], bool]:
    """Each (items, single) column as one list, row by row, and whether every column was a single input: a single
    input goes with every row; lists must be as long as each other."""
    lengths = {name: len(items) for name, (items, single) in columns.items() if not single}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"lists of different lengths {lengths}: give one item per row, or a single item (not a list) for all"
        )
    n = next(iter(lengths.values()), 1)
    return [items * n if single else items for items, single in columns.values()], not lengths
