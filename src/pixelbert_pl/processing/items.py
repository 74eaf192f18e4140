"""The items the collates read (`processing/batches.py`): one typed record per sample, images already resized to
uint8 (3, h, w) and texts already tokenised to [CLS] text [SEP] ids. The datasets of `pixelbert_pl.data` return these,
and the task models build them from raw samples for `Predictor`, so a field one side renames fails mypy on the other.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import torch


class ImageTextItem(TypedDict):
    """One text about one image; items with the same `image_key` share a row of pixels in their batch."""

    pixel_values: torch.Tensor
    image_key: str
    input_ids: list[int]


class VQAItem(ImageTextItem):
    targets: dict[int, float]  # answer class -> soft score (`vqa_soft_targets`); {} when unannotated
    answers: list[str]  # the raw human answers, [] when unannotated
    answer_type: str | None
    question_id: int


class ImageTextClassificationItem(ImageTextItem):
    label: int  # class index, UNLABELLED (-1) without a label
    label_name: str
    example_id: str
    second_pixel_values: NotRequired[torch.Tensor]  # a two-image sample's second image
    second_image_key: NotRequired[str]


class NLVR2Item(TypedDict):
    left: torch.Tensor
    right: torch.Tensor
    input_ids: list[int]
    label: int  # 1 True, 0 False, -1 unlabelled
    identifier: str


class PretrainItem(TypedDict):
    """One image with its caption rows (matched ones, then ITM negatives), each MLM-masked."""

    pixel_values: torch.Tensor
    input_ids: list[list[int]]
    mlm_labels: list[list[int]]  # IGNORE_INDEX except masked positions of matched rows
    itm_labels: list[int]  # 1 = the row's caption is this image's
    pixel_sample_seeds: list[int]  # one per row: which pixel tokens it sees
    sample_id: int


class RetrievalTrainItem(TypedDict):
    pixel_values: torch.Tensor
    input_ids: list[list[int]]  # the positive caption, then the negatives


class RetrievalImageItem(TypedDict):
    pixel_values: torch.Tensor
    position: int  # in the split's image list, which `text_to_image` refers to
