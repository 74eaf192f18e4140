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
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.pretraining import CaptionPairIndex, RecordDataset, other_image_captions, sample_rng, split_key
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.batches import RetrievalTexts
from pixelbert_pl.processing.images import load_image
from pixelbert_pl.processing.padding import pad_texts

# Draws of other images' captions before a negative is declared impossible; only a corpus whose images nearly all
# share their captions runs out.
_NEGATIVE_DRAWS = 1000


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


def retrieval_texts(
    records: Sequence[ImageCaptions], tokenizer: PreTrainedTokenizerBase, max_text_length: int = 40
) -> RetrievalTexts:
    """Every caption of `records`, image by image in caption order, tokenised and padded to the longest."""
    texts = [caption for record in records for caption in record.captions]
    owners = [position for position, record in enumerate(records) for _ in record.captions]
    encoded = tokenizer(texts, truncation=True, max_length=max_text_length)["input_ids"]
    input_ids, attention_mask = pad_texts(encoded, tokenizer.pad_token_id)
    return RetrievalTexts(input_ids, attention_mask, torch.tensor(owners, dtype=torch.long))
