"""The DataModules' common base: the shared settings (tokenizer, image sizes, batches), the processor built from them,
and loaders whose samplers give every rank the same number of training batches and disjoint evaluation shards;
`SplitDataModule` adds records per split, read once. Each task's DataModule is in its task's module (vqa.py,
nlvr2.py, retrieval.py, classification.py, pretraining.py, streaming.py); `pixelbert_pl.data` exports them all.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.quality import SkipCounter
from pixelbert_pl.data.records import RecordDataset
from pixelbert_pl.data.samplers import (
    BucketedEpochKeyedSampler,
    EpochKeyedSampler,
    GroupedEpochKeyedSampler,
    item_buckets,
)
from pixelbert_pl.data.workers import stop_safe_worker_init
from pixelbert_pl.processing import ImageTransform, ProcessingConfig
from pixelbert_pl.processing.padding import BatchPadding
from pixelbert_pl.processing.processor import PixelBertProcessor
from pixelbert_pl.processing.shapes import PadShapes

# torchdata 0.11 calls torch.set_vital, deprecated in torch 2.14, at every StatefulDataLoader: noise, not a problem.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
# The splits each stage reads; `predict` serves the test split.
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def as_list(files: str | Sequence[str]) -> list[str]:
    # One path where a list is expected is a common YAML slip; iterating it would read one file per character.
    return [files] if isinstance(files, str) else list(files)


class PixelBertDataModule(pl.LightningDataModule):
    """What every DataModule here shares: the tokenizer, the image transform, `vocab_size` (the CLI links it to the
    model's) and loaders whose `EpochKeyedSampler` gives every rank equal training batches and disjoint evaluation
    shards.

    Args:
        tokenizer: HF name or local directory / vocab.txt of the BERT WordPiece tokenizer.
        image_min_size: the `ImageTransform`'s resizing (short side). Batches carry the resized uint8 pixels; the
            model normalises them on its device.
        image_max_size: as image_min_size, the resizing's cap on the long side.
        size_divisor: as image_min_size, the resizing's rounding of both sides to a multiple of it.
        max_text_length: tokens per text, [CLS] and [SEP] included.
        pad_long_sides: pad every batch to one of a fixed set of shapes (`PadShapes`: S x S, S x L and L x S for
            these long sides L and the cap, S the short side) and train on batches of one shape bucket
            (`BucketedEpochKeyedSampler`), so that compiled and CUDA graphs hold for the whole epoch; () pads
            each batch to its own maximum (any order). These five make `processing` (a `ProcessingConfig`), the
            one description of the inputs that the CLI links to the task and that checkpoints and exports carry.
        text_pad_multiple: texts padded to a multiple of this many tokens (Hugging Face's `pad_to_multiple_of`),
            so a run meets `max_text_length / text_pad_multiple` text lengths, not every one.
        batch_size: training batch per rank.
        val_batch_size: evaluation batch (default: batch_size).
        seed: decides the training order and everything random about a sample, with the epoch and its index.
        max_skipped_fraction: training samples whose image cannot be read are replaced by the next readable one and
            counted (logged as `train/skipped_samples` each epoch); above this fraction of the samples drawn the run
            stops with an error (`data/quality.py`). Evaluation never skips: an unreadable image there is an error.
        image_cache_mb: keep up to this many MiB of decoded, resized images in each loader process, so later
            epochs skip the decode. For small corpora that are read many times, whose decoded images are small
            (ShapesWorld); 0 for COCO.
    """

    def __init__(
        self,
        tokenizer: str = "bert-base-uncased",
        image_min_size: int = 800,
        image_max_size: int = 1333,
        size_divisor: int = 32,
        max_text_length: int = 40,
        pad_long_sides: Sequence[int] = (),
        text_pad_multiple: int = 1,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        seed: int = 0,
        max_skipped_fraction: float = 0.01,
        image_cache_mb: float = 0,
    ) -> None:
        super().__init__()
        # Subclasses add their own arguments and pass some of these for the user, so read them from here, not
        # from `hparams` (which holds the outermost class's own arguments, as given in the YAML).
        self.processing = ProcessingConfig(
            tokenizer=tokenizer, max_text_length=max_text_length, image_min_size=image_min_size,
            image_max_size=image_max_size, size_divisor=size_divisor, pad_long_sides=tuple(pad_long_sides),
        )  # fmt: skip
        self.padding = BatchPadding(PadShapes.from_config(self.processing), text_pad_multiple)
        self.text_pad_multiple = text_pad_multiple
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.max_skipped_fraction = max_skipped_fraction
        self.image_cache_mb = image_cache_mb
        # Per split, the bytes of images the data holds (a `datasets` image column), by the records' image paths.
        self.image_bytes: dict[str, Mapping[str, bytes]] = {}
        # Per split, (height, width) by image path where the data gives them (`datasets` sources: hf.RowSizes).
        self.image_sizes: dict[str, Mapping[str, tuple[int, int]]] = {}
        self.save_hyperparameters()
        # Created here, before any DataLoader worker starts, so that every worker shares its memory.
        self.skip_counter = SkipCounter(max_skipped_fraction)

    @functools.cached_property
    def processor(self) -> PixelBertProcessor:
        """The tokenizer and the image transform, as `Predictor` gets them from a checkpoint or an export: training
        and serving build inputs with one class (and batches with the collates of `processing/batches.py`)."""
        return PixelBertProcessor.from_config(self.processing, self.text_pad_multiple)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size; the CLI links it to the model's `vocab_size`."""
        return len(self.tokenizer)

    @property
    def transform(self) -> ImageTransform:
        """uint8 pixels resized as the model expects; the model normalises them on its device."""
        return self.processor.transform

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        """The records of every split `stage` reads, by split name (what `pixelbert-check-data` scans)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its records by split")

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def loader(
        self,
        dataset: Dataset,
        collate_fn: Callable[..., Any],
        train: bool,
        group_keys: Sequence[Hashable] | None = None,
        group_size: int = 1,
    ) -> DataLoader:
        """Training: shuffled, every rank the same number of full batches; with `group_keys` and a `group_size` > 1,
        samples of one group come `group_size` at a time (`GroupedEpochKeyedSampler`); with fixed padded shapes,
        batches of one shape bucket (`BucketedEpochKeyedSampler`). Evaluation: in order, each item on exactly one
        rank, none repeated to even out the shards. `collate_fn` is given `padding=` (`BatchPadding`)."""
        world, rank = self._ranks()
        if train and isinstance(dataset, RecordDataset):
            dataset.skip_unreadable(self.skip_counter)
        if isinstance(dataset, RecordDataset):
            dataset.image_cache_bytes = int(self.image_cache_mb * 2**20)
        items: Sequence[Any] = dataset  # type: ignore[assignment]  # every dataset here has a length
        keys = group_keys if group_size > 1 else None
        sampler: EpochKeyedSampler
        if not train:
            sampler = EpochKeyedSampler(items, world, rank, shuffle=False, unrepeated=True)
        elif self.padding.shapes is not None and isinstance(dataset, RecordDataset):
            sampler = BucketedEpochKeyedSampler(
                items, item_buckets(dataset, self.processing, self.padding.shapes), self.batch_size, keys, group_size,
                world, rank, seed=self.seed, epoch_source=self._current_epoch,
            )  # fmt: skip
        elif keys is not None:
            sampler = GroupedEpochKeyedSampler(
                items, keys, group_size, world, rank, seed=self.seed, epoch_source=self._current_epoch
            )
        else:
            sampler = EpochKeyedSampler(
                items, world, rank, shuffle=True, seed=self.seed, drop_last=True, epoch_source=self._current_epoch
            )
        collate_fn = functools.partial(collate_fn, padding=self.padding)
        # Training loaders are torchdata's StatefulDataLoader: Lightning saves its state (the sampler's position as of
        # the last batch handed over, whatever the workers prefetched) in checkpoints and restores it on resume.
        loader_cls = StatefulDataLoader if train else DataLoader
        return loader_cls(
            dataset,
            batch_size=self.batch_size if train else self.val_batch_size,
            sampler=sampler,
            drop_last=sampler.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn,
            # Page-locked batches make Lightning's copy to the GPU asynchronous (see processing/batches.py).
            pin_memory=torch.cuda.is_available(),
            # Each new iterator draws its workers' base seed from this generator, not from torch's global one, so
            # starting an epoch (or a resumed run's first one) leaves the RNG that dropout uses untouched.
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=stop_safe_worker_init(),
        )


class SplitDataModule(PixelBertDataModule):
    """Records per split ("train", "val", "test"), read once on first use; a subclass says how to read a split,
    which dataset serves it and how its items are collated. `predict` serves the test split, `test` too."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._records: dict[str, Sequence[Any]] = {}

    def read_split(self, split: str) -> Sequence[Any]:
        raise NotImplementedError

    def dataset(self, split: str, records: Sequence[Any] | None = None) -> Dataset:
        """The dataset serving `split`'s records (or `records`: a streamed block's, read as the split's)."""
        raise NotImplementedError

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        raise NotImplementedError

    def records(self, split: str) -> Sequence[Any]:
        if split not in self._records:
            self._records[split] = self.read_split(split)
        return self._records[split]

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", ()):
            self.records(split)

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        """The records of every split `stage` reads, by split name (what `pixelbert-check-data` scans)."""
        return {split: self.records(split) for split in STAGE_SPLITS.get(stage, ())}

    def served(self, split: str) -> Dataset:
        """`dataset(split)`, reading its images' bytes (and sizes) from the data where it holds them."""
        dataset = self.dataset(split)
        if split in self.image_bytes and hasattr(dataset, "image_bytes"):
            dataset.image_bytes = self.image_bytes[split]
        if split in self.image_sizes and isinstance(dataset, RecordDataset):
            dataset.image_sizes = self.image_sizes[split]
        return dataset

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.served("train"), self.collate("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.served("val"), self.collate("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.served("test"), self.collate("test"), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.served("test"), self.collate("test"), train=False)
