"""Pre-training streamed from shards: every pair once an epoch, disjoint and equal shares over ranks and workers
(2 gloo processes x 2 workers), items as the in-memory reader builds them, exact mid-epoch resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gloo_ranks import on_gloo_ranks
from pixelbert_pl.data.records import CaptionPairIndex
from pixelbert_pl.data.shards import read_shard_index, write_shards
from pixelbert_pl.data.streaming import StreamingPretrainDataModule, read_shard
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.processing.batches import IGNORE_INDEX

RECORDS_PER_SHARD = 6  # 48 training images: 8 shards of 30 pairs each (5 captions an image)


@pytest.fixture(scope="module")
def shards(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes_shards")
    files = ShapesWorldDataModule(root=str(shapes_root), num_workers=0)
    for split, records in files.split_records("fit").items():
        write_shards(list(records), out, split=split, records_per_shard=RECORDS_PER_SHARD, seed=0)
    return out


def _data(shards: Path, shapes_root: Path, **kwargs) -> StreamingPretrainDataModule:
    settings = dict(
        tokenizer=str(shapes_root / "vocab.txt"), image_min_size=96, image_max_size=96, max_text_length=24,
        batch_size=4, num_workers=0, mlm_probability=0.0,
    )  # fmt: skip
    return StreamingPretrainDataModule(shards=str(shards), **{**settings, **kwargs})


def _matched_pairs(data: StreamingPretrainDataModule, batch) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """(item id, caption text) of a batch's matched rows (MLM off: the rows are the captions as tokenised)."""
    out = []
    for ids, itm, image in zip(batch.input_ids, batch.itm_labels, batch.image_index, strict=True):
        if itm:
            text = data.tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "")
            out.append((int(batch.sample_ids[image]), text))
    return out


def _as_served(data: StreamingPretrainDataModule, caption: str) -> str:
    """A caption as a batch row holds it: tokenised, truncated to max_text_length, decoded."""
    ids = data.tokenizer(caption, truncation=True, max_length=data.processing.max_text_length)["input_ids"]
    return data.tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "")


def test_an_epoch_serves_every_pair_once_in_items_the_in_memory_reader_would_build(shards, shapes_root) -> None:
    data = _data(shards, shapes_root)
    data.setup("fit")
    index = data.indexes["train"]
    assert len(index.shards) == 8 and index.num_pairs == 240
    loader = data.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 240 // 4  # one slot: every pair, 60 full batches
    pairs = [pair for batch in batches for pair in _matched_pairs(data, batch)]
    assert len({item for item, _ in pairs}) == len(pairs) == 240  # each item once
    # Each item's caption is a caption of its image, and every caption of every image is served.
    rows = [read_shard(url)[0] for url in index.urls()]
    starts = np.cumsum([0] + [len(CaptionPairIndex(s.caption_counts)) for s in index.shards])
    served = set()
    for item, text in pairs:
        shard = int(np.searchsorted(starts, item, side="right")) - 1
        record = rows[shard][CaptionPairIndex(index.shards[shard].caption_counts).locate(item - starts[shard])[0]]
        assert text in {_as_served(data, c) for c in record.captions}
        served.add((record.image_id, text))
    assert served == {(r.image_id, _as_served(data, c)) for shard in rows for r in shard for c in r.captions}
    for batch in batches[:5]:  # half the rows are ITM negatives; MLM labels only where tokens are masked
        assert batch.itm_labels.float().mean() == 0.5 and (batch.mlm_labels == IGNORE_INDEX).all()
    # The next epoch is another order of the same pairs.
    data.trainer = SimpleNamespace(current_epoch=1, world_size=1, global_rank=0)  # what Lightning gives
    second = [pair for batch in data.train_dataloader() for pair in _matched_pairs(data, batch)]
    assert sorted(second) != second and {p for _, p in second} == {p for _, p in pairs} and second != pairs


def test_a_slot_with_too_few_shards_is_an_error_naming_the_fix(shards, shapes_root) -> None:
    data = _data(shards, shapes_root, num_workers=2)
    data.trainer = SimpleNamespace(current_epoch=0, world_size=8, global_rank=0)
    with pytest.raises(ValueError, match=r"8 shards for 8 ranks x 2 workers.*--records-per-shard"):
        data.train_dataloader()


