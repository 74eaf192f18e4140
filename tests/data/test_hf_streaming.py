"""Pre-training streamed from a `datasets` source (`HFPretrainDataModule`, `source.streaming: true`; issue 34): a
stream of Parquet files whose length is not known in advance, every rank the same batches (2 gloo processes x 2
workers, asserted), fixed padded shapes, and an exact mid-epoch resume, from the loader's state and through
`pixelbert fit --ckpt_path`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pytest
import torch

import hf_corpora
from gloo_ranks import on_gloo_ranks
from pixelbert_pl.data import CaptionColumns, DatasetSource, HFPretrainDataModule
from pixelbert_pl.data.hf_pretraining import CaptionBlockStream
from pixelbert_pl.processing.shapes import PadShapes
from stream_checks import batches_differ, resumed

FILES = 8  # the training split as 8 Parquet files: a stream of 8 shards


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def parquet_stream(root: Path, out: Path, files: int = FILES) -> DatasetSource:
    """ShapesWorld captions in the Flickr30K Karpathy Hub schema, the train split in `files` Parquet files, read as
    a stream (no length known: `datasets` reads the files as it goes)."""
    data = hf_corpora.karpathy(root)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        data["train"].shard(files, i, contiguous=True).to_parquet(str(out / f"train-{i:02d}.parquet"))
    data["validation"].to_parquet(str(out / "validation.parquet"))
    train, val = str(out / "train-*.parquet"), str(out / "validation.parquet")
    return DatasetSource(data_files={"train": train, "validation": val}, streaming=True)


@pytest.fixture(scope="module")
def stream_source(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DatasetSource:
    return parquet_stream(shapes_root, tmp_path_factory.mktemp("stream"))


@pytest.fixture(scope="module")
def mixed_stream(mixed_shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DatasetSource:
    """Images of 9 sizes (24 train images), in 4 files."""
    return parquet_stream(mixed_shapes_root, tmp_path_factory.mktemp("mixed_stream"), files=4)


def _data(source: DatasetSource, root: Path, **kwargs: Any) -> HFPretrainDataModule:
    settings = dict(
        tokenizer=str(root / "vocab.txt"), image_min_size=64, image_max_size=64, max_text_length=24, batch_size=3,
        num_workers=0, batches_per_epoch=10, block_size=4,
    )  # fmt: skip
    return HFPretrainDataModule(source, CaptionColumns(), **{**settings, **kwargs})


def _bucketed(source: DatasetSource, root: Path, **kwargs: Any) -> HFPretrainDataModule:
    return _data(source, root, image_min_size=64, image_max_size=128, size_divisor=16, pad_long_sides=[96],
                 text_pad_multiple=8, **kwargs)  # fmt: skip


def test_streaming_needs_batches_per_epoch_and_a_shard_per_slot(stream_source, shapes_root) -> None:
    with pytest.raises(ValueError, match=r"length is not known in advance: set batches_per_epoch .*"
                       r"--data.init_args.batches_per_epoch"):  # fmt: skip
        _data(stream_source, shapes_root, batches_per_epoch=None).setup("fit")
    data = _data(stream_source, shapes_root, num_workers=2)
    data.trainer = SimpleNamespace(current_epoch=0, world_size=8, global_rank=0)
    with pytest.raises(ValueError, match=r"8 shards for 8 ranks x 2 workers: expected at least one shard per slot; "
                       r"give the stream more shards"):  # fmt: skip
        data.train_dataloader()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_is_batches_per_epoch_and_resumes_exactly(stream_source, shapes_root, workers) -> None:
    data = _data(stream_source, shapes_root, num_workers=workers, mlm_probability=0.15)
    loader = data.train_dataloader()
    assert isinstance(loader.dataset, CaptionBlockStream) and loader.dataset.shard_count == FILES
    expected = list(loader)
    assert len(expected) == len(loader) == 10 and all(b.pixel_values.shape[0] == 3 for b in expected)
    ids = [i for b in expected for i in b.sample_ids.tolist()]
    assert len(set(ids)) == len(ids)  # no pair twice within the epoch (no share ran dry)
    for stop in (1, 4, 9):  # mid-block, across a block / shard, the last batch but one
        assert batches_differ(resumed(data, stop), expected) == 0, stop
    # Validation: the split read whole from its stream, one item per image.
    data.setup("validate")
    val = list(data.val_dataloader())
    assert sum(b.pixel_values.shape[0] for b in val) == len(data.val_records) == 6
    # The next epoch is another order; a state saved at the epoch's end resumes with it.
    state_loader = data.train_dataloader()
    list(state_loader)
    state = state_loader.state_dict()
    data.trainer = SimpleNamespace(current_epoch=1, world_size=1, global_rank=0)
    second = list(data.train_dataloader())
    assert batches_differ(second, expected) > 0
    restored = data.train_dataloader()
    restored.load_state_dict(state)
    assert batches_differ(list(restored), second) == 0


def test_a_slot_that_runs_dry_reads_its_shards_again(stream_source, shapes_root) -> None:
    """48 images over 8 shards: a slot's share of 6 images (30 pairs) gives 10 batches of 3 a pass; 25 is 2.5 passes."""
    data = _data(stream_source, shapes_root, batches_per_epoch=25, block_size=16)
    data.trainer = SimpleNamespace(current_epoch=0, world_size=8, global_rank=5)
    batches = list(data.train_dataloader())
    assert len(batches) == 25
    ids = [tuple(b.sample_ids.tolist()) for b in batches]
    assert len(set(ids)) == len(ids)  # each pass its own order
    assert batches_differ(resumed(data, 13), batches) == 0  # stopped in the second pass


