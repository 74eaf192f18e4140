"""The ShapesWorld DataModules: the corpus generated on first use (and NLVR2 added to one written without it),
read through the published-format readers of the library DataModules they extend, from the CLI with only `root`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonargparse import ArgumentParser

import pixelbert_pl.harness.shapes
from pixelbert_pl.data.captions import karpathy_coco_ids
from pixelbert_pl.harness.datamodules import (
    ShapesWorldDataModule,
    ShapesWorldNLVR2DataModule,
    ShapesWorldRetrievalDataModule,
    ShapesWorldVQADataModule,
)
from pixelbert_pl.harness.shapes import COLOURS, ShapesWorldConfig, generate


def test_shapesworld_reads_through_the_published_format_readers(shapes_root) -> None:
    dm = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.vocab_size == len(dm.tokenizer) < 1000
    assert all(r.source == "coco" and len(r.captions) == 5 for r in dm.train_records)
    assert not {r.image_id for r in dm.train_records} & {r.image_id for r in dm.val_records}


def test_shapesworld_max_objects_generates_one_shape_scenes(tmp_path) -> None:
    """The demo warm-up's corpus: `max_objects=1` and `num_nlvr2` reach the generator; every caption names the one
    shape."""
    dm = ShapesWorldDataModule(
        root=str(tmp_path / "one"), num_images=20, image_size=64, max_objects=1, num_nlvr2=0, num_workers=0
    )
    scenes = json.loads((tmp_path / "one" / "scenes.json").read_text())
    assert scenes["config"]["max_objects"] == 1 and {len(s["objects"]) for s in scenes["scenes"]} == {1}
    assert scenes["config"]["num_nlvr2"] == 0 and not (tmp_path / "one" / "nlvr2").exists()
    dm.setup("fit")
    assert all(sum(w in COLOURS for w in c.split()) == 1 for r in dm.train_records for c in r.captions)


def test_shapesworld_vqa_splits_by_karpathy_split(shapes_modules: dict[str, Any], shapes_root: Path) -> None:
    dm = shapes_modules["vqa"]
    for split in ("train", "val", "test"):
        records = dm.records(split)
        assert {r.image_id for r in records} == karpathy_coco_ids(shapes_root / "karpathy.json", [split])
        assert len(records) == 3 * len({r.image_id for r in records})
    # answer_min_count=1: every answer of the closed grammar that train or val gives is a class.
    assert {"yes", "no", "red", "circle", "small", "1"} <= set(dm.answer_vocab)
    assert dm.vocab_size == len(dm.tokenizer) < 1000
    batch = next(iter(dm.train_dataloader()))
    assert batch.pixel_values.shape[1:] == (3, 96, 96) and batch.targets.shape == (4, dm.num_answers)
    assert batch.targets.max(1).values.ge(0.9).all()  # ShapesWorld answers are always in the vocabulary
    assert next(iter(dm.test_dataloader())).targets.any()  # ShapesWorld's test split is annotated


def test_shapesworld_nlvr2_and_retrieval_batches(shapes_modules: dict[str, Any]) -> None:
    nlvr2 = next(iter(shapes_modules["nlvr2"].train_dataloader()))
    assert nlvr2.pixel_values.shape == (8, 3, 96, 96) and nlvr2.input_ids.shape[0] == 4
    assert set(nlvr2.labels.tolist()) <= {0, 1}
    retrieval = shapes_modules["retrieval"]
    train = next(iter(retrieval.train_dataloader()))
    assert train.group_size == 5 and train.input_ids.shape[0] == 20
    texts = retrieval.val_texts
    assert texts.input_ids.shape[0] == 5 * len(retrieval.records("val"))
    assert not (texts.input_ids == retrieval.tokenizer.unk_token_id).any()


def test_shapesworld_corpus_is_generated_when_missing(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_generate(out: Path, config: Any, seed: int) -> None:
        calls.append((config.num_images, config.image_size, seed))
        shutil.copytree(shapes_root, out, dirs_exist_ok=True)

    monkeypatch.setattr(pixelbert_pl.harness.shapes, "generate", fake_generate)
    root = tmp_path / "fresh"
    ShapesWorldNLVR2DataModule(root=str(root), num_images=60, image_size=96, generator_seed=3)
    assert calls == [(60, 96, 3)] and (root / "nlvr2" / "train.json").is_file()
    ShapesWorldVQADataModule(root=str(root))  # already there: not generated again
    assert len(calls) == 1


def test_nlvr2_is_added_to_a_corpus_generated_without_it(tmp_path: Path) -> None:
    """The demo's pre-training writes its corpus with `num_nlvr2: 0`; its NLVR2 run then adds the examples."""
    root = tmp_path / "no_nlvr2"
    generate(root, ShapesWorldConfig(num_images=12, num_nlvr2=0), seed=2)
    dm = ShapesWorldNLVR2DataModule(root=str(root), num_nlvr2=10, num_workers=0)
    assert [len((root / "nlvr2" / f"{s}.json").read_text().splitlines()) for s in ("train", "dev", "test")] == [8, 1, 1]
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 8
    with pytest.raises(ValueError, match="num_nlvr2=0"):
        ShapesWorldNLVR2DataModule(root=str(root), num_nlvr2=0)