def _stream_ids(rank: int, world: int, shards: str, vocab: str) -> tuple[int, int, list[int], bool]:
    data = StreamingPretrainDataModule(
        shards=shards, tokenizer=vocab, image_min_size=96, image_max_size=96, max_text_length=24, batch_size=3,
        num_workers=2,
    )  # fmt: skip
    data.trainer = SimpleNamespace(current_epoch=0, world_size=world, global_rank=rank)  # what Lightning gives a rank
    loader = data.train_dataloader()
    ids = [i for batch in loader for i in batch.sample_ids.tolist()]
    # Stopped after 11 batches (mid-shard, the workers at different points) and resumed from the loader's state.
    first, seen = data.train_dataloader(), []
    for batch in first:
        seen += batch.sample_ids.tolist()
        if len(seen) == 11 * 3:
            state = first.state_dict()
            break
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    seen += [i for batch in resumed for i in batch.sample_ids.tolist()]
    return len(loader), len(ids) // 3, ids, seen == ids


def test_two_gloo_ranks_with_two_workers_read_disjoint_equal_shares_and_resume_exactly(
    shards, shapes_root, tmp_path
) -> None:
    gathered = on_gloo_ranks(_stream_ids, (str(shards), str(shapes_root / "vocab.txt")), tmp_path)
    (len0, batches0, ids0, resumed0), (len1, batches1, ids1, resumed1) = gathered
    assert resumed0 and resumed1  # each rank's resumed stream went on with the batch after the last one used
    # 8 shards over 4 slots, 2 each (60 pairs): 20 batches of 3 per slot, 40 per rank, and nothing twice.
    assert len0 == len1 == batches0 == batches1 == 40
    assert len(set(ids0)) == len(ids0) and len(set(ids1)) == len(ids1) and not set(ids0) & set(ids1)
    assert len(ids0) + len(ids1) == 240


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_restored_from_its_state_goes_on_with_the_next_batch(shards, shapes_root, workers) -> None:
    data = _data(shards, shapes_root, num_workers=workers, mlm_probability=0.15, batch_size=7)
    expected = [(b.sample_ids.tolist(), b.input_ids.tolist()) for b in data.train_dataloader()]
    for stop in (3, 9, len(expected) - 1):  # mid-shard, across a shard boundary, the epoch's last batch
        first = data.train_dataloader()
        got = []
        for i, batch in enumerate(first):
            got.append((batch.sample_ids.tolist(), batch.input_ids.tolist()))
            if i + 1 == stop:
                state = first.state_dict()
                break
        resumed = data.train_dataloader()
        resumed.load_state_dict(state)
        got += [(b.sample_ids.tolist(), b.input_ids.tolist()) for b in resumed]
        if stop < len(expected):
            assert got == expected, stop
    # A state saved at the epoch's last batch resumes with the next epoch, as an uninterrupted run goes on.
    last = data.train_dataloader()
    assert len(list(last)) == len(last)
    state = last.state_dict()
    data.trainer = SimpleNamespace(current_epoch=1, world_size=1, global_rank=0)
    next_epoch = [b.sample_ids.tolist() for b in data.train_dataloader()]
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    assert [b.sample_ids.tolist() for b in resumed] == next_epoch


def test_validation_streams_every_val_image_once(shards, shapes_root) -> None:
    data = _data(shards, shapes_root, num_workers=2)
    val = read_shard_index(str(shards), "val")
    batches = list(data.val_dataloader())
    ids = [i for b in batches for i in b.sample_ids.tolist()]
    assert sorted(ids) == list(range(val.num_records)) and len(batches) == len(data.val_dataloader())