def test_a_bucketed_stream_serves_batches_of_one_shape_and_resumes_exactly(mixed_stream, mixed_shapes_root) -> None:
    data = _bucketed(mixed_stream, mixed_shapes_root, num_workers=2, batch_size=4, batches_per_epoch=9,
                     block_size=6)  # fmt: skip
    shapes = PadShapes.from_config(data.processing)
    assert shapes is not None
    expected = list(data.train_dataloader())
    assert len(expected) == 9 and all(tuple(b.pixel_values.shape[-2:]) in shapes.shapes for b in expected)
    pure = sum(len({shapes.bucket(h, w) for h, w in b.image_sizes}) == 1 for b in expected)
    assert pure >= 6, pure  # mixed only where a block's bucket counts leave no whole batch
    assert batches_differ(resumed(data, 3), expected) == 0


def test_json_lines_of_image_paths_and_one_caption_a_row_stream_too(shapes_root, tmp_path) -> None:
    """Rows of (image file, one caption) in 4 JSON lines files, the images read from `image_root`: rows of one file
    are one image with all its captions (within a block), bucketed from the files' headers."""
    images = json.loads((shapes_root / "karpathy.json").read_text())["images"]
    train = [image for image in images if image["split"] == "train"]
    for i in range(4):
        rows = [{"file": f"{image['filepath']}/{image['filename']}", "text": sentence["raw"]}
                for image in train[i::4] for sentence in image["sentences"]]  # fmt: skip
        (tmp_path / f"train-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = {"train": str(tmp_path / "train-*.jsonl"), "validation": str(tmp_path / "train-0.jsonl")}
    source = DatasetSource(data_files=files, streaming=True)
    data = HFPretrainDataModule(
        source, CaptionColumns(image="file", caption="text"), image_root=str(shapes_root),
        tokenizer=str(shapes_root / "vocab.txt"), image_min_size=64, image_max_size=128, size_divisor=16,
        pad_long_sides=[96], max_text_length=24, batch_size=3, num_workers=2, batches_per_epoch=7, block_size=20,
    )  # fmt: skip
    expected = list(data.train_dataloader())
    assert len(expected) == 7 and all(b.pixel_values.shape[0] == 3 for b in expected)
    assert all(itm.tolist().count(0) == 3 for itm in (b.itm_labels for b in expected))  # a negative per image
    assert batches_differ(resumed(data, 4), expected) == 0


def _rank_run(rank: int, world: int, source: DatasetSource, root: str, cache: str) -> tuple[int, int, list, int]:
    datasets.config.HF_DATASETS_CACHE = f"{cache}-{rank}"
    data = _bucketed(source, Path(root), num_workers=2, batch_size=4, batches_per_epoch=5, block_size=4)
    data.trainer = SimpleNamespace(current_epoch=0, world_size=world, global_rank=rank)  # what Lightning gives a rank
    loader = data.train_dataloader()
    expected = list(loader)
    again = resumed(data, 3)  # stopped mid-epoch, the two workers at different points
    return (
        len(loader),
        len(expected),
        [i for b in expected for i in b.sample_ids.tolist()],
        batches_differ(again, expected),
    )


def test_two_gloo_ranks_with_two_workers_serve_equal_batches_and_resume_exactly(
    mixed_stream, mixed_shapes_root, tmp_path
) -> None:
    """4 shards for 4 slots, of unequal sizes once blocked; 5 batches a rank (3 + 2 over its workers)."""
    args = (mixed_stream, str(mixed_shapes_root), str(tmp_path / "hf-cache"))
    (len0, served0, ids0, differ0), (len1, served1, ids1, differ1) = on_gloo_ranks(_rank_run, args, tmp_path)
    assert len0 == len1 == served0 == served1 == 5
    assert (differ0, differ1) == (0, 0)
    assert not set(ids0) & set(ids1)  # disjoint shares of the shards


def test_pixelbert_fit_streams_a_source_on_the_harness_recipe(stream_source, shapes_root, tmp_path) -> None:
    """The demo pre-training recipe with its data swapped for a streamed source on the command line: 2 epochs of 3
    batches, then a step of the third."""
    from pixelbert_pl.cli import main
    from pixelbert_pl.data.streaming import EpochStreamLoader
    from pixelbert_pl.harness.demo import CONFIG

    source = json.dumps({"data_files": stream_source.data_files})
    data = {"source": source, "source.streaming": "true", "batches_per_epoch": "3", "block_size": "8",
            "num_workers": "2", "batch_size": "4", "tokenizer": str(shapes_root / "vocab.txt")}  # fmt: skip
    cli = main([
        "fit", "--config", str(CONFIG), "--data", "pixelbert_pl.data.HFPretrainDataModule",
        *[f"--data.init_args.{k}={v}" for k, v in data.items()], "--trainer.max_steps", "7",
        "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
        "false", "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])  # fmt: skip
    assert cli.trainer.global_step == 7 and cli.trainer.num_training_batches == 3  # 3 an epoch, as asked
    loader = cli.trainer.train_dataloader
    assert isinstance(loader, EpochStreamLoader) and isinstance(loader.dataset, CaptionBlockStream)
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


@pytest.mark.parametrize("source", ["mid_epoch", "epoch_end_step"])
def test_a_streamed_run_resumes_exactly_through_pixelbert_fit(stream_source, shapes_root, tmp_path, source) -> None:
    """`pixelbert fit --ckpt_path` from a checkpoint half-way through the second epoch (or at the first's last
    step) ends with the tensors of an uninterrupted run: 0 differ (tests/resume_runs.py, as for shards)."""
    from resume_runs import BATCH_SIZE, recipe_data, resume_with_data

    settings = recipe_data("image_min_size", "image_max_size", "captions_per_image", "mlm_probability",
                           "mlm_word_probabilities", "seed")  # fmt: skip
    settings.update(source={"data_files": stream_source.data_files, "streaming": True}, batches_per_epoch=8,
                    block_size=4, tokenizer=str(shapes_root / "vocab.txt"), max_text_length=24,
                    batch_size=BATCH_SIZE, num_workers=2)  # fmt: skip
    result = resume_with_data(shapes_root, tmp_path, "pixelbert_pl.data.HFPretrainDataModule", settings, 8, 2, source)
    assert (result.differ, result.warned_not_resumable) == (0, False), result


def test_check_data_scans_a_stream_block_by_block(shapes_root: Path, tmp_path: Path, capsys) -> None:
    """`pixelbert-check-data` on a streamed source reads the training stream block by block and names the row whose
    bytes are no image (it used to list no training record and report 0)."""
    from pixelbert_pl.check_data import main as check_data

    data = hf_corpora.karpathy(shapes_root)
    train = data["train"].cast_column("image", datasets.Image(decode=False))
    train = train.map(lambda row, i: {"image": {"bytes": b"not a png" if i == 5 else row["image"]["bytes"],
                                                "path": row["image"]["path"]}}, with_indices=True)  # fmt: skip
    for i in range(2):
        train.shard(2, i, contiguous=True).to_parquet(str(tmp_path / f"train-{i}.parquet"))
    data["validation"].to_parquet(str(tmp_path / "validation.parquet"))
    files = {"train": str(tmp_path / "train-*.parquet"), "validation": str(tmp_path / "validation.parquet")}
    recipe = {"data": {"class_path": "pixelbert_pl.data.HFPretrainDataModule", "init_args": {
        "source": {"data_files": files, "streaming": True}, "tokenizer": str(shapes_root / "vocab.txt"),
        "batches_per_epoch": 4, "block_size": 8, "num_workers": 0}}}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    assert check_data(["--config", str(tmp_path / "recipe.yaml"), "--workers", "1"]) == 1  # 1 of 48 > 1%
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:3]}
    assert rows["train"][:3] == [str(len(train)), str(len(train)), "1"]
    assert rows["val"][:3] == [str(len(data["validation"]))] * 2 + ["0"]
    assert "train: streamed, read in 6 block(s)" in out  # 48 rows in order, blocks of 8


def test_an_image_cache_given_to_a_stream_is_named_as_unused(stream_source, shapes_root) -> None:
    """A files recipe (image_cache_mb: 256) with its data swapped for a stream: the cache does nothing, and says so."""
    data = _data(stream_source, shapes_root, image_cache_mb=256)
    with pytest.warns(UserWarning, match=r"image_cache_mb=256 is not used when streaming"):
        next(iter(data.train_dataloader()))


def test_height_and_width_columns_of_a_stream_give_its_sizes(shapes_root, tmp_path, monkeypatch) -> None:
    """With `height` / `width` columns the blocks' buckets come from them, no header read (without, headers are)."""
    from pixelbert_pl.data import hf_pretraining

    data = hf_corpora.karpathy(shapes_root)
    sized = data["train"].map(lambda row: {"height": 100, "width": 200})
    for i in range(2):
        sized.shard(2, i, contiguous=True).to_parquet(str(tmp_path / f"train-{i}.parquet"))
        data["train"].shard(2, i, contiguous=True).to_parquet(str(tmp_path / f"plain-{i}.parquet"))
    data["validation"].to_parquet(str(tmp_path / "validation.parquet"))
    monkeypatch.setattr(hf_pretraining, "image_size", lambda *args: pytest.fail("a header was read"))
    for train, reads_headers in (("train-*.parquet", False), ("plain-*.parquet", True)):
        files = {"train": str(tmp_path / train), "validation": str(tmp_path / "validation.parquet")}
        module = _bucketed(DatasetSource(data_files=files, streaming=True), shapes_root, batches_per_epoch=4,
                           block_size=8)  # fmt: skip
        if reads_headers:
            with pytest.raises(pytest.fail.Exception, match="a header was read"):
                list(module.train_dataloader())
        else:
            assert len(list(module.train_dataloader())) == 4
