"""Retrieval samples: negatives from other images only, per-sample determinism, evaluation images and texts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from corpora import FLICKR, LANDSCAPE, PORTRAIT
from pixelbert_pl.data.captions import ImageCaptions, read_karpathy
from pixelbert_pl.data.retrieval import RetrievalImageDataset, RetrievalTrainDataset, retrieval_texts
from pixelbert_pl.processing import ImageTransform, load_tokenizer
from pixelbert_pl.processing.batches import (
    RetrievalImageBatch,
    RetrievalTrainBatch,
    collate_retrieval_images,
    collate_retrieval_train,
)

TRANSFORM = ImageTransform(32, 64, size_divisor=8)


@pytest.fixture
def train_dataset(flickr_root: Path, minilm_path: str) -> RetrievalTrainDataset:
    records = read_karpathy(flickr_root / "dataset_flickr30k.json", flickr_root / "flickr30k-images", ["train"])
    return RetrievalTrainDataset(records, TRANSFORM, load_tokenizer(minilm_path), 16, num_negatives=5, seed=7)


def _texts(dataset: RetrievalTrainDataset, item: dict) -> list[str]:
    return [dataset.tokenizer.decode(ids, skip_special_tokens=True) for ids in item["input_ids"]]


def test_positive_first_then_negatives_from_other_images_only(train_dataset: RetrievalTrainDataset) -> None:
    lower = {r.image_id: [c.lower() for c in r.captions] for r in train_dataset.records}
    for index in range(len(train_dataset)):
        record = train_dataset.records[train_dataset.pairs.locate(index)[0]]
        own = lower[record.image_id]
        others = {c for image_id, captions in lower.items() if image_id != record.image_id for c in captions}
        for epoch in range(6):
            positive, *negatives = _texts(train_dataset, train_dataset[(epoch, index)])
            assert positive in own and len(negatives) == 5
            # "A sunny day." belongs to images 0 and 2, so it is never a negative of either.
            assert all(n in others and n not in own for n in negatives)


def test_an_epoch_has_every_image_sentence_pair_as_a_positive_once(train_dataset: RetrievalTrainDataset) -> None:
    records = train_dataset.records
    expected = sorted((r.image_id, c.lower()) for r in records for c in r.captions)
    assert len(train_dataset) == len(expected) > len(records)
    for epoch in (0, 3):
        positives = []
        for index in range(len(train_dataset)):
            record = records[train_dataset.pairs.locate(index)[0]]
            positives.append((record.image_id, _texts(train_dataset, train_dataset[(epoch, index)])[0]))
        assert sorted(positives) == expected


def test_sample_is_a_function_of_seed_epoch_and_index(train_dataset: RetrievalTrainDataset) -> None:
    first = train_dataset[(3, 1)]
    assert first["input_ids"] == train_dataset[(3, 1)]["input_ids"]
    assert any(train_dataset[(epoch, 1)]["input_ids"] != first["input_ids"] for epoch in range(4, 8))
    reseeded = RetrievalTrainDataset(train_dataset.records, TRANSFORM, train_dataset.tokenizer, 16, 5, seed=8)
    assert any(reseeded[(epoch, 1)]["input_ids"] != train_dataset[(epoch, 1)]["input_ids"] for epoch in range(4))


def test_no_possible_negative_is_an_error_not_a_false_negative(minilm_path: str) -> None:
    records = [ImageCaptions(f"x:{i}", f"/nowhere/{i}.jpg", ["the same caption"], "x") for i in range(3)]
    dataset = RetrievalTrainDataset(records, TRANSFORM, load_tokenizer(minilm_path), num_negatives=1)
    with pytest.raises(ValueError, match=r"image x:1 \(/nowhere/1\.jpg\): 1000 captions drawn .* all among its own"):
        dataset.load((0, 1))  # the negatives are drawn before the (absent) image is read
    with pytest.raises(ValueError, match="at least 2 images"):
        RetrievalTrainDataset(records[:1], TRANSFORM, dataset.tokenizer)


def test_train_collate_groups_rows_by_image(train_dataset: RetrievalTrainDataset) -> None:
    firsts = [0, *train_dataset.pairs.ends[:2].tolist()]  # the first pair of images 0, 1 and 2
    batch = collate_retrieval_train([train_dataset[(0, i)] for i in firsts], pad_token_id=0)
    assert batch.group_size == 6 and batch.input_ids.shape[0] == 18
    assert batch.image_index.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert batch.attention_mask.dtype == torch.bool and torch.equal(batch.attention_mask, batch.input_ids != 0)
    assert batch.pixel_values.shape == (3, 3, 40, 40)
    assert [int(batch.pixel_mask[i].sum()) for i in range(3)] == [32 * 40] * 3
    assert isinstance(move_data_to_device(batch, torch.device("cpu")), RetrievalTrainBatch)


def test_eval_images_and_texts_of_a_split(flickr_root: Path, minilm_path: str) -> None:
    records = read_karpathy(flickr_root / "dataset_flickr30k.json", flickr_root / "flickr30k-images", ["val"])
    texts = retrieval_texts(records, load_tokenizer(minilm_path), max_text_length=16)
    val_captions = [captions for split, captions in FLICKR.values() if split == "val"]
    assert texts.text_to_image.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert texts.input_ids.shape[0] == sum(map(len, val_captions)) == 7
    assert texts.attention_mask.dtype == torch.bool and torch.equal(texts.attention_mask, texts.input_ids != 0)

    dataset = RetrievalImageDataset(records, TRANSFORM)
    batch = collate_retrieval_images([dataset[(0, 2)], dataset[(0, 1)]])
    assert batch.image_positions.tolist() == [2, 1]
    # Val images 4, 5, 6 of the file: 4 and 6 landscape, 5 portrait.
    for row, (width, height) in enumerate([LANDSCAPE, PORTRAIT]):
        assert batch.pixel_mask[row].sum() == width * height and batch.pixel_mask[row, :height, :width].all()
    assert isinstance(move_data_to_device(batch, torch.device("cpu")), RetrievalImageBatch)