@pytest.fixture(scope="module")
def mixed_shards(mixed_shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pixelbert_pl.data import PretrainDataModule

    out = tmp_path_factory.mktemp("mixed_shards")
    files = PretrainDataModule(
        tokenizer=str(mixed_shapes_root / "vocab.txt"), karpathy_file=str(mixed_shapes_root / "karpathy.json"),
        image_root=str(mixed_shapes_root), train_splits=["train"], num_workers=0,
    )  # fmt: skip
    write_shards(files.split_records("fit")["train"], out, split="train", records_per_shard=6, seed=0)
    return out


def _bucketed(shards: Path, root: Path, num_workers: int = 0) -> StreamingPretrainDataModule:
    return StreamingPretrainDataModule(
        shards=str(shards), tokenizer=str(root / "vocab.txt"), val_split=None, image_min_size=64,
        image_max_size=128, size_divisor=16, pad_long_sides=[96], text_pad_multiple=8, max_text_length=24,
        batch_size=4, num_workers=num_workers,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bucketed_stream_serves_batches_of_one_shape_and_resumes_exactly(
    mixed_shards, mixed_shapes_root, workers
) -> None:
    from pixelbert_pl.processing.images import image_size
    from pixelbert_pl.processing.shapes import PadShapes

    index = read_shard_index(str(mixed_shards))
    records, images = read_shard(index.urls()[0])
    assert list(index.shards[0].image_sizes) == [image_size(r.image_path, data=images[r.image_path]) for r in records]
    data = _bucketed(mixed_shards, mixed_shapes_root, num_workers=workers)
    shapes = PadShapes.from_config(data.processing)
    assert shapes is not None
    expected = list(data.train_dataloader())
    assert len(expected) == len(data.train_dataloader()) > 0
    pure = sum(len({shapes.bucket(h, w) for h, w in b.image_sizes}) == 1 for b in expected)
    assert all(tuple(b.pixel_values.shape[-2:]) in shapes.shapes for b in expected)
    assert pure >= len(expected) - 4  # at most one mixed batch a shard
    first = data.train_dataloader()
    got = []
    for batch in first:
        got.append(batch.sample_ids.tolist())
        if len(got) == 3:
            state = first.state_dict()
            break
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    assert got + [b.sample_ids.tolist() for b in resumed] == [b.sample_ids.tolist() for b in expected]


def test_bucketed_streaming_needs_an_index_with_image_sizes(mixed_shards, mixed_shapes_root, tmp_path) -> None:
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(mixed_shards, old)
    index = json.loads((old / "train.index.json").read_text())
    for shard in index["shards"]:
        del shard["image_sizes"]  # as written before bucketed batches
    (old / "train.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"no image sizes.*pixelbert-make-shards"):
        _bucketed(old, mixed_shapes_root).train_dataloader()


def _copy(shards: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(shards, tmp_path / "shards"))


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes", "missing"])
def test_a_damaged_or_missing_shard_is_named_with_what_was_expected(shards, tmp_path, damage) -> None:
    index = read_shard_index(str(_copy(shards, tmp_path)))
    shard = Path(index.urls()[3])
    data = shard.read_bytes()
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(
            {
                "truncated": data[: len(data) // 2],
                "empty": b"",
                "random bytes": np.random.default_rng(0).bytes(len(data)),
            }[damage]
        )
    with pytest.raises(ValueError, match="expected a Parquet shard of columns image_id, source") as err:
        read_shard(str(shard))
    assert str(shard) in str(err.value) and "pixelbert-make-shards" in str(err.value)


def test_a_truncated_shard_read_in_a_loader_worker_is_named_in_the_main_process(shards, shapes_root, tmp_path) -> None:
    copy = _copy(shards, tmp_path)
    shard = Path(read_shard_index(str(copy)).urls()[5])
    shard.write_bytes(shard.read_bytes()[:-100])  # a copy cut short
    data = _data(copy, shapes_root, num_workers=2)
    with pytest.raises(ValueError, match="DataLoader worker") as err:
        list(data.train_dataloader())
    assert f"{shard} (listed in {copy / 'train.index.json'}): cannot be read (ArrowInvalid" in str(err.value)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda s: s.update(records=5, caption_counts=s["caption_counts"][:5], image_sizes=s["image_sizes"][:5]),
         "6 rows, but the index lists shards[2].records = 5"),
        (lambda s: s["caption_counts"].__setitem__(1, 4), "row 1 has 5 captions, but the index lists "
         "shards[2].caption_counts[1] = 4"),
    ],
    ids=["records", "caption_counts"],
)  # fmt: skip
def test_an_index_that_disagrees_with_its_shard_names_both(shards, shapes_root, tmp_path, change, found) -> None:
    import json

    copy = _copy(shards, tmp_path)
    index = copy / "train.index.json"
    info = json.loads(index.read_text())
    change(info["shards"][2])
    index.write_text(json.dumps(info))
    with pytest.raises(ValueError) as err:
        list(_data(copy, shapes_root).train_dataloader())
    assert f"{copy / 'train-00002-of-00008.parquet'} (listed in {index}): {found}" in str(err.value)
    assert "write the split again with pixelbert-make-shards" in str(err.value)
