"""The batch of each task and the collate that builds it from items (`processing/items.py`: one typed record per
sample, images already resized to uint8 (3, h, w) and texts already tokenised): the DataModules' loaders and
`Predictor` build batches here, so training and serving cannot drift.

`PinnableBatch` lets the DataLoader pin a batch dataclass's tensors, and Lightning move them in one call:
`DataLoader(pin_memory=True)` pins tensors, mappings and sequences, and any object with a `pin_memory()` method; a
plain dataclass it returns untouched. Unpinned, Lightning's "non-blocking" copy to the GPU is a blocking copy that
first waits for every queued kernel: a host-device sync at the start of every step. Lightning moves a batch by
walking it as a collection, down to every int of its host-side lists (one call each); an object with a
`to(device)` method is moved by that method instead, so `to` copies the tensor fields and leaves the rest.

Shapes: n distinct images, b texts (rows), t tokens, a answer classes, g texts per image in retrieval training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pixelbert_pl.processing.items import (
    ImageTextClassificationItem,
    ImageTextItem,
    NLVR2Item,
    PretrainItem,
    RetrievalImageItem,
    RetrievalTrainItem,
    VQAItem,
)
from pixelbert_pl.processing.padding import (
    NO_PADDING,
    BatchPadding,
    pad_batch_images,
    pad_images,
    pad_texts,
    pad_token_rows,
    real_sizes,
)


class PinnableBatch:
    """Mixin for the batch dataclasses: `pin_memory()` and `to(device)` return a copy with every tensor field
    pinned or moved, every other field as it was."""

    def _map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        mapped = {k: function(v) for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **mapped)  # type: ignore[type-var]

    def pin_memory(self) -> Any:
        return self._map_tensors(torch.Tensor.pin_memory)

    def to(self, device: torch.device | str) -> Any:
        """Non-blocking to a GPU: the loaders pin their batches."""
        device = torch.device(device)
        return self._map_tensors(lambda t: t.to(device, non_blocking=device.type == "cuda"))


IGNORE_INDEX = -100
UNLABELLED = -1  # the label of a row without one (a hidden test split)


@dataclass
class PretrainBatch(PinnableBatch):
    pixel_values: torch.Tensor  # (n, 3, H, W)
    pixel_mask: torch.Tensor  # (n, H, W) bool
    input_ids: torch.Tensor  # (r, t), MLM-masked
    attention_mask: torch.Tensor  # (r, t)
    mlm_labels: torch.Tensor  # (r, t), IGNORE_INDEX except masked positions of matched pairs
    itm_labels: torch.Tensor  # (r,) 1 = the caption describes the image
    image_index: torch.Tensor  # (r,) image of each row
    pixel_sample_seeds: list[int]  # (r,) host ints: the draw happens on the host (see PixelBertModel.sample_pixels)
    sample_ids: torch.Tensor  # (n,) dataset item of each image (a `CaptionPairIndex` item in pre-training)
    image_sizes: list[tuple[int, int]] | None = None  # (n,) real (h, w) of each image, host ints
    num_masked: int | None = None  # m, the MLM targets in mlm_labels, known on the host (see PretrainTask)


def collate_image_texts(
    items: Sequence[ImageTextItem], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
) -> dict[str, Any]:
    """The image and text fields of a batch of (image, text) items whose texts may share an image (several
    questions or statements about one): items with the same `image_key` get one row of `pixel_values`, in
    first-seen order, so the CNN runs once per image.

    Returns pixel_values (n, 3, H, W), pixel_mask (n, H, W), image_sizes (n host (h, w) pairs), image_index (b,)
    long (each text's image row), and
    input_ids, attention_mask (b, t) as `pad_texts` pads them; `padding` says to which shapes."""
    rows: dict[str, int] = {}
    images: list[torch.Tensor] = []
    for item in items:
        if item["image_key"] not in rows:
            rows[item["image_key"]] = len(images)
            images.append(item["pixel_values"])
    sizes = real_sizes(images)
    shape = padding.image_shape(sizes)
    blanks = -len(images) % padding.image_multiple
    if blanks:  # image rows no text reads, so the CNN's batch takes few sizes (`BatchPadding.image_multiple`)
        blank_shape = shape or (max(h for h, _ in sizes), max(w for _, w in sizes))
        images += [images[0].new_zeros((images[0].shape[0], *blank_shape))] * blanks
    pixel_values, pixel_mask = pad_images(images, shape=shape)
    input_ids, attention_mask = pad_texts([item["input_ids"] for item in items], pad_token_id, padding.text_multiple)
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "image_sizes": real_sizes(images),
        "image_index": torch.tensor([rows[item["image_key"]] for item in items], dtype=torch.long),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
    }


def collate_pretrain(
    items: Sequence[PretrainItem], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
) -> PretrainBatch:
    """Images in item order; text rows sorted by length (stable), each row's fields moved with it, so that the
    transformer's length buckets (`text_length_buckets`) are runs of consecutive rows and need no gather."""
    images = [item["pixel_values"] for item in items]
    pixel_values, pixel_mask = pad_batch_images(images, padding)
    rows = [
        (ids, labels, matched, image, seed)
        for image, item in enumerate(items)
        for ids, labels, matched, seed in zip(
            item["input_ids"], item["mlm_labels"], item["itm_labels"], item["pixel_sample_seeds"], strict=True
        )
    ]
    rows.sort(key=lambda row: len(row[0]))
    ids, labels, matched, image_index, seeds = (list(column) for column in zip(*rows, strict=True))
    k = padding.text_multiple
    return PretrainBatch(
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
        input_ids=pad_token_rows(ids, pad_token_id, k),
        attention_mask=pad_token_rows([[1] * len(r) for r in ids], 0, k),
        mlm_labels=pad_token_rows(labels, IGNORE_INDEX, k),
        num_masked=sum(label != IGNORE_INDEX for row in labels for label in row),
        itm_labels=torch.tensor(matched),
        image_index=torch.tensor(image_index),
        pixel_sample_seeds=seeds,
        sample_ids=torch.tensor([item["sample_id"] for item in items]),
        image_sizes=real_sizes(images),
    )


@dataclass
class VQABatch(PinnableBatch):
    pixel_values: torch.Tensor  # (n, 3, H, W), one row per distinct image
    pixel_mask: torch.Tensor  # (n, H, W) bool
    input_ids: torch.Tensor  # (b, t) [CLS] question [SEP], padded
    attention_mask: torch.Tensor  # (b, t) bool
    image_index: torch.Tensor  # (b,) row of pixel_values each question is about
    targets: torch.Tensor  # (b, a) soft scores; all-zero rows for unannotated questions
    question_ids: torch.Tensor  # (b,)
    answers: list[list[str]]  # raw human answers per question, [] when unannotated
    answer_types: list[str | None]
    image_sizes: list[tuple[int, int]] | None = None  # (n,) real (h, w) of each image, host ints


def collate_vqa(
    items: Sequence[VQAItem], num_answers: int, pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
) -> VQABatch:
    """Questions about the same image (same `image_key`) share one row of `pixel_values`, in first-seen order."""
    targets = torch.zeros(len(items), num_answers)
    for row, item in enumerate(items):
        for label, score in item["targets"].items():
            targets[row, label] = score
    return VQABatch(
        **collate_image_texts(items, pad_token_id, padding),
        targets=targets,
        question_ids=torch.tensor([item["question_id"] for item in items], dtype=torch.long),
        answers=[item["answers"] for item in items],
        answer_types=[item["answer_type"] for item in items],
    )


@dataclass
class NLVR2Batch(PinnableBatch):
    pixel_values: torch.Tensor  # (2b, 3, H, W): example i's left image at 2i, its right image at 2i + 1
    pixel_mask: torch.Tensor  # (2b, H, W) bool
    input_ids: torch.Tensor  # (b, t)
    attention_mask: torch.Tensor  # (b, t) bool
    labels: torch.Tensor  # (b,) long: 1 True, 0 False, -1 unlabelled
    identifiers: list[str]
    image_sizes: list[tuple[int, int]] | None = None  # (n,) real (h, w) of each image, host ints


def collate_nlvr2(items: Sequence[NLVR2Item], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING) -> NLVR2Batch:
    images = [image for item in items for image in (item["left"], item["right"])]
    pixel_values, pixel_mask = pad_batch_images(images, padding)
    input_ids, attention_mask = pad_texts([item["input_ids"] for item in items], pad_token_id, padding.text_multiple)
    return NLVR2Batch(
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=torch.tensor([item["label"] for item in items], dtype=torch.long),
        identifiers=[item["identifier"] for item in items],
        image_sizes=real_sizes(images),
    )


@dataclass
class RetrievalTrainBatch(PinnableBatch):
    pixel_values: torch.Tensor  # (n, 3, H, W)
    pixel_mask: torch.Tensor  # (n, H, W) bool
    input_ids: torch.Tensor  # (n * g, t): image i's rows are i*g .. i*g + g - 1, the positive first
    attention_mask: torch.Tensor  # (n * g, t) bool
    image_index: torch.Tensor  # (n * g,) image of each row
    group_size: int  # g = 1 + k
    image_sizes: list[tuple[int, int]] | None = None  # (n,) real (h, w) of each image, host ints


@dataclass
class RetrievalImageBatch(PinnableBatch):
    pixel_values: torch.Tensor  # (n, 3, H, W)
    pixel_mask: torch.Tensor  # (n, H, W) bool
    image_positions: torch.Tensor  # (n,) positions in the split's image list
    image_sizes: list[tuple[int, int]] | None = None  # (n,) real (h, w) of each image, host ints


@dataclass
class RetrievalTexts:
    input_ids: torch.Tensor  # (T, t)
    attention_mask: torch.Tensor  # (T, t) bool
    text_to_image: torch.Tensor  # (T,) position of each text's image in the split's image list


def collate_retrieval_train(
    items: Sequence[RetrievalTrainItem], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
) -> RetrievalTrainBatch:
    images = [item["pixel_values"] for item in items]
    pixel_values, pixel_mask = pad_batch_images(images, padding)
    group_size = len(items[0]["input_ids"])
    rows = [row for item in items for row in item["input_ids"]]
    input_ids, attention_mask = pad_texts(rows, pad_token_id, padding.text_multiple)
    return RetrievalTrainBatch(
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
        input_ids=input_ids,
        attention_mask=attention_mask,
        image_index=torch.arange(len(items)).repeat_interleave(group_size),
        group_size=group_size,
        image_sizes=real_sizes(images),
    )


def collate_retrieval_images(
    items: Sequence[RetrievalImageItem], padding: BatchPadding = NO_PADDING
) -> RetrievalImageBatch:
    images = [item["pixel_values"] for item in items]
    pixel_values, pixel_mask = pad_batch_images(images, padding)
    positions = torch.tensor([item["position"] for item in items], dtype=torch.long)
    return RetrievalImageBatch(
        pixel_values=pixel_values, pixel_mask=pixel_mask, image_positions=positions, image_sizes=real_sizes(images)
    )


def check_labels(labels: Sequence[str], owner: str) -> list[str]:
    """`labels` as a list, checked to be distinct non-empty strings (index = class)."""
    names = list(labels)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{owner}: labels={names!r}; expected distinct class names, index = class")
    return names


@dataclass
class ImageTextBatch(PinnableBatch):
    """(image, text) rows whose texts may share images: what `collate_image_texts` gives."""

    pixel_values: torch.Tensor  # (n, 3, H, W), one row per distinct image of the batch
    pixel_mask: torch.Tensor  # (n, H, W) bool
    input_ids: torch.Tensor  # (b, t) [CLS] text [SEP], padded
    attention_mask: torch.Tensor  # (b, t) bool
    image_index: torch.Tensor  # (b,) row of pixel_values each text is about
    image_sizes: list[tuple[int, int]]  # (n,) real (h, w) of each image, host ints


@dataclass
class ImageTextClassificationBatch(ImageTextBatch):
    """b samples of k = `images_per_sample` images each: k * b text rows, sample i's at k*i .. k*i + k - 1."""

    labels: torch.Tensor  # (b,) long class index, UNLABELLED (-1) for unlabelled samples
    label_names: list[str]  # (b,) each sample's label as written in the file, "" when unlabelled
    example_ids: list[str]  # (b,) each sample's id_field (SNLI-VE: pairID)
    images_per_sample: int = 1


def collate_image_text(
    items: Sequence[ImageTextClassificationItem], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
) -> ImageTextClassificationBatch:
    """Texts about the same image share one row of `pixel_values` (SNLI-VE has several hypotheses per image). Items
    of two images ("second_pixel_values", "second_image_key") give two text rows each, the first image's then the
    second's (NLVR2's pair setting)."""
    pairs = "second_pixel_values" in items[0]
    if any(("second_pixel_values" in item) != pairs for item in items):
        raise ValueError("collate_image_text: a batch mixes one-image and two-image samples")
    rows: list[ImageTextItem] = []
    for item in items:
        rows.append(item)
        if pairs:  # the same text about the second image, right after the first's row
            second: ImageTextItem = {
                "pixel_values": item["second_pixel_values"],
                "image_key": item["second_image_key"],
                "input_ids": item["input_ids"],
            }
            rows.append(second)
    return ImageTextClassificationBatch(
        **collate_image_texts(rows, pad_token_id, padding),
        labels=torch.tensor([item["label"] for item in items], dtype=torch.long),
        label_names=[item["label_name"] for item in items],
        example_ids=[item["example_id"] for item in items],
        images_per_sample=2 if pairs else 1,
    )
