"""Pre-training samples: one image, several captions, ITM negatives and MLM masks, all decided per sample.

Everything random about what a sample sees (which captions, which negatives, which tokens are masked, which
pixels are sampled) comes from a generator seeded by (seed, epoch, sample index), so a sample is the same in
any batch, on any rank, in any worker, and after a resume. The sampler hands the epoch to the dataset with
each index, so workers need no shared state.

The downstream datasets (vqa.py, nlvr2.py, retrieval.py, classification.py) build on the pieces defined here:
`RecordDataset`, `EpochKeyedSampler` and its keys (`split_key`, `sample_rng`) and `other_image_captions`; their
batches and collates are `processing/batches.py`'s.

An epoch of pre-training is every (image, caption) pair, as in the paper and ViLT (`CaptionPairIndex`): an item is
one image with some of its captions, so the CNN runs once for all of them.

Shapes: n images, r = n * captions_per_image text rows, t tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.quality import SkipCounter, TooManyBadSamplesError
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.batches import IGNORE_INDEX
from pixelbert_pl.processing.images import UnreadableImageError, load_image


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


def matched_rows(captions_per_image: int) -> int:
    """Matched caption rows of a pre-training item: all but half of its rows (rounded down), which are ITM negatives;
    a single row is matched (a coin flip makes it a negative in half the epochs)."""
    return captions_per_image - captions_per_image // 2 if captions_per_image > 1 else 1


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


class EpochKeyedSampler(DistributedSampler):
    """A `DistributedSampler` that yields (epoch, index) keys.

    Being a DistributedSampler, Lightning leaves it in place under DDP; it gives every rank the same number of
    samples (drop_last drops the uneven tail, else the tail is padded by repetition). `unrepeated=True` (for
    evaluation) gives each rank a disjoint share with no padding instead, so no sample is counted twice.

    It is stateful (`state_dict` / `load_state_dict`: the epoch and the samples yielded): torchdata's
    `StatefulDataLoader` snapshots that with each batch it hands over, workers' prefetch notwithstanding, and
    Lightning keeps the snapshot in its checkpoints, so a resumed run goes on with the batch after the last one used.

    `epoch_source` (the DataModules pass `trainer.current_epoch`) replaces the epoch `set_epoch` is given: Lightning
    2.6 passes its count of processed epochs, which a resume from a checkpoint saved in `on_train_epoch_end` leaves
    one ahead for the rest of the run (it replays that epoch's end), so every later epoch would be shuffled as the
    next one.
    """

    def __init__(
        self,
        dataset: Sequence[object],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        unrepeated: bool = False,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]  # DistributedSampler reads only len(dataset)
            num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last,
        )  # fmt: skip
        self.unrepeated = unrepeated
        if unrepeated:
            self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.epoch_source = epoch_source
        self.yielded = 0  # of the current iteration's samples, as the main process's iterator has drawn them
        self._iterating: int | None = None  # the epoch being iterated, once an iteration has started
        self._start = 0  # where the next iteration begins (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(self.epoch_source() if self.epoch_source is not None else epoch)

    def indices(self) -> Iterator[int]:
        """This rank's indices for the current epoch, in order (subclasses change the order here)."""
        if self.unrepeated:
            return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
        return super().__iter__()

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        start, self._start = self._start, 0
        self.yielded, self._iterating = start, self.epoch
        epoch = self.epoch
        for index in islice(self.indices(), start, None):
            self.yielded += 1
            yield epoch, index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch if self._iterating is None else self._iterating, "yielded": self.yielded}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        if yielded >= len(self):
            # Saved at an epoch's last batch: the next iteration is the next epoch's (Lightning creates the resumed
            # iterator, and workers prefetch from it, before it calls set_epoch).
            epoch, yielded = epoch + 1, 0
        self.epoch, self._start, self._iterating, self.yielded = epoch, yielded, None, yielded


class RecordDataset(Dataset):
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

    def __len__(self) -> int:
        return len(self.records)

    def item_records(self) -> Sequence[int]:
        """The record of each item (items are records unless a subclass serves several per record)."""
        return range(len(self))

    def image_paths(self, record: Any) -> list[str]:
        """The image files of one record (what the bucketed samplers read the sizes of)."""
        return [record.image_path]

    def load(self, key: tuple[int, int] | int) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement load(key)")

    def skip_unreadable(self, counter: SkipCounter) -> RecordDataset:
        """Replace unreadable items by the next readable record, counting each in `counter`; returns self."""
        self.skip_counter = counter
        return self

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
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
        """The image at `path`, decoded (subclasses that hold the file's bytes decode those)."""
        return load_image(path)

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


