"""Downstream DataModules on the released formats (and on ShapesWorld where a test needs more data): batches,
answer vocabulary, splits, ranks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser

from corpora import VQA_TEST_DEV, VQA_TRAIN, VQA_VAL
from pixelbert_pl.data import NLVR2DataModule, RetrievalDataModule, VQADataModule
from pixelbert_pl.data.annotations import AnnotationError
from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule
from pixelbert_pl.processing.batches import NLVR2Batch, RetrievalImageBatch, RetrievalTrainBatch, VQABatch

SMALL = {"image_min_size": 32, "image_max_size": 64, "size_divisor": 8, "num_workers": 0}


def _vqa(root: Path, tokenizer: str, **kwargs: Any) -> VQADataModule:
    train, val = ("train2014", "val2014")
    return VQADataModule(
        train_questions=[str(root / f"v2_OpenEnded_mscoco_{train}_questions.json")],
        train_annotations=[str(root / f"v2_mscoco_{train}_annotations.json")],
        val_questions=[str(root / f"v2_OpenEnded_mscoco_{val}_questions.json")],
        val_annotations=[str(root / f"v2_mscoco_{val}_annotations.json")],
        test_questions=str(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"),
        image_root=str(root),
        test_image_pattern="test2015/COCO_test2015_{image_id:012d}.jpg",
        tokenizer=tokenizer,
        **SMALL,
        **kwargs,
    )


def test_vqa_answer_vocab_comes_from_train_and_val(vqa_root: Path, minilm_path: str) -> None:
    # multiple_choice_answer counts: red 2 (train + val), yes 2, 4 1, no 1.
    dm = _vqa(vqa_root, minilm_path, answer_min_count=1)
    assert dm.answer_vocab == ["red", "yes", "4", "no"] and dm.num_answers == 4
    assert _vqa(vqa_root, minilm_path, answer_min_count=2).answer_vocab == ["red", "yes"]
    train_only = [str(vqa_root / "v2_mscoco_train2014_annotations.json")]
    assert _vqa(vqa_root, minilm_path, answer_vocab_annotations=train_only, answer_min_count=1).answer_vocab == [
        "4", "no", "red", "yes"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="lower answer_min_count"):
        _ = _vqa(vqa_root, minilm_path).answer_vocab  # the usual 9 is far too many here
    with pytest.raises(ValueError, match="train_questions has 1 files and train_annotations 2"):
        VQADataModule(["q.json"], ["a.json", "b.json"], [], [])


def test_vqa_batches_and_unannotated_predictions(vqa_root: Path, minilm_path: str) -> None:
    dm = _vqa(vqa_root, minilm_path, answer_min_count=1, batch_size=2)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 2 and all(isinstance(b, VQABatch) for b in train)
    assert sorted(q for b in train for q in b.question_ids.tolist()) == sorted(VQA_TRAIN)
    assert train[0].targets.shape == (2, 4) and train[0].input_ids.shape[0] == 2
    val = list(dm.val_dataloader())
    assert [q for b in val for q in b.question_ids.tolist()] == list(VQA_VAL)
    assert val[0].pixel_values.shape[0] == 1 and val[0].image_index.tolist() == [0, 0]  # one image, two questions
    dm.setup("predict")
    (predict,) = list(dm.predict_dataloader())
    assert predict.question_ids.tolist() == list(VQA_TEST_DEV) and not predict.targets.any()
    with pytest.raises(ValueError, match="evaluation server"):
        dm.test_dataloader()


def test_nlvr2_batches(nlvr2_root: Path, minilm_path: str) -> None:
    data = nlvr2_root / "data"
    dm = NLVR2DataModule(
        str(data / "train.json"), str(data / "dev.json"), str(nlvr2_root / "images"), tokenizer=minilm_path,
        batch_size=2, **SMALL,
    )  # fmt: skip
    dm.setup("fit")
    (train,) = list(dm.train_dataloader())
    assert isinstance(train, NLVR2Batch) and train.pixel_values.shape == (4, 3, 40, 40) and train.labels.shape == (2,)
    val = list(dm.val_dataloader())
    assert [i for b in val for i in b.identifiers] == ["dev-850-0-0", "dev-850-1-0", "dev-3-2-1"]
    assert val[1].labels.tolist() == [1]
    with pytest.raises(ValueError, match="no test_file"):
        dm.setup("test")


def test_nlvr2_train_and_dev_must_be_labelled_a_test_file_need_not(nlvr2_root: Path, minilm_path: str) -> None:
    data = nlvr2_root / "data"
    common = {"image_root": str(nlvr2_root / "images"), "tokenizer": minilm_path, **SMALL}
    dm = NLVR2DataModule(str(data / "train.json"), str(data / "dev.json"), test_file=str(data / "test1.json"), **common)
    dm.setup("predict")
    (predict,) = list(dm.predict_dataloader())
    assert predict.labels.tolist() == [-1, -1]
    # An unlabelled file as dev would leave every example out of the accuracy: it is an error, naming file and line.
    dm = NLVR2DataModule(str(data / "train.json"), str(data / "test1.json"), **common)
    with pytest.raises(AnnotationError, match=r"test1\.json: line 1 has no field 'label'"):
        dm.setup("fit")


def test_vqa_empty_question_lists_name_the_argument(vqa_root: Path, minilm_path: str) -> None:
    """The recipes default to `[]`: a forgotten flag must be named, not fail as a missing column in `datasets`."""
    (train_questions, train_annotations), (val_questions, val_annotations) = (
        _vqa(vqa_root, minilm_path).files[split][0] for split in ("train", "val")
    )
    empty_train = VQADataModule([], [], [val_questions], [val_annotations], tokenizer=minilm_path, **SMALL)
    with pytest.raises(ValueError, match=r"train_questions and train_annotations are empty; expected VQA v2 questions"):
        empty_train.setup("fit")
    empty_val = VQADataModule([train_questions], [train_annotations], [], [], tokenizer=minilm_path, **SMALL)
    with pytest.raises(ValueError, match=r"val_questions and val_annotations are empty"):
        empty_val.setup("fit")
    with pytest.raises(ValueError, match=r"val_questions and val_annotations are empty"):
        empty_val.setup("validate")


def test_allow_missing_reaches_the_readers(
    vqa_root: Path, nlvr2_root: Path, flickr_root: Path, minilm_path: str
) -> None:
    """The readers' FileNotFoundError advises allow_missing=True: every DataModule that reads images offers it."""
    (vqa_root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    (nlvr2_root / "images" / "dev" / "dev-850-1-img0.png").unlink()
    (flickr_root / "flickr30k-images" / "10002456.jpg").unlink()
    nlvr2 = [str(nlvr2_root / "data" / f) for f in ("train.json", "dev.json")] + [str(nlvr2_root / "images")]
    flickr = [str(flickr_root / "dataset_flickr30k.json"), str(flickr_root / "flickr30k-images")]
    common = {"tokenizer": minilm_path, **SMALL}
    modules = {
        "vqa": lambda **kw: _vqa(vqa_root, minilm_path, answer_min_count=1, **kw),
        "nlvr2": lambda **kw: NLVR2DataModule(*nlvr2, **common, **kw),
        "retrieval": lambda **kw: RetrievalDataModule(*flickr, train_splits=["train"], **common, **kw),
    }
    for name, make in modules.items():
        with pytest.raises(FileNotFoundError, match=r"1 of .* allow_missing=True"):
            make().setup("fit")
        dm = make(allow_missing=True)
        dm.setup("fit")
        kept = {"vqa": ("train", 3), "nlvr2": ("val", 2), "retrieval": ("train", 3)}[name]
        assert len(dm.records(kept[0])) == kept[1], name
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ShapesWorldVQADataModule, "data")
    assert parser.parse_args(["--data.allow_missing", "true"]).data.allow_missing is True


