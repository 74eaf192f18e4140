"""Every task trains on a streamed `datasets` source (`source.streaming: true`, hf_streaming.py; issue 34): VQA,
retrieval, NLVR2 pairs and classification read Parquet files as a stream of unknown length, block by block, with
each task's own row reader, dataset and collate; every rank serves `batches_per_epoch` batches, a stopped epoch
resumes exactly, evaluation splits are read whole, and VQA's answer classes are counted in one cached pass."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pytest
import torch

import hf_corpora
from pixelbert_pl.data import (
    DatasetSource,
    HFClassificationDataModule,
    HFNLVR2DataModule,
    HFRetrievalDataModule,
    HFVQADataModule,
    PairColumns,
)
from pixelbert_pl.data import vqa as vqa_module
from pixelbert_pl.data.hf_streaming import TaskBlockStream
from stream_checks import batches_differ, resumed

SETTINGS: dict[str, Any] = {
    "image_min_size": 64, "image_max_size": 128, "size_divisor": 16, "pad_long_sides": [96], "max_text_length": 24,
    "batch_size": 4, "num_workers": 0, "batches_per_epoch": 6, "block_size": 12,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _parquet(data: datasets.DatasetDict, out: Path, files: int = 4) -> DatasetSource:
    """The train split in `files` Parquet files (a stream of as many shards), the others one file each."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        data["train"].shard(files, i, contiguous=True).to_parquet(str(out / f"train-{i:02d}.parquet"))
    for split in ("validation", "test"):
        if split in data:
            data[split].to_parquet(str(out / f"{split}.parquet"))
    names = {split: str(out / f"{split}.parquet") for split in ("validation", "test") if split in data}
    return DatasetSource(data_files={"train": str(out / "train-*.parquet"), **names}, streaming=True)


@pytest.fixture(scope="module")
def streams(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DatasetSource]:
    out = tmp_path_factory.mktemp("task_streams")
    pairs = hf_corpora.snli_ve(shapes_root).cast_column("image", datasets.Image(decode=False))
    pairs = pairs.map(lambda row: {"right": row["image"], "label": row["gold_label"] == "entailment"})
    return {
        "vqa": _parquet(hf_corpora.vqa_v2(shapes_root), out / "vqa"),
        "karpathy": _parquet(hf_corpora.karpathy(shapes_root), out / "karpathy"),
        "snli_ve": _parquet(hf_corpora.snli_ve(shapes_root), out / "snli_ve"),
        "pairs": _parquet(pairs.cast_column("right", datasets.Image()), out / "pairs"),
    }


def _module(task: str, source: DatasetSource, root: Path, **kwargs: Any) -> Any:
    settings = {**SETTINGS, "tokenizer": str(root / "vocab.txt"), **kwargs}
    if task == "vqa":
        return HFVQADataModule(source, answer_min_count=1, **settings)
    if task == "karpathy":
        return HFRetrievalDataModule(source, num_negatives=2, **settings)
    if task == "snli_ve":
        return HFClassificationDataModule(source, list(hf_corpora.SNLI_LABELS), **settings)
    columns = PairColumns(left="image", right="right", sentence="sentence", label="label", identifier=None)
    return HFNLVR2DataModule(source, columns, **settings)


@pytest.mark.parametrize("task", ["vqa", "karpathy", "snli_ve", "pairs"])
def test_every_task_streams_an_epoch_of_fixed_shapes_and_resumes_exactly(streams, shapes_root, task) -> None:
    module = _module(task, streams[task], shapes_root, num_workers=2)
    loader = module.train_dataloader()
    assert isinstance(loader.dataset, TaskBlockStream) and loader.dataset.shard_count == 4
    expected = list(loader)
    shapes = module.padding.shapes
    assert len(expected) == len(loader) == 6
    assert all(tuple(b.pixel_values.shape[-2:]) in shapes.shapes for b in expected)
    assert all(not (b.input_ids == module.tokenizer.unk_token_id).all() for b in expected)
    assert batches_differ(resumed(module, 2), expected) == 0  # stopped mid-epoch, the two workers at different points
    # Evaluation: the split read whole from its stream, in order: the batches the map-style source gives.
    mapped = _module(task, DatasetSource(data_files=streams[task].data_files), shapes_root)
    module.setup("validate")
    mapped.setup("validate")
    val = list(module.val_dataloader())
    assert val and batches_differ(val, list(mapped.val_dataloader())) == 0


def test_two_ranks_serve_equal_batches_from_disjoint_shards(streams, shapes_root) -> None:
    served, questions = [], []
    for rank in (0, 1):
        module = _module("vqa", streams["vqa"], shapes_root, batches_per_epoch=5)
        module.trainer = SimpleNamespace(current_epoch=0, world_size=2, global_rank=rank)
        batches = list(module.train_dataloader())
        served.append(len(batches))
        questions.append({q for b in batches for q in b.question_ids.tolist()})
    assert served == [5, 5] and not questions[0] & questions[1]