class CaptionPretrainDataset(RecordDataset):
    """Item = one image (decoded, resized, normalised) with `captions_per_image` caption rows.

    Half of each item's rows (rounded down; a coin flip when there is one row) carry a caption of another image that
    is not also one of this image's captions: the ITM negatives, as many as the matched rows. The matched rows are
    the item's captions in a `CaptionPairIndex`, so an epoch (`epoch="pairs"`, for training) has every image-caption
    pair in a matched row once (COCO's 5 per image, VG's dozens of region phrases); `epoch="images"` (validation) has
    one item per image. Matched and unmatched rows are masked alike, so `[MASK]` betrays nothing about matching; the
    MLM loss reads matched rows only, since a caption of another image cannot be reconstructed from this image's
    pixels.

    `caption_counts` (captions of each record) saves reading every record to count them.
    """

    def __init__(
        self,
        records: Sequence[ImageCaptions],
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        max_text_length: int = 40,
        captions_per_image: int = 2,
        mlm_probability: float = 0.15,
        seed: int = 0,
        mlm_word_probabilities: Mapping[str, float] | None = None,
        epoch: Literal["pairs", "images"] = "pairs",
        caption_counts: Sequence[int] | None = None,
    ) -> None:
        if len(records) < 2:
            raise ValueError(f"a pre-training corpus needs at least 2 images for ITM negatives; got {len(records)}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image={captions_per_image}: expected >= 1 caption rows per image")
        if epoch not in ("pairs", "images"):
            raise ValueError(f"epoch={epoch!r}: expected 'pairs' or 'images'")
        super().__init__(records, transform, tokenizer, max_text_length, seed)
        self.captions_per_image = captions_per_image
        self.num_negative = captions_per_image // 2 if captions_per_image > 1 else None  # None: the coin flip
        self.pairs = CaptionPairIndex.for_records(
            records, caption_counts, matched_rows(captions_per_image), one_per_image=epoch == "images"
        )
        self.mlm_probability = mlm_probability
        self.word_probability = self._word_probabilities(tokenizer, mlm_word_probabilities or {})
        self.special_ids = set(tokenizer.all_special_ids)
        self.mask_id = int(tokenizer.mask_token_id)

    def __len__(self) -> int:
        return len(self.pairs)

    def item_records(self) -> Sequence[int]:
        return self.pairs.item_records()

    @staticmethod
    def _word_probabilities(tokenizer: PreTrainedTokenizerBase, words: Mapping[str, float]) -> dict[int, float]:
        """Token id -> masking probability for words masked more (or less) often than the rest."""
        out: dict[int, float] = {}
        for word, probability in words.items():
            token = cast(int | None, tokenizer.convert_tokens_to_ids(word))  # one token string: one id (or None)
            if token is None or token == tokenizer.unk_token_id:
                raise ValueError(f"mlm_word_probabilities: {word!r} is not one token of the tokenizer's vocabulary")
            if not 0 <= probability <= 1:
                raise ValueError(f"mlm_word_probabilities[{word!r}]={probability}: expected a probability in [0, 1]")
            out[int(token)] = float(probability)
        return out

    def negative_caption(self, index: int, own: set[str], rng: np.random.Generator) -> str:
        """A random caption of another image than record `index` that this image does not also have (COCO has 5 per
        image, VG dozens)."""
        caption = ""
        for caption in islice(other_image_captions(self.records, index, rng), 20):
            if caption not in own:
                return caption
        # Only a corpus whose captions nearly all coincide gets here; a rare false negative beats a crash.
        return caption

    def load(self, key: tuple[int, int] | int) -> dict[str, object]:
        epoch, index = split_key(key)
        rng = sample_rng(self.seed, epoch, index)
        record_index, chosen = self.pairs.captions(index, epoch, self.seed)
        record = self.records[record_index]
        captions = record.captions
        n_negative = self.num_negative if self.num_negative is not None else int(rng.random() < 0.5)
        own = set(captions)
        # With one row the coin flip's negative stands in for the pair (seen as a positive in half the epochs).
        texts = [captions[c] for c in chosen[: self.captions_per_image - n_negative]]
        texts += [self.negative_caption(record_index, own, rng) for _ in range(n_negative)]
        matched = [1] * (len(texts) - n_negative) + [0] * n_negative
        encoded = self.token_ids(texts)
        input_ids, labels = [], []
        for ids, m in zip(encoded, matched, strict=True):
            masked, mlm = self._mask(ids, rng)
            input_ids.append(masked)
            labels.append(mlm if m else [IGNORE_INDEX] * len(ids))
        return {
            "pixel_values": self.image(record.image_path),
            "input_ids": input_ids,
            "mlm_labels": labels,
            "itm_labels": matched,
            "pixel_sample_seeds": [int(s) for s in rng.integers(0, 2**62, size=self.captions_per_image)],
            "sample_id": index,
        }

    def _mask(self, ids: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """BERT masking: each real token with `mlm_probability` (at least one); of those 80% -> [MASK],
        10% -> a random non-special token, 10% unchanged. Labels hold IGNORE_INDEX where nothing is masked.
        Words in `mlm_word_probabilities` use their own probability (one random draw per token either way, so the
        default draws exactly what plain BERT masking draws)."""
        candidates = [i for i, tok in enumerate(ids) if tok not in self.special_ids]
        labels = [IGNORE_INDEX] * len(ids)
        masked = list(ids)
        if not candidates:
            return masked, labels
        if self.mlm_probability <= 0:  # MLM switched off (an ITM-only run): captions stay intact
            return masked, labels
        p = self.word_probability
        draws = rng.random(len(candidates))  # the same numbers as one rng.random() per candidate, in one call
        chosen = [i for i, d in zip(candidates, draws, strict=True) if d < p.get(ids[i], self.mlm_probability)]
        chosen = chosen or [int(rng.choice(candidates))]
        for i in chosen:
            labels[i] = ids[i]
            roll = rng.random()
            if roll < 0.8:
                masked[i] = self.mask_id
            elif roll < 0.9:
                masked[i] = self._random_token(rng)
        return masked, labels

    def _random_token(self, rng: np.random.Generator) -> int:
        while True:
            token = int(rng.integers(len(self.tokenizer)))
            if token not in self.special_ids:
                return token
