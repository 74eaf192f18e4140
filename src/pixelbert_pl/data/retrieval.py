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

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.base import SplitDataModule
from pixelbert_pl.data.captions import PRETRAIN_SPLITS, ImageCaptions, read_karpathy, to_hf_dataset
from pixelbert_pl.data.hf import HFCaptionData
from pixelbert_pl.data.hf_streaming import StreamedTask
from pixelbert_pl.data.records import (
    ArrowRecords,
    CaptionPairDataset,
    negative_caption,
    sample_rng,
    split_key,
)
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.batches import (
    RetrievalTexts,
    collate_retrieval_images,
    collate_retrieval_train,
)
from pixelbert_pl.processing.images import load_image
from pixelbert_pl.processing.items import RetrievalImageItem, RetrievalTrainItem
from pixelbert_pl.processing.padding import pad_texts


class RetrievalTrainDataset(CaptionPairDataset[RetrievalTrainItem]):
    """Item = one image-caption pair as 1 + `num_negatives` token rows on that image: the caption, then captions of
    other images that are none of its own (compared as strings, so a caption two images share is never a negative).
    Items are the records' image-caption pairs, one each (`CaptionPairDataset`)."""

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
        if num_negatives < 1:
            raise ValueError(f"num_negatives={num_negatives}: expected >= 1")
        super().__init__(records, transform, tokenizer, max_text_length, seed, caption_counts=caption_counts)
        self.num_negatives = num_negatives

    def load(self, key: tuple[int, int] | int) -> RetrievalTrainItem:
        epoch, index = split_key(key)
        rng = sample_rng(self.seed, epoch, index)
        record_index, (caption,) = self.pairs.captions(index, epoch, self.seed)
        record = self.records[record_index]
        own = set(record.captions)
        texts = [record.captions[caption]]
        texts += [negative_caption(self.records, record_index, own, rng) for _ in range(self.num_negatives)]
        return {"pixel_values": self.image(record.image_path), "input_ids": self.token_ids(texts)}


class RetrievalImageDataset(Dataset[RetrievalImageItem]):
    """Item = one image of the split and its position in `records`, which is what `text_to_image` refers to."""

    def __init__(self, records: Sequence[ImageCaptions], transform: ImageTransform) -> None:
        self.records = records
        self.transform = transform
        self.image_bytes: Mapping[str, bytes] | None = None  # as `RecordDataset.image_bytes`

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int] | int) -> RetrievalImageItem:
        position = split_key(key)[1]
        path = self.records[position].image_path
        image = load_image(path, data=None if self.image_bytes is None else self.image_bytes.get(path))
        return {"pixel_values": self.transform(image), "position": position}


def retrieval_texts(
    records: Sequence[ImageCaptions], tokenizer: PreTrainedTokenizerBase, max_text_length: int = 40
) -> RetrievalTexts:
    """Every caption of `records`, image by image in caption order, tokenised and padded to the longest."""
    texts = [caption for record in records for caption in record.captions]
    owners = [position for position, record in enumerate(records) for _ in record.captions]
    encoded = tokenizer(texts, truncation=True, max_length=max_text_length)["input_ids"]
    input_ids, attention_mask = pad_texts(encoded, tokenizer.pad_token_id)
    return RetrievalTexts(input_ids, attention_mask, torch.tensor(owners, dtype=torch.long))


class RetrievalSplits(SplitDataModule):
    """What the retrieval DataModules share, whatever they read: training batches are `RetrievalTrainBatch`es (each
    image-caption pair, every one once an epoch, with `num_negatives` negative captions); validation and test
    batches are `RetrievalImageBatch`es over the split's images, each image on one rank, and every rank scores its
    images against all of the split's texts, `val_texts` / `test_texts`. A subclass reads a split's records.

    Args:
        num_negatives: negative captions per image-caption pair (the paper's 20).
        max_eval_images: evaluate on the first N images of a split (and their texts) only, for speed.
        **kwargs: the settings every DataModule shares (`PixelBertDataModule`).
    """

    def __init__(self, num_negatives: int = 20, max_eval_images: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_negatives, self.max_eval_images = num_negatives, max_eval_images

    def dataset(self, split: str, records: Sequence[Any] | None = None) -> Dataset:
        records = self.records(split) if records is None else records
        if split == "train":
            return RetrievalTrainDataset(
                records, self.transform, self.tokenizer, self.processing.max_text_length, self.num_negatives, self.seed
            )
        return RetrievalImageDataset(records, self.transform)

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        if split == "train":
            return functools.partial(collate_retrieval_train, pad_token_id=self.tokenizer.pad_token_id)
        return collate_retrieval_images

    @functools.cached_property
    def val_texts(self) -> RetrievalTexts:
        """All texts of the val split; `text_to_image` indexes the `image_positions` of the val batches."""
        return retrieval_texts(self.records("val"), self.tokenizer, self.processing.max_text_length)

    @functools.cached_property
    def test_texts(self) -> RetrievalTexts:
        """All texts of the test split; `text_to_image` indexes the `image_positions` of the test batches."""
        return retrieval_texts(self.records("test"), self.tokenizer, self.processing.max_text_length)


class RetrievalDataModule(RetrievalSplits):
    """Image-text retrieval on a Karpathy split file (docs/paper_facts.md §3.3, §6.4).

    Args:
        karpathy_file: dataset_coco.json or dataset_flickr30k.json.
        image_root: COCO: the folder holding train2014/ and val2014/; Flickr30K: flickr30k-images/ itself.
        train_splits: Karpathy splits to train on; Flickr30K has no "restval", so give ["train"] there.
        val_split: the Karpathy split evaluated in validation.
        test_split: the Karpathy split evaluated in testing (COCO-5K / Flickr30K-1K test: "test").
        allow_missing: skip images whose file is missing (with a warning counting them) instead of failing; recall
            over a smaller split is not comparable to published numbers.
        **kwargs: `RetrievalSplits`' (num_negatives, max_eval_images) and the settings every DataModule shares.
    """

    def __init__(
        self,
        karpathy_file: str,
        image_root: str | None = None,
        train_splits: Sequence[str] = PRETRAIN_SPLITS,
        val_split: str = "val",
        test_split: str = "test",
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.karpathy_file, self.image_root, self.train_splits = karpathy_file, image_root, list(train_splits)
        self.split_names = {"val": val_split, "test": test_split}
        self.allow_missing = allow_missing

    def read_split(self, split: str) -> Sequence[Any]:
        root = self.image_root or str(Path(self.karpathy_file).parent)
        if split == "train":
            train = read_karpathy(self.karpathy_file, root, self.train_splits, allow_missing=self.allow_missing)
            return ArrowRecords(to_hf_dataset(train))
        split_name = self.split_names[split]
        return read_karpathy(self.karpathy_file, root, [split_name], allow_missing=self.allow_missing)[
            : self.max_eval_images
        ]


class HFRetrievalDataModule(HFCaptionData, StreamedTask, RetrievalSplits):
    """Image-text retrieval on any `datasets` source (hf.py): a Hub id, a save_to_disk folder, Parquet, CSV or JSON
    lines of (image, caption) rows, read by `columns` with no conversion step, map-style or streamed. Its arguments
    are `HFCaptionData`'s (source, columns, image_root, split_column), `StreamOptions`' (batches_per_epoch,
    block_size: a streamed source) and `RetrievalSplits`' (num_negatives, max_eval_images)."""

    def kept_records(self, records: list[Any], split: str) -> Sequence[Any]:
        return ArrowRecords(to_hf_dataset(records)) if split == "train" else records[: self.max_eval_images]
