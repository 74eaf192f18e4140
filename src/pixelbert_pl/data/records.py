"""What every dataset of the package is made of: records read by key, samples keyed by (epoch, index), and the one
policy for drawing another image's caption as a negative.

Everything random about a sample comes from a generator seeded by (seed, epoch, sample index) (`sample_rng`), so a
sample is the same in any batch, on any rank, in any worker and after a resume; the samplers (samplers.py) hand the
epoch to the dataset with each index, so workers need no shared state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from itertools import islice
from typing import Any, Generic, TypeVar

import datasets
import numpy as np
import pyarrow.compute
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.quality import SkipCounter, TooManyBadSamplesError
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.images import UnreadableImageError, load_image

RecordT = TypeVar("RecordT")
ItemT = TypeVar("ItemT")  # what `load` returns: a TypedDict of processing/items.py
# Draws of other images' captions before a negative is declared impossible; only a corpus whose images nearly all
# share their captions runs out.
NEGATIVE_DRAWS = 1000


def sample_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in key])


def split_key(key: tuple[int, int] | int) -> tuple[int, int]:
    """(epoch, index) from an `EpochKeyedSampler` key; a bare index (plain DataLoader, notebooks) means epoch 0."""
    return key if isinstance(key, tuple) else (0, key)


def other_image_captions(records: Sequence[ImageCaptions], index: int, rng: np.random.Generator) -> Iterator[str]:
    """Endless draws of a random caption of a random image other than `records[index]`."""
    while True:
        other = int(rng.integers(len(records) - 1))
        other += other >= index
        captions = records[other].captions
        yield str(captions[int(rng.integers(len(captions)))])  # rng.choice's draw, without its array conversion


def negative_caption(records: Sequence[ImageCaptions], index: int, own: set[str], rng: np.random.Generator) -> str:
    """A random caption of another image than `records[index]` that is none of `own` (compared as strings, so a
    caption two images share is never a negative): ITM negatives in pre-training, ranking negatives in retrieval."""
    caption = next((c for c in islice(other_image_captions(records, index, rng), NEGATIVE_DRAWS) if c not in own), None)
    if caption is None:
        record = records[index]
        raise ValueError(
            f"image {record.image_id} ({record.image_path}): {NEGATIVE_DRAWS} captions drawn from other images were "
            "all among its own; the corpus has too few distinct captions for negatives"
        )
    return caption


class RecordDataset(Dataset[ItemT]):
    """Items built from `records[index]` for a sampler key (epoch, index), with the image transform and the
    tokenizer that every dataset of the package shares. `seed` is for subclasses whose samples are random.

    Subclasses implement `load(key)`. With `skip_unreadable(counter)` (what the DataModules do for training), an
    item whose image cannot be read is replaced by the next readable record and counted (`data/quality.py`).
    """

    def __init__(
        self,
        records: Sequence[Any],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        max_text_length: int = 40,
        seed: int = 0,
    ) -> None:
        self.records = records
        self.transform = transform
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length
        self.seed = seed
        self.skip_counter: SkipCounter | None = None
        # Records this process found unreadable -> (path, reason), so a later draw passes them over undecoded.
        self._unreadable: dict[int, tuple[str, str]] = {}
        self._token_cache: dict[str, list[int]] = {}
        self.image_cache_bytes = 0  # set by the DataModules from `image_cache_mb`; 0 decodes every time
        self._image_cache: dict[str, torch.Tensor] = {}
        self._image_cache_used = 0
        # An image's file bytes by its `image_path` where the data holds them (shards, `datasets` image columns);
        # None: `image_path` is a file to read.
        self.image_bytes: Mapping[str, bytes] | None = None
        # (height, width) by `image_path` where the data gives them; None: the bucketed samplers read headers.
        self.image_sizes: Mapping[str, tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def item_records(self) -> Sequence[int]:
        """The record of each item (items are records unless a subclass serves several per record)."""
        return range(len(self))

    def image_paths(self, record: Any) -> list[str]:
        """The image files of one record (what the bucketed samplers read the sizes of)."""
        return [record.image_path]

    def load(self, key: tuple[int, int] | int) -> ItemT:
        raise NotImplementedError(f"{type(self).__name__} must implement load(key)")

    def skip_unreadable(self, counter: SkipCounter) -> RecordDataset[ItemT]:
        """Replace unreadable items by the next readable record, counting each in `counter`; returns self."""
        self.skip_counter = counter
        return self

    def __getitem__(self, key: tuple[int, int] | int) -> ItemT:
        counter = self.skip_counter
        if counter is None:
            return self.load(key)
        epoch, index = split_key(key)
        # A known bad record met again (a later draw, another draw's substitute) is passed over without a decode.
        bad = self._unreadable
        first_bad: tuple[str, str] | None = None
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            known = bad.get(candidate)
            if known is None:
                try:
                    item = self.load((epoch, candidate))
                except UnreadableImageError as err:
                    known = bad[candidate] = (err.path, err.reason or str(err))
                    counter.unreadable(*known)
                else:
                    counter.served()
                    if first_bad is not None:
                        counter.replaced(*first_bad)  # one drawn sample replaced, however many records were tried
                    return item
            first_bad = first_bad or known
        raise TooManyBadSamplesError(f"{type(self).__name__}: not one of its {len(self)} records could be read")

    def image(self, path: str) -> torch.Tensor:
        """The image at `path`, decoded and resized; kept for later epochs while `image_cache_bytes` allows (the
        transform is deterministic, and callers copy the tensor into their batch rather than edit it)."""
        cached = self._image_cache.get(path)
        if cached is not None:
            return cached
        known_bad = self.skip_counter.bad_files.get(path) if self.skip_counter is not None else None
        if known_bad is not None:  # e.g. a VQA image that an earlier question about it failed on: no second decode
            raise UnreadableImageError(path, known_bad)
        image = self.transform(self.decode(path))
        size = image.numel() * image.element_size()
        if self._image_cache_used + size <= self.image_cache_bytes:
            self._image_cache[path] = image
            self._image_cache_used += size
        return image

    def decode(self, path: str) -> Image.Image:
        """The image at `path` (from `image_bytes` where the data holds the file's bytes), decoded."""
        return load_image(path, data=None if self.image_bytes is None else self.image_bytes.get(path))

    # Texts recur every epoch (and every ITM negative is another image's caption), so each distinct text is tokenised
    # once. Bounded (cleared when full), so a corpus of millions of captions holds at most this many per worker.
    token_cache_size = 1 << 17

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """[CLS] text [SEP] ids of each text, truncated to `max_text_length` (fresh lists: callers may edit them)."""
        cache = self._token_cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            if len(cache) + len(missing) > self.token_cache_size:
                cache.clear()
            ids = self.tokenizer(missing, truncation=True, max_length=self.max_text_length)["input_ids"]
            cache.update(zip(missing, ids, strict=True))
        return [list(cache[t]) for t in texts]


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


# The last key of the per-image caption shuffle, so that its stream is not any item's (seed, epoch, index) stream.
_CAPTION_ORDER_STREAM = 1


class CaptionPairIndex:
    """Items over every (image, caption) pair of a corpus: image r's `counts[r]` captions, shuffled each epoch by
    (seed, epoch, r), cut into ceil(counts[r] / per_item) items of `per_item` captions. An epoch serves every pair;
    the last item of an image whose count is no multiple of `per_item` is filled up with that epoch's first ones.

    `one_per_image=True` gives one item per image instead (its epoch's first `per_item` captions): a fixed-size
    evaluation set whatever the number of captions per image.
    """

    def __init__(self, counts: Sequence[int], per_item: int = 1, one_per_image: bool = False) -> None:
        if per_item < 1:
            raise ValueError(f"per_item={per_item}: expected >= 1 captions per item")
        self.counts = np.asarray(counts, dtype=np.int64)
        empty = np.flatnonzero(self.counts < 1)
        if empty.size:
            raise ValueError(f"record {int(empty[0])} has no caption: every record needs at least one")
        self.per_item, self.one_per_image = per_item, one_per_image
        items = np.ones_like(self.counts) if one_per_image else -(-self.counts // per_item)
        self.ends = np.cumsum(items)  # items of records 0..r end before ends[r]

    @classmethod
    def for_records(
        cls,
        records: Sequence[ImageCaptions],
        counts: Sequence[int] | None = None,
        per_item: int = 1,
        one_per_image: bool = False,
    ) -> CaptionPairIndex:
        """The index of `records`, from their caption counts if given, else read from their Arrow column (records with
        `list_lengths`, as `ArrowRecords`) or counted."""
        if counts is None:
            list_lengths = getattr(records, "list_lengths", None)
            counts = list_lengths("captions") if callable(list_lengths) else [len(r.captions) for r in records]
        if len(counts) != len(records):
            raise ValueError(f"caption_counts has {len(counts)} entries for {len(records)} records: expected one each")
        return cls(counts, per_item, one_per_image)

    @property
    def num_pairs(self) -> int:
        return int(self.counts.sum())

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def item_records(self) -> list[int]:
        """The record of every item, in item order."""
        items = np.diff(self.ends, prepend=0)
        return np.repeat(np.arange(len(self.counts)), items).tolist()

    def locate(self, index: int) -> tuple[int, int]:
        """(record, the item's rank among that record's items) of item `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of a {len(self)}-item caption pair index")
        record = int(np.searchsorted(self.ends, index, side="right"))
        return record, index - (int(self.ends[record - 1]) if record else 0)

    def captions(self, index: int, epoch: int, seed: int) -> tuple[int, list[int]]:
        """(record, positions of item `index`'s captions among the record's) in `epoch`."""
        record, rank = self.locate(index)
        count, k = int(self.counts[record]), self.per_item
        if k == 1 and not self.one_per_image:  # item `rank` is caption `rank`; the sampler does the shuffling
            return record, [rank]
        order = sample_rng(seed, epoch, record, _CAPTION_ORDER_STREAM).permutation(count)
        return record, [int(order[(rank * k + i) % count]) for i in range(k)]


class CaptionPairDataset(RecordDataset[ItemT]):
    """Items over the (image, caption) pairs of image-caption records (a `CaptionPairIndex`: `per_item` captions an
    item, or one item per image), whose negatives are other images' captions (`negative_caption`): pre-training's ITM
    and retrieval's ranking. `caption_counts` (captions of each record) saves reading every record to count them."""

    def __init__(
        self,
        records: Sequence[ImageCaptions],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        max_text_length: int = 40,
        seed: int = 0,
        *,
        per_item: int = 1,
        one_per_image: bool = False,
        caption_counts: Sequence[int] | None = None,
    ) -> None:
        if len(records) < 2:
            raise ValueError(f"{type(self).__name__}: needs at least 2 images for negatives; got {len(records)}")
        super().__init__(records, transform, tokenizer, max_text_length, seed)
        self.pairs = CaptionPairIndex.for_records(records, caption_counts, per_item, one_per_image)

    def __len__(self) -> int:
        return len(self.pairs)

    def item_records(self) -> Sequence[int]:
        return self.pairs.item_records()