@pytest.mark.parametrize("cls", [ShapesWorldVQADataModule, ShapesWorldNLVR2DataModule, ShapesWorldRetrievalDataModule])
def test_cli_needs_only_the_shapesworld_root(cls: type, shapes_root: Path) -> None:
    # LightningCLI builds its parser like this: the file arguments the variant fills in must not be required.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    config = parser.parse_args(["--data.root", str(shapes_root)])
    dm = parser.instantiate_classes(config).data
    assert isinstance(dm, cls) and dm.processing.image_min_size == 96 and dm.processing.tokenizer.endswith("vocab.txt")


def test_hard_negatives_are_false_one_word_twins_of_matched_captions(shapes_root: Path) -> None:
    """`hard_negative_probability=1`: every ITM negative of training is a twin of one of the item's matched captions
    (its hard_negatives.json entry, false for the scene) with its swapped word never masked; validation keeps other
    images' captions, and 0 draws exactly the samples of a DataModule without the option."""
    from pixelbert_pl.harness.shapes import SHAPES, caption_is_true

    scenes = {s["image_id"]: s for s in json.loads((shapes_root / "scenes.json").read_text())["scenes"]}
    common = {"root": str(shapes_root), "batch_size": 4, "num_workers": 0, "captions_per_image": 4, "seed": 3}
    hard = ShapesWorldDataModule(**common, mlm_probability=0.0, hard_negative_probability=1.0)
    hard.setup("fit")
    twins = hard.hard_negatives()
    assert {(r.image_id, c) for r in hard.train_records for c in r.captions} & set(twins)
    assert all(not caption_is_true(t, scenes[int(i.split(":")[1])]) for (i, _), found in twins.items() for t in found)
    train = hard.dataset(hard.train_records)
    for key in range(16):
        item, record = train[key], train.records[train.pairs.captions(key, 0, train.seed)[0]]
        rows = [tuple(ids) for ids in item["input_ids"]]  # mlm_probability 0: the texts' own tokens
        matched = [c for c in record.captions if tuple(train.token_ids([c])[0]) in rows[:2]]
        allowed = {tuple(train.token_ids([t])[0]) for c in matched for t in twins.get((record.image_id, c), [])}
        assert item["itm_labels"] == [1, 1, 0, 0] and set(rows[2:]) <= allowed

    # Shape words masked always: a shape twin's swapped shape word still shows, so the row stays false.
    masked = ShapesWorldDataModule(
        **common, mlm_word_probabilities={s: 1.0 for s in SHAPES}, hard_negative_probability=1.0,
        hard_negative_kinds=["shape"],
    )  # fmt: skip
    masked.setup("fit")
    shape_ids = set(masked.tokenizer.convert_tokens_to_ids(list(SHAPES)))
    train = masked.dataset(masked.train_records)
    assert all(shape_ids & set(train[k]["input_ids"][row]) for k in range(16) for row in (2, 3))
    assert masked.dataset(masked.val_records, train=False).hard_negative_probability == 0

    plain, off = ShapesWorldDataModule(**common), ShapesWorldDataModule(**common, hard_negative_probability=0.0)
    plain.setup("fit"), off.setup("fit")
    assert all(
        off.dataset(off.train_records)[k]["input_ids"] == plain.dataset(plain.train_records)[k]["input_ids"]
        for k in range(8)
    )
    with pytest.raises(ValueError, match=r"hard_negative_kinds: \['size'\]"):
        ShapesWorldDataModule(**common, hard_negative_kinds=["size"])