def test_nlvr2_vilt_layout_keeps_dev_beside_images(nlvr2_root: Path, minilm_path: str) -> None:
    (nlvr2_root / "images" / "dev").rename(nlvr2_root / "dev")
    data = nlvr2_root / "data"
    dm = NLVR2DataModule(
        str(data / "train.json"), str(data / "dev.json"), str(nlvr2_root / "images"), tokenizer=minilm_path,
        eval_image_root=str(nlvr2_root), **SMALL,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.records("val")[0].left_path == str(nlvr2_root / "dev" / "dev-850-0-img0.png")
    assert dm.records("train")[0].left_path.startswith(str(nlvr2_root / "images" / "train"))


def test_retrieval_batches_and_split_texts(flickr_root: Path, minilm_path: str) -> None:
    dm = RetrievalDataModule(
        str(flickr_root / "dataset_flickr30k.json"), str(flickr_root / "flickr30k-images"), train_splits=["train"],
        num_negatives=3, max_eval_images=2, tokenizer=minilm_path, batch_size=2, **SMALL,
    )  # fmt: skip
    dm.setup("fit")
    train = list(dm.train_dataloader())
    pairs = sum(len(r.captions) for r in dm.records("train"))  # an epoch: every image-sentence pair (9)
    assert len(train) == pairs // 2 == 4 and isinstance(train[0], RetrievalTrainBatch)
    assert train[0].group_size == 4 and train[0].input_ids.shape[0] == 8 and train[0].pixel_values.shape[0] == 2
    (val,) = list(dm.val_dataloader())
    assert isinstance(val, RetrievalImageBatch) and val.image_positions.tolist() == [0, 1]
    assert dm.val_texts.text_to_image.tolist() == [0, 0, 0, 1, 1]  # the first 2 val images and their texts
    assert dm.test_texts.text_to_image.tolist() == [0, 0]


def test_vqa_questions_per_image_shares_each_image_between_its_questions(shapes_root: Path) -> None:
    grouped = ShapesWorldVQADataModule(root=str(shapes_root), batch_size=4, num_workers=0, questions_per_image=2)
    plain = ShapesWorldVQADataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    images = [batch.pixel_values.shape[0] for batch in grouped.train_dataloader()]
    # 3 questions per ShapesWorld image: 2 go together, the third pairs with another image's third.
    assert sum(images) < 0.8 * 4 * len(images) and min(images) == 2
    assert sum(b.pixel_values.shape[0] for b in plain.train_dataloader()) > sum(images)
    seen = [int(q) for batch in grouped.train_dataloader() for q in batch.question_ids]
    assert len(set(seen)) == len(seen)  # no question twice in an epoch
    assert set(seen) <= {r.question_id for r in grouped.records("train")}
    assert len(seen) == len(grouped.records("train")) // 4 * 4  # all but the drop_last tail
    with pytest.raises(ValueError, match="questions_per_image=3: expected >= 1 and a divisor of batch_size=4"):
        ShapesWorldVQADataModule(root=str(shapes_root), batch_size=4, questions_per_image=3)


# (module, batch field, the value that field holds for val record r at position i)
SHARDED = [
    ("vqa", "question_ids", lambda r, i: r.question_id),
    ("nlvr2", "identifiers", lambda r, i: r.identifier),
    ("retrieval", "image_positions", lambda r, i: i),
]


@pytest.mark.parametrize(("name", "field", "key"), SHARDED)
def test_two_ranks_evaluate_each_item_exactly_once(shapes_modules: dict[str, Any], name: str, field: str, key) -> None:  # type: ignore[no-untyped-def]
    dm = shapes_modules[name]
    seen, train_batches = [], []
    try:
        for rank in range(2):
            dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what Lightning gives a DDP rank
            seen.append([i for batch in dm.val_dataloader() for i in _as_list(getattr(batch, field))])
            train_batches.append(len(list(dm.train_dataloader())))
    finally:
        dm.trainer = None
    expected = [key(record, i) for i, record in enumerate(dm.records("val"))]
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == sorted(expected)
    assert train_batches[0] == train_batches[1] > 0


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if isinstance(value, torch.Tensor) else list(value)


def test_vqa_bucketed_batches_pad_the_image_count_to_a_multiple(shapes_root: Path) -> None:
    """Two questions an image, 4 a batch: 2 images, or more when a run pairs two images' leftover questions; with
    fixed shapes the count is padded with blank images no question reads, so the CNN meets 2 or 4 images."""
    data = ShapesWorldVQADataModule(
        root=str(shapes_root), batch_size=4, num_workers=0, questions_per_image=2, pad_long_sides=[96]
    )
    assert data.padding.image_multiple == 2
    data.setup("fit")
    counts = set()
    for batch in data.train_dataloader():
        n = batch.pixel_values.shape[0]
        counts.add(n)
        assert n % 2 == 0 and len(batch.image_sizes) == n
        assert set(batch.image_index.tolist()) <= set(range(n))
        blank = sorted(set(range(n)) - set(batch.image_index.tolist()))
        assert all(batch.pixel_values[i].eq(0).all() for i in blank)
    assert counts <= {2, 4}