def test_vqa_targets_from_a_stream_equal_the_map_style_ones(streams, shapes_root) -> None:
    """Same answer classes (counted in one pass over the stream's answer columns, then cached), and every streamed
    question's soft targets equal to those the map-style DataModule gives the same question."""
    source = streams["vqa"]
    streamed = _module("vqa", source, shapes_root)
    mapped = _module("vqa", DatasetSource(data_files=source.data_files), shapes_root)
    assert streamed.answer_vocab == mapped.answer_vocab and len(streamed.answer_vocab) > 3
    targets = {}
    for batch in mapped.train_dataloader():
        targets.update(zip(batch.question_ids.tolist(), batch.targets, strict=True))
    batches = list(streamed.train_dataloader())
    streamed_targets = [(q, t) for b in batches for q, t in zip(b.question_ids.tolist(), b.targets, strict=True)]
    assert streamed_targets and all(torch.equal(t, targets[q]) for q, t in streamed_targets)

    def no_second_pass(*args: Any) -> Any:
        raise AssertionError("the answers were counted again")

    vqa_module._stream_answers, real = no_second_pass, vqa_module._stream_answers
    try:
        assert _module("vqa", source, shapes_root).answer_vocab == mapped.answer_vocab  # from the cache
    finally:
        vqa_module._stream_answers = real


def test_pixelbert_fit_streams_vqa_on_the_demo_recipe(streams, shapes_root, tmp_path) -> None:
    from pixelbert_pl.cli import main

    configs = Path(__file__).resolve().parents[2] / "src" / "pixelbert_pl" / "harness" / "configs"
    data = {**SETTINGS, "tokenizer": str(shapes_root / "vocab.txt"), "answer_min_count": 1, "image_cache_mb": 0,
            "source": json.dumps({"data_files": streams["vqa"].data_files, "streaming": True})}  # fmt: skip
    cli = main([
        "fit", "--config", str(configs / "vqa_shapes.yaml"), "--data", "pixelbert_pl.data.HFVQADataModule",
        *[f"--data.init_args.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in data.items()],
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])  # fmt: skip
    assert cli.trainer.global_step == 4 and cli.trainer.num_training_batches == 6
    assert cli.model.hparams.answer_vocab == cli.datamodule.answer_vocab
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_check_data_scans_a_task_stream_block_by_block(shapes_root, tmp_path, capsys) -> None:
    """`pixelbert-check-data` on a streamed classification source reads its training rows block by block and finds
    the one whose bytes are no image."""
    from pixelbert_pl.check_data import main as check_data

    data = hf_corpora.snli_ve(shapes_root).cast_column("image", datasets.Image(decode=False))
    broken = data["train"].map(lambda row, i: {"image": {"bytes": b"not a png" if i == 5 else row["image"]["bytes"],
                                                         "path": row["image"]["path"]}}, with_indices=True)  # fmt: skip
    source = _parquet(datasets.DatasetDict({"train": broken, "validation": data["validation"]}), tmp_path / "snli", 2)
    recipe = {
        "data": {
            "class_path": "pixelbert_pl.data.HFClassificationDataModule",
            "init_args": {
                "source": {"data_files": source.data_files, "streaming": True},
                "labels": list(hf_corpora.SNLI_LABELS),
                "tokenizer": str(shapes_root / "vocab.txt"),
                "batches_per_epoch": 2,
                "block_size": 16,
                "num_workers": 0,
            },
        }
    }
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    assert check_data(["--config", str(tmp_path / "recipe.yaml"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:3]}
    assert rows["train"][:3] == [str(len(broken)), str(len(broken)), "1"]
    assert rows["val"][2] == "0" and f"read in {-(-len(broken) // 16)} block(s)" in out


def test_a_streamed_split_column_keeps_each_splits_rows(shapes_root, tmp_path) -> None:
    """Flickr30K as on the Hub: one source split, a `split` column saying each row's. Streamed, training reads the
    train rows of each block (blocks of val / test rows alone serve nothing), evaluation the val rows."""
    data = hf_corpora.karpathy(shapes_root)
    rows = datasets.concatenate_datasets([data[s] for s in ("validation", "train", "test")])
    rows.to_parquet(str(tmp_path / "flickr30k.parquet"))
    source = DatasetSource(data_files={"test": str(tmp_path / "flickr30k.parquet")}, splits={"train": "test",
                           "val": "test"}, streaming=True)  # fmt: skip
    settings = {**SETTINGS, "tokenizer": str(shapes_root / "vocab.txt"), "batches_per_epoch": 8, "block_size": 6}
    module = HFRetrievalDataModule(source, split_column="split", num_negatives=2, **settings)
    captions = {split: {c for row in data[split] for c in row["caption"]} for split in ("train", "validation")}
    read = [c for records, _ in module.stream_blocks("train", 6) for r in records for c in r.captions]
    assert read and set(read) <= captions["train"]  # the blocks' train rows alone, as training reads them
    assert len(list(module.train_dataloader())) == 8
    module.setup("validate")
    assert {c for r in module.records("val") for c in r.captions} == captions["validation"]
