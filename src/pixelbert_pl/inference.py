"""`Predictor`: a trained Pixel-BERT behind four calls, from a notebook, with no Trainer.

    predictor = Predictor.from_pretrained("exported/")          # or Predictor.from_checkpoint("last.ckpt")
    predictor.answer("scene.png", "what colour is the circle?")  # -> ("red", 0.93)
    predictor.match(image, "a red circle")                       # -> 0.88
    predictor.rank(images, captions)                             # -> (images x captions) scores
    predictor.nlvr2(left, right, "the left image has two squares")  # -> 0.71

Images may be paths, PIL images or tensors (uint8 (3, h, w), or float in [0, 1]); they go through the resize the
model was trained with, and the batches go through the same collate functions and task forwards as training, so a
prediction here is what validation computes. Lists (and (n, 3, h, w) tensors) give lists; one input, a path or a
caption included, is one item and gives one result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from pixelbert_pl.models import PixelBertModel, pretrained
from pixelbert_pl.processing import (
    ImageTransform,
    ProcessingConfig,
    load_tokenizer,
    split_processing,
    tokenizer_from_files,
)
from pixelbert_pl.processing.batches import RetrievalTexts, collate_nlvr2, collate_vqa
from pixelbert_pl.processing.config import plain
from pixelbert_pl.processing.images import load_image
from pixelbert_pl.processing.padding import BatchPadding, pad_images, real_sizes
from pixelbert_pl.processing.shapes import PadShapes
from pixelbert_pl.tasks import NLVR2Task, PixelBertTask, PretrainTask, RetrievalTask, VQATask, get_task
from pixelbert_pl.tasks.base import CHECKPOINT_KEY, load_checkpoint
from pixelbert_pl.tasks.registry import task_name

ImageInput = str | os.PathLike[str] | Image.Image | torch.Tensor
# Arguments that rebuild the network or say where its weights came from: the saved config and files replace them,
# so loading reads no other file and downloads nothing.
_BUILD_ARGS = {"preset", "text_encoder", "visual_weights", "vocab_size", "model_overrides", "processing", "optimizer",
               "init_from", "channels_last", "compile"}  # fmt: skip
# Which task a checkpoint holds, by the head its state_dict has (for checkpoints that do not name their task).
_TASK_BY_HEAD = {"vqa_head.": VQATask, "nlvr2_head.": NLVR2Task, "rank_head.": RetrievalTask, "itm_head.": PretrainTask}


class Predictor:
    """Inference with a task's model and heads; `device` and `dtype` (bf16 / fp16 autocast, or None) as asked."""

    def __init__(
        self, task: PixelBertTask, tokenizer: Any, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> None:
        self.task = task.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.processing = task.model.processing
        # uint8 to the device; the model normalises there, as in training.
        self.transform = ImageTransform.from_config(self.processing, normalize=False)
        # Images padded to the fixed shapes the model was trained on, if any: its CNN then sees their padding.
        self.padding = BatchPadding(PadShapes.from_config(self.processing))

    # ---------------------------------------------------------------------------------------- loading

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], tokenizer: str | None = None, task: type[PixelBertTask] | None = None,
        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
    ) -> Predictor:  # fmt: skip
        """A Lightning checkpoint, as `pixelbert fit` writes it (read with weights_only=True). The task class is
        the registered one its hyper-parameters name (LightningCLI's `_class_path`), else found from its heads,
        unless given. The model is rebuilt from the config the checkpoint carries, and the tokenizer from its
        files; `tokenizer` (a name or path) replaces those, and is needed for checkpoints without them."""
        checkpoint = load_checkpoint(path)
        state = checkpoint["state_dict"]
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        # LightningCLI's subclass mode records how it built the task: its class path and its instantiator.
        class_path = hparams.pop("_class_path", None)
        hparams.pop("_instantiator", None)
        if task is None:
            task = _checkpoint_task(path, class_path, state)
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is not None:
            architecture, legacy = split_processing(saved["config"])
            processing = saved.get("processing") or hparams.get("processing") or legacy
            built = build_task(task, architecture, ProcessingConfig.from_dict(processing, str(path)), hparams)
        else:  # written without the fit loop (a bare torch.save of state_dict and hparams)
            built = task(**hparams)
        built.load_state_dict(state)
        if tokenizer is not None:
            loaded = load_tokenizer(tokenizer)
        elif saved is not None and saved.get("tokenizer_files"):
            loaded = tokenizer_from_files(saved["tokenizer_files"], source=str(path))
        else:
            name = built.model.processing.tokenizer or built.model.config.text_encoder
            if name is None:
                raise ValueError(f"{path}: holds no tokenizer, and its config names none: pass tokenizer=")
            loaded = load_tokenizer(name)
        return cls(built, loaded, device, dtype)

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Predictor:
        """A directory written by `save_pretrained` (or the `pixelbert-export` command), or a Hub repo id. Its
        `config.json` names a registered task (never imported from the file) and plain constructor arguments. Only
        the directory's files are read: weight sources and a tokenizer its config names are ignored."""
        directory = pretrained.resolve_directory(name_or_dir)
        document = pretrained.read_config(directory)
        source = str(directory / pretrained.CONFIG_NAME)
        if "task" not in document:
            raise ValueError(f"{source}: holds a bare model (no 'task'); export a task checkpoint")
        task_cls = get_task(str(document["task"]), source)
        task_args = document.get("task_args", {})
        if not isinstance(task_args, dict) or (refused := sorted(set(task_args) & _BUILD_ARGS)):
            raise ValueError(f"{source}: task_args may not set {refused if isinstance(task_args, dict) else task_args}")
        if not pretrained.has_tokenizer(directory):
            raise FileNotFoundError(
                f"{directory}: no tokenizer files (vocab.txt or tokenizer.json); an export carries its own and reads "
                "no other: write it with Predictor.save_pretrained or pixelbert-export"
            )
        model = PixelBertModel.from_pretrained(directory)
        task = build_task(task_cls, model.config.to_dict(), model.processing, task_args)
        heads = pretrained.load_tensors(directory / pretrained.HEADS_NAME)
        weights = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **heads}
        # Tied to the word embeddings (restored by the tie) or metric state: nothing the files need to hold.
        missing = [k for k in task.state_dict() if k not in weights and not k.startswith("metrics.")]
        if [k for k in missing if k != "mlm_head.decoder.weight"]:
            raise ValueError(f"{directory}: {pretrained.HEADS_NAME} or {pretrained.WEIGHTS_NAME} lacks {missing[:5]}")
        task.load_state_dict(weights, strict=False)
        # The directory's own files, whatever tokenizer its config names: loading reads nothing else.
        return cls(task, load_tokenizer(directory), device, dtype)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """config.json (+ the task's registered name and its arguments), model.safetensors, heads.safetensors and
        the tokenizer."""
        hparams = {k: plain(v) for k, v in self.task.hparams.items() if k not in _BUILD_ARGS and not k.startswith("_")}
        directory = self.task.model.save_pretrained(
            directory, self.tokenizer, extra_config={"task": task_name(type(self.task)), "task_args": hparams}
        )
        heads = {k: v for k, v in self.task.state_dict().items() if not k.startswith(("model.", "metrics."))}
        pretrained.save_tensors(heads, directory / pretrained.HEADS_NAME)
        return directory

    # ------------------------------------------------------------------------------------ inputs

    def image(self, image: ImageInput, name: str = "image") -> torch.Tensor:
        """One image, resized as in training: (3, h, w) uint8. `name` is what errors call it."""
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] not in (1, 3):
                raise ValueError(
                    f"{name}: a tensor of shape {tuple(image.shape)}; expected one image (3, h, w), channels first "
                    "(a batch goes as a list or an (n, 3, h, w) tensor)"
                )
            if image.is_floating_point():
                if not (finite := torch.isfinite(image)).all():
                    raise ValueError(
                        f"{name}: a {image.dtype} tensor {tuple(image.shape)} with {int((~finite).sum())} NaN or "
                        "infinite values; expected pixels in [0, 1] (or uint8 0-255): check what produced it"
                    )
                image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
            image = cast(Image.Image, F.to_pil_image(image.cpu()))  # torchvision leaves its return unannotated
        elif isinstance(image, str | os.PathLike):
            image = load_image(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"{name}: a {type(image).__name__}; expected a path, a PIL image or a (3, h, w) tensor")
        return self.transform(image)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, truncation=True, max_length=self.processing.max_text_length)["input_ids"]

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def _to_device(self, batch: Any) -> Any:
        fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        moved = {k: v.to(self.device) for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(batch, **moved)

    # ------------------------------------------------------------------------------------ tasks

    @torch.inference_mode()
    def answer(self, image: ImageInput | Sequence[ImageInput], question: str | Sequence[str], top_k: int = 1) -> Any:
        """VQA: (answer, probability), or the `top_k` best as a list, per question (one image per question)."""
        if not isinstance(self.task, VQATask):
            raise TypeError(f"answer() needs a VQA model; this one is a {type(self.task).__name__}")
        answers = len(self.task.answer_vocab)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= answers:
            raise ValueError(f"top_k={top_k!r}: expected 1..{answers}, the number of answers this model knows")
        (images, questions), single = _rows(
            image=_image_list(image, "image"), question=_text_list(question, "question")
        )
        # Keyed by label: one image asked several questions is resized once and goes through the CNN once.
        resized = {label: self.image(im, label) for label, im in images}
        items: list[dict[str, Any]] = [
            {"pixel_values": resized[label], "image_key": label, "input_ids": self.token_ids(q), "targets": {},
             "answers": [], "answer_type": None, "question_id": i}
            for i, ((label, _), q) in enumerate(zip(images, questions, strict=True))
        ]  # fmt: skip
        batch = self._to_device(collate_vqa(items, answers, self.tokenizer.pad_token_id, self.padding))
        with self._autocast():
            probabilities = self.task(batch).float().sigmoid()  # trained with binary cross-entropy
        scores, labels = probabilities.topk(top_k, dim=-1)
        results: list[Any] = [  # each row's (answer, probability) list, then its first pair when top_k == 1
            [(self.task.answer_vocab[label], score) for label, score in zip(row_labels, row_scores, strict=True)]
            for row_labels, row_scores in zip(labels.tolist(), scores.tolist(), strict=True)
        ]
        results = [r[0] if top_k == 1 else r for r in results]
        return results[0] if single else results

    @torch.inference_mode()
    def match(self, image: ImageInput | Sequence[ImageInput], caption: str | Sequence[str]) -> Any:
        """Image-text matching probability from the pre-training ITM head, per (image, caption) pair."""
        head = getattr(self.task, "itm_head", None)
        if head is None:
            raise TypeError(
                f"match() needs a model with an ITM head (pre-training); this is {type(self.task).__name__}"
            )
        (images, captions), single = _rows(image=_image_list(image, "image"), caption=_text_list(caption, "caption"))
        pixel_values, sizes = self._images(images)
        ids, mask = self._texts(captions)
        with self._autocast():
            out = self.task.model(ids, mask, pixel_values=pixel_values, image_sizes=sizes, outputs="cls")
            probabilities = head(out.cls_output).float().softmax(-1)[:, 1]
        values = probabilities.tolist()
        return values[0] if single else values

    @torch.inference_mode()
    def rank(self, images: ImageInput | Sequence[ImageInput], captions: str | Sequence[str]) -> torch.Tensor:
        """(images, captions) relevance scores, higher = better match: every image with every caption, as the
        retrieval evaluation scores them (rank head; ITM log-odds for a pre-trained model). One image or one
        caption counts as one: (1, captions) or (images, 1) scores."""
        pixel_values, sizes = self._images(_image_list(images, "images")[0])
        texts_in = _text_list(captions, "captions")[0]
        ids, mask = self._texts(texts_in)
        texts = RetrievalTexts(ids, mask, torch.zeros(len(texts_in), dtype=torch.long))
        with self._autocast():
            pixels = self.task.model.encode_pixels(pixel_values, image_sizes=sizes)
            if isinstance(self.task, RetrievalTask):
                return self.task.score_matrix(pixels, texts, mask.sum(dim=1).cpu(), sizes).float()
            return self._itm_log_odds(pixels, texts)

    @torch.inference_mode()
    def nlvr2(
        self, left: ImageInput | Sequence[ImageInput], right: ImageInput | Sequence[ImageInput],
        statement: str | Sequence[str],
    ) -> Any:  # fmt: skip
        """NLVR2: probability that the statement is true of the (left, right) image pair."""
        if not isinstance(self.task, NLVR2Task):
            raise TypeError(f"nlvr2() needs an NLVR2 model; this one is a {type(self.task).__name__}")
        (lefts, rights, statements), single = _rows(
            left=_image_list(left, "left"), right=_image_list(right, "right"),
            statement=_text_list(statement, "statement"),
        )  # fmt: skip
        items = [
            {"left": self.image(a, a_label), "right": self.image(b, b_label), "input_ids": self.token_ids(s),
             "label": -1, "identifier": str(i)}
            for i, ((a_label, a), (b_label, b), s) in enumerate(zip(lefts, rights, statements, strict=True))
        ]  # fmt: skip
        batch = self._to_device(collate_nlvr2(items, self.tokenizer.pad_token_id, self.padding))
        with self._autocast():
            probabilities = self.task(batch).float().softmax(-1)[:, 1]
        values = probabilities.tolist()
        return values[0] if single else values

    # ---------------------------------------------------------------------------------- helpers

    def _images(self, images: Sequence[tuple[str, ImageInput]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        resized = [self.image(im, label) for label, im in images]
        sizes = real_sizes(resized)
        return pad_images(resized, shape=self.padding.image_shape(sizes))[0].to(self.device), sizes

    def _texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.processing.max_text_length, padding=True, return_tensors="pt"
        )
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].bool().to(self.device)

    def _itm_log_odds(self, pixels: Any, texts: RetrievalTexts) -> torch.Tensor:
        head = getattr(self.task, "itm_head", None)
        if head is None:
            raise TypeError(f"rank() needs a retrieval or pre-trained model; this is {type(self.task).__name__}")
        n, t = pixels.tokens.shape[0], texts.input_ids.shape[0]
        rows = torch.arange(n, device=self.device).repeat_interleave(t)
        out = self.task.model(texts.input_ids.repeat(n, 1), texts.attention_mask.repeat(n, 1), pixel_tokens=pixels,
                              image_index=rows, outputs="cls")  # fmt: skip
        logits = head(out.cls_output).float()
        return (logits[:, 1] - logits[:, 0]).view(n, t).cpu()


def build_task(
    task_cls: type[PixelBertTask], model_config: dict[str, Any], processing: ProcessingConfig, task_args: dict[str, Any]
) -> PixelBertTask:
    """`task_cls` with the network `model_config` describes (every `PixelBertConfig` field; no weights loaded or
    downloaded), fed as `processing` says, and its other constructor arguments from `task_args` (weight sources and
    build options dropped)."""
    overrides = {k: v for k, v in model_config.items() if k not in ("text_encoder", "visual_weights")}
    args = {k: v for k, v in task_args.items() if k not in _BUILD_ARGS}
    return task_cls(preset="pixelbert_tiny", model_overrides=overrides, processing=processing, **args)


def _checkpoint_task(path: Any, class_path: str | None, state: dict[str, Any]) -> type[PixelBertTask]:
    if class_path is not None:
        return get_task(class_path, str(path))
    found = [t for prefix, t in _TASK_BY_HEAD.items() if any(k.startswith(prefix) for k in state)]
    if not found:
        raise ValueError(f"{path}: names no task and has no known task head in its state_dict; pass task=")
    return found[0]


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
