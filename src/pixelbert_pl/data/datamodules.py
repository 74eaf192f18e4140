"""LightningDataModules for pre-training: COCO (Karpathy train + restval) + Visual Genome; and what every
DataModule of the package shares (`PixelBertDataModule`, `ArrowRecords`).

Records go into Hugging Face `datasets` (Arrow) so millions of VG phrases do not live as Python objects; under
DDP every rank gets the same number of batches (an `EpochKeyedSampler` with `drop_last`), and evaluation shards
are disjoint with no padding duplicates.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

import datasets
import pyarrow.compute
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import (
    EVAL_SPLITS,
    PRETRAIN_SPLITS,
    ImageCaptions,
    karpathy_coco_ids,
    karpathy_flickr_ids,
    read_karpathy,
    read_visual_genome,
    to_hf_dataset,
)
from pixelbert_pl.data.pretraining import CaptionPretrainDataset, EpochKeyedSampler, RecordDataset
from pixelbert_pl.data.quality import SkipCounter
from pixelbert_pl.data.samplers import BucketedEpochKeyedSampler, GroupedEpochKeyedSampler, item_buckets
from pixelbert_pl.data.workers import stop_safe_worker_init
from pixelbert_pl.processing import PROCESSING_FIELDS, ImageTransform, ProcessingConfig
from pixelbert_pl.processing.batches import collate_pretrain
from pixelbert_pl.processing.padding import BatchPadding
from pixelbert_pl.processing.processor import PixelBertProcessor
from pixelbert_pl.processing.shapes import PadShapes

RecordT = TypeVar("RecordT")
# torchdata 0.11 calls torch.set_vital, deprecated in torch 2.14, at every StatefulDataLoader: noise, not a problem.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


class ArrowRecords(Sequence[RecordT], Generic[RecordT]):
    """Random access to the rows of an Arrow-backed `datasets.Dataset` as `record_type` dataclasses.

    Arrow buffers are not touched by reference counting, so DataLoader workers share them instead of copying,
    page by page, a list of millions of Python objects.

    Reading one row through `datasets` is costly, and pre-training reads several per sample (its ITM negatives are
    other images' captions). So each process keeps the records it has read, up to `cache_size` (then starts over):
    a later read returns the same object, which callers treat as read-only (the datasets copy what they change)."""

    cache_size = 1 << 16

    def __init__(self, table: datasets.Dataset, record_type: Callable[..., RecordT] = ImageCaptions) -> None:  # type: ignore[assignment]
        self.table = table
        self.record_type = record_type
        self._cache: dict[int, RecordT] = {}

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> ArrowRecords[Any]:
        """Records of one dataclass type, in order (their field values must be Arrow-typable)."""
        if not records:
            return cls(datasets.Dataset.from_list([]), dict)  # type: ignore[arg-type]  # never indexed: no record type
        return cls(datasets.Dataset.from_list([asdict(r) for r in records]), type(records[0]))

    def __len__(self) -> int:
        return len(self.table)

    def list_lengths(self, column: str) -> list[int]:
        """The length of each row's list in `column` (e.g. captions per image), read from Arrow without a record."""
        values = self.table.with_format("arrow")[column]
        return pyarrow.compute.list_value_length(values).to_pylist()

    def __getitem__(self, index: int | slice) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        index = int(index)
        record = self._cache.get(index)
        if record is None:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            record = self._cache[index] = self.record_type(**self.table[index])
        return record


def _arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """A constructor's own arguments from its `locals()`."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__", "kwargs")}


class PixelBertDataModule(pl.LightningDataModule):
    """What every DataModule here shares: the tokenizer, the image transform, `vocab_size` (the CLI links it to the
    model's) and loaders whose `EpochKeyedSampler` gives every rank equal training batches and disjoint evaluation
    shards.

    Args:
        tokenizer: HF name or local directory / vocab.txt of the BERT WordPiece tokenizer.
        image_min_size, image_max_size, size_divisor: the `ImageTransform`'s resizing. Batches carry the resized
            uint8 pixels; the model normalises them on its device.
        max_text_length: tokens per text, [CLS] and [SEP] included.
        pad_long_sides: pad every batch to one of a fixed set of shapes (`PadShapes`: S x S, S x L and L x S for
            these long sides L and the cap, S the short side) and train on batches of one shape bucket
            (`BucketedEpochKeyedSampler`), so that compiled and CUDA graphs hold for the whole epoch; () pads
            each batch to its own maximum (any order). These five make `processing` (a `ProcessingConfig`), the
            one description of the inputs that the CLI links to the task and that checkpoints and exports carry.
        text_pad_multiple: texts padded to a multiple of this many tokens (Hugging Face's `pad_to_multiple_of`),
            so a run meets `max_text_length / text_pad_multiple` text lengths, not every one.
        batch_size: training batch per rank; val_batch_size: evaluation batch (default: batch_size).
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
        self.options = SimpleNamespace()
        self.add_options(locals())
        self.save_hyperparameters()
        # Created here, before any DataLoader worker starts, so that every worker shares its memory.
        self.skip_counter = SkipCounter(max_skipped_fraction)

    def add_options(self, frame_locals: dict[str, Any]) -> None:
        """Add a subclass constructor's arguments (its `locals()`) to `options`; the preprocessing ones are in
        `processing` only."""
        arguments = _arguments(frame_locals)
        vars(self.options).update({k: v for k, v in arguments.items() if k not in PROCESSING_FIELDS})

    @functools.cached_property
    def processor(self) -> PixelBertProcessor:
        """The tokenizer and the image transform, as `Predictor` gets them from a checkpoint or an export: training
        and serving build inputs with one class (and batches with the collates of `processing/batches.py`)."""
        return PixelBertProcessor.from_config(self.processing, self.options.text_pad_multiple)

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
        h = self.options
        if train and isinstance(dataset, RecordDataset):
            dataset.skip_unreadable(self.skip_counter)
        if isinstance(dataset, RecordDataset):
            dataset.image_cache_bytes = int(h.image_cache_mb * 2**20)
        items: Sequence[Any] = dataset  # type: ignore[assignment]  # every dataset here has a length
        keys = group_keys if group_size > 1 else None
        sampler: EpochKeyedSampler
        if not train:
            sampler = EpochKeyedSampler(items, world, rank, shuffle=False, unrepeated=True)
        elif self.padding.shapes is not None and isinstance(dataset, RecordDataset):
            sampler = BucketedEpochKeyedSampler(
                items, item_buckets(dataset, self.processing, self.padding.shapes), h.batch_size, keys, group_size,
                world, rank, seed=h.seed, epoch_source=self._current_epoch,
            )  # fmt: skip
        elif keys is not None:
            sampler = GroupedEpochKeyedSampler(
                items, keys, group_size, world, rank, seed=h.seed, epoch_source=self._current_epoch
            )
        else:
            sampler = EpochKeyedSampler(
                items, world, rank, shuffle=True, seed=h.seed, drop_last=True, epoch_source=self._current_epoch
            )
        collate_fn = functools.partial(collate_fn, padding=self.padding)
        # Training loaders are torchdata's StatefulDataLoader: Lightning saves its state (the sampler's position as of
        # the last batch handed over, whatever the workers prefetched) in checkpoints and restores it on resume.
        loader_cls = StatefulDataLoader if train else DataLoader
        return loader_cls(
            dataset,
            batch_size=h.batch_size if train else h.val_batch_size or h.batch_size,
            sampler=sampler,
            drop_last=sampler.drop_last,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
            collate_fn=collate_fn,
            # Page-locked batches make Lightning's copy to the GPU asynchronous (see processing/batches.py).
            pin_memory=torch.cuda.is_available(),
            # Each new iterator draws its workers' base seed from this generator, not from torch's global one, so
            # starting an epoch (or a resumed run's first one) leaves the RNG that dropout uses untouched.
            generator=torch.Generator().manual_seed(h.seed),
            worker_init_fn=stop_safe_worker_init(),
        )


class PretrainDataModule(PixelBertDataModule):
    """Image-caption pairs for MLM + ITM pre-training.

    Args:
        tokenizer: HF name or local directory / vocab.txt of the BERT WordPiece tokenizer.
        karpathy_file: `dataset_coco.json`; its `train_splits` images are pre-training data, `val_splits` validate.
        image_root: folder holding the Karpathy `filepath` folders (train2014/, val2014/).
        vg_regions, vg_image_data, vg_image_dirs: Visual Genome `region_descriptions.json`, `image_data.json`
            and the image folders (VG_100K, VG_100K_2). VG images whose coco_id is a Karpathy val/test image
            are dropped, so evaluation images never reach pre-training.
        flickr30k_file: Flickr30K's `dataset_flickr30k.json`: VG images whose flickr_id is one of its val/test images
            are dropped too, so a model pre-trained here can be evaluated on Flickr30K retrieval.
        captions_per_image: caption rows per item (half of them, rounded down, ITM negatives); the CNN runs once for
            all of them. An epoch is every image-caption pair in a matched row once (`CaptionPairIndex`).
        mlm_probability: BERT's masking rate (0.15); 0 switches MLM masking off (an ITM-only run).
        mlm_word_probabilities: words masked at their own rate instead, e.g. {red: 0.5, circle: 0.5} to mask
            visually grounded words more often (off by default; the paper masks every word alike).
        max_val_images: validate on the first N val images only (all 5,000 at 800 px are slow).
        allow_missing: skip images whose file is missing (with a warning counting them) instead of failing.
    """

    def __init__(
        self,
        karpathy_file: str | None = None,
        image_root: str | None = None,
        train_splits: Sequence[str] = PRETRAIN_SPLITS,
        val_splits: Sequence[str] = ("val",),
        vg_regions: str | None = None,
        vg_image_data: str | None = None,
        vg_image_dirs: Sequence[str] = (),
        flickr30k_file: str | None = None,
        captions_per_image: int = 2,
        mlm_probability: float = 0.15,
        mlm_word_probabilities: dict[str, float] | None = None,
        max_val_images: int | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> None:
        # The settings every DataModule shares (tokenizer, image sizes, batches) are `PixelBertDataModule`'s:
        # jsonargparse follows **kwargs to its signature, so the CLI and YAMLs still see them by name.
        super().__init__(**kwargs)
        self.add_options(locals())
        if karpathy_file is None and vg_regions is None:
            raise ValueError("PretrainDataModule needs a corpus: set karpathy_file and/or vg_regions")
        self.train_records: Sequence[ImageCaptions] = []
        self.val_records: Sequence[ImageCaptions] = []

    def read_records(self, splits: Sequence[str], with_vg: bool) -> list[ImageCaptions]:
        h = self.options
        records: list[ImageCaptions] = []
        if h.karpathy_file is not None:
            root = h.image_root or str(Path(h.karpathy_file).parent)
            records += read_karpathy(h.karpathy_file, root, splits, allow_missing=h.allow_missing)
        if with_vg and h.vg_regions is not None:
            if h.vg_image_data is None or not h.vg_image_dirs:
                raise ValueError("vg_regions needs vg_image_data and vg_image_dirs as well")
            held_out = karpathy_coco_ids(h.karpathy_file, EVAL_SPLITS) if h.karpathy_file else set()
            flickr = karpathy_flickr_ids(h.flickr30k_file, EVAL_SPLITS) if h.flickr30k_file else set()
            records += read_visual_genome(
                h.vg_regions,
                h.vg_image_data,
                h.vg_image_dirs,
                exclude_coco_ids=held_out,
                exclude_flickr_ids=flickr,
                allow_missing=h.allow_missing,
            )
        return records

    def setup(self, stage: str | None = None) -> None:
        if not len(self.train_records) and stage in (None, "fit"):
            self.train_records = ArrowRecords(to_hf_dataset(self.read_records(self.options.train_splits, True)))
        if not len(self.val_records) and stage in (None, "fit", "validate", "predict"):
            val = self.read_records(self.options.val_splits, False)
            self.val_records = val[: self.options.max_val_images] if self.options.max_val_images else val

    def split_records(self, stage: str = "fit") -> dict[str, Sequence[Any]]:
        self.setup(stage)
        return {"train": self.train_records, "val": self.val_records} if stage == "fit" else {"val": self.val_records}

    def dataset(self, records: Sequence[ImageCaptions], train: bool = True) -> CaptionPretrainDataset:
        """Training: an epoch is every image-caption pair; validation: one item per image (`max_val_images` bounds
        its cost, whatever the captions per image)."""
        h = self.options
        return CaptionPretrainDataset(
            records,
            self.transform,
            self.tokenizer,
            max_text_length=self.processing.max_text_length,
            captions_per_image=h.captions_per_image,
            mlm_probability=h.mlm_probability,
            mlm_word_probabilities=h.mlm_word_probabilities,
            seed=h.seed,
            epoch="pairs" if train else "images",
        )

    def train_dataloader(self) -> DataLoader:
        collate = functools.partial(collate_pretrain, pad_token_id=self.tokenizer.pad_token_id)
        return self.loader(self.dataset(self.train_records), collate, train=True)

    def val_dataloader(self) -> DataLoader:
        collate = functools.partial(collate_pretrain, pad_token_id=self.tokenizer.pad_token_id)
        return self.loader(self.dataset(self.val_records, train=False), collate, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The validation pairs, matched and not (`pixelbert predict` gives each its ITM probability)."""
        return self.val_dataloader()
