"""Image-text retrieval (docs/paper_facts.md §3.3, §6.4) over the Karpathy splits of COCO and Flickr30K.

Training: an item is one image-sentence pair (the positive) with `num_negatives` captions of other images, and an
epoch is every pair once (docs/paper_facts.md §3.3: "per image-sentence pair"), 5 items per COCO or Flickr30K
image; the task scores all of them and pushes the positive highest. Which captions are negatives comes from (seed,
epoch, sample index), as in pre-training, so a resumed run sees what an uninterrupted one would.

Evaluation scores every image of a split against every text: the images are a dataset (sharded over ranks, each
once), the texts are tokenised once for the whole split, with an explicit text -> image map rather than "5
captions per image" (some COCO images have more).

Shapes: n images, k negatives, g = 1 + k texts per image, T texts in the split, t tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.batch import NO_PADDING, BatchPadding, PinnableBatch
from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.images import load_image, real_sizes
from pixelbert_pl.data.pretraining import (
    CaptionPairIndex,
    RecordDataset,
    other_image_captions,
    pad_batch_images,
    pad_texts,
    sample_rng,
    split_key,
)
from pixelbert_pl.processing import ImageTransform

# Draws of other images' captions before a negative is declared impossible; only a corpus whose images nearly all
# share their captions runs out.
_NEGATIVE_DRAWS = 1000


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


class RetrievalTrainDataset(RecordDataset):
    """Item = one image-caption pair as 1 + `num_negatives` token rows on that image: the caption, then captions of
    other images that are none of its own (compared as strings, so a caption two images share is never a negative).
    Items are a `CaptionPairIndex` over the records (`caption_counts`, if given, saves counting them)."""

    def __init__(
        self,
        records: Sequence[ImageCaptions],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        max_text_length: int = 40,
        num_negatives: int = 20,
        seed: int = 0,
        caption_counts: Sequence[int] | None = None,
    ) -> None:
        if len(records) < 2:
            raise ValueError(f"retrieval training needs at least 2 images for negatives; got {len(records)}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives={num_negatives}: expected >= 1")
        super().__init__(records, transform, tokenizer, max_text_length, seed)
        self.num_negatives = num_negatives
        self.pairs = CaptionPairIndex.for_records(records, caption_counts)

    def __len__(self) -> int:
        return len(self.pairs)

    def item_records(self) -> Sequence[int]:
        return self.pairs.item_records()

    def negative_caption(self, index: int, own: set[str], rng: np.random.Generator) -> str:
        draws = islice(other_image_captions(self.records, index, rng), _NEGATIVE_DRAWS)
        caption = next((c for c in draws if c not in own), None)
        if caption is None:
            record = self.records[index]
            raise ValueError(
                f"image {record.image_id} ({record.image_path}): {_NEGATIVE_DRAWS} captions drawn from other images "
                "were all among its own; the corpus has too few distinct captions for retrieval negatives"
            )
        return caption

    def load(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = split_key(key)
        rng = sample_rng(self.seed, epoch, index)
        record_index, (caption,) = self.pairs.captions(index, epoch, self.seed)
        record = self.records[record_index]
        own = set(record.captions)
        texts = [record.captions[caption]]
        texts += [self.negative_caption(record_index, own, rng) for _ in range(self.num_negatives)]
        return {"pixel_values": self.image(record.image_path), "input_ids": self.token_ids(texts)}


def collate_retrieval_train(
    items: list[dict[str, Any]], pad_token_id: int = 0, padding: BatchPadding = NO_PADDING
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


class RetrievalImageDataset(Dataset):
    """Item = one image of the split and its position in `records`, which is what `text_to_image` refers to."""

    def __init__(self, records: Sequence[ImageCaptions], transform: ImageTransform) -> None:
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        position = split_key(key)[1]
        return {"pixel_values": self.transform(load_image(self.records[position].image_path)), "position": position}


def collate_retrieval_images(items: list[dict[str, Any]], padding: BatchPadding = NO_PADDING) -> RetrievalImageBatch:
    images = [item["pixel_values"] for item in items]
    pixel_values, pixel_mask = pad_batch_images(images, padding)
    positions = torch.tensor([item["position"] for item in items], dtype=torch.long)
    return RetrievalImageBatch(
        pixel_values=pixel_values, pixel_mask=pixel_mask, image_positions=positions, image_sizes=real_sizes(images)
    )


def retrieval_texts(
    records: Sequence[ImageCaptions], tokenizer: PreTrainedTokenizerBase, max_text_length: int = 40
) -> RetrievalTexts:
    """Every caption of `records`, image by image in caption order, tokenised and padded to the longest."""
    texts = [caption for record in records for caption in record.captions]
    owners = [position for position, record in enumerate(records) for _ in record.captions]
    encoded = tokenizer(texts, truncation=True, max_length=max_text_length)["input_ids"]
    input_ids, attention_mask = pad_texts(encoded, tokenizer.pad_token_id)
    return RetrievalTexts(input_ids, attention_mask, torch.tensor(owners, dtype=torch.long))
