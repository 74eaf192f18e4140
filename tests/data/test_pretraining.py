"""Pre-training samples: masking rules, ITM negatives, per-sample determinism, equal batches across ranks."""

import numpy as np
import pytest
import torch

from pixelbert_pl.data.captions import ImageCaptions, read_karpathy
from pixelbert_pl.data.pretraining import CaptionPretrainDataset, matched_rows
from pixelbert_pl.data.samplers import EpochKeyedSampler
from pixelbert_pl.processing import ImageTransform, load_tokenizer
from pixelbert_pl.processing.batches import IGNORE_INDEX, collate_pretrain


@pytest.fixture
def dataset(shapes_root) -> CaptionPretrainDataset:
    records = read_karpathy(shapes_root / "karpathy.json", shapes_root, ["train"])
    return CaptionPretrainDataset(
        records, ImageTransform(96, 96), load_tokenizer(shapes_root / "vocab.txt"), captions_per_image=4, seed=3
    )


def test_item_is_a_function_of_seed_epoch_and_index(dataset) -> None:
    first, again = dataset[(2, 5)], dataset[(2, 5)]
    assert first["input_ids"] == again["input_ids"] and first["mlm_labels"] == again["mlm_labels"]
    assert first["pixel_sample_seeds"] == again["pixel_sample_seeds"]
    other_epoch = dataset[(3, 5)]
    assert (first["input_ids"], first["pixel_sample_seeds"]) != (
        other_epoch["input_ids"],
        other_epoch["pixel_sample_seeds"],
    )


def test_half_the_rows_are_negatives_from_other_images(dataset) -> None:
    tokenizer = dataset.tokenizer
    for index in range(10):
        item = dataset[(0, index)]
        assert item["itm_labels"] == [1, 1, 0, 0]
        own = set(dataset.records[dataset.pairs.locate(index)[0]].captions)
        for ids, labels, matched in zip(item["input_ids"], item["mlm_labels"], item["itm_labels"], strict=True):
            restored = [lab if lab != IGNORE_INDEX else tok for tok, lab in zip(ids, labels, strict=True)]
            text = tokenizer.decode(restored, skip_special_tokens=True).replace(" ", "")
            assert (text in {c.replace(" ", "") for c in own}) == bool(matched)
            if not matched:
                assert all(label == IGNORE_INDEX for label in labels)  # MLM reads matched rows only


def test_masking_rules(dataset) -> None:
    masked_per_row, mask_token_share, total = [], 0, 0
    specials = set(dataset.tokenizer.all_special_ids)
    for index in range(40):
        item = dataset[(0, index)]
        for ids, labels, matched in zip(item["input_ids"], item["mlm_labels"], item["itm_labels"], strict=True):
            positions = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
            if matched:
                assert positions, "every matched caption has at least one masked token"
                assert all(labels[i] not in specials for i in positions)
                masked_per_row.append(len(positions) / (len(ids) - 2))
                mask_token_share += sum(ids[i] == dataset.mask_id for i in positions)
                total += len(positions)
            # Negatives are masked alike (so [MASK] does not betray matching) but carry no labels.
            assert ids[0] == dataset.tokenizer.cls_token_id and ids[-1] == dataset.tokenizer.sep_token_id
    assert 0.1 < sum(masked_per_row) / len(masked_per_row) < 0.35
    assert 0.65 < mask_token_share / total < 0.95


def test_listed_words_are_masked_at_their_own_rate(shapes_root, dataset) -> None:
    from pixelbert_pl.harness.shapes import COLOURS

    records = read_karpathy(shapes_root / "karpathy.json", shapes_root, ["train"])
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    colours = {tokenizer.convert_tokens_to_ids(c) for c in COLOURS}
    focused = CaptionPretrainDataset(
        records, ImageTransform(96, 96), tokenizer, captions_per_image=4, seed=3, mlm_probability=0.01,
        mlm_word_probabilities=dict.fromkeys(COLOURS, 1.0),
    )  # fmt: skip
    colour_labels = other_labels = 0
    for index in range(20):
        item = focused[(0, index)]
        for ids, labels, matched in zip(item["input_ids"], item["mlm_labels"], item["itm_labels"], strict=True):
            if matched:  # negatives are masked alike but carry no labels
                # Every colour word is masked (probability 1): none is left unlabelled.
                assert not any(lab == IGNORE_INDEX and tok in colours for tok, lab in zip(ids, labels, strict=True))
                colour_labels += sum(lab in colours for lab in labels)
                other_labels += sum(lab != IGNORE_INDEX and lab not in colours for lab in labels)
    assert colour_labels > 50 and other_labels < colour_labels / 5  # the rest at 1%, or one when no colour
    plain = dataset[(0, 7)]
    unlisted = CaptionPretrainDataset(
        records, ImageTransform(96, 96), tokenizer, captions_per_image=4, seed=3, mlm_word_probabilities={}
    )[(0, 7)]
    assert unlisted["mlm_labels"] == plain["mlm_labels"]  # an empty mapping draws exactly what BERT masking draws
    with pytest.raises(ValueError, match="'zebra' is not one token"):
        CaptionPretrainDataset(records, ImageTransform(96, 96), tokenizer, mlm_word_probabilities={"zebra": 0.5})


def _matched_texts(dataset: CaptionPretrainDataset, item: dict) -> list[str]:
    """The item's matched captions as text, masked tokens restored."""
    texts = []
    for ids, labels, matched in zip(item["input_ids"], item["mlm_labels"], item["itm_labels"], strict=True):
        if matched:
            restored = [lab if lab != IGNORE_INDEX else tok for tok, lab in zip(ids, labels, strict=True)]
            texts.append(dataset.tokenizer.decode(restored, skip_special_tokens=True).replace(" ", ""))
    return texts


@pytest.mark.parametrize("captions_per_image", [2, 4])
def test_an_epoch_serves_every_image_caption_pair_as_a_matched_row(shapes_root, captions_per_image) -> None:
    """COCO-style: 5 captions per image. At 1 matched row per item an epoch is every pair exactly once; at 2, every
    pair once and the third item of each image filled up with one of its captions seen earlier that epoch."""
    records = read_karpathy(shapes_root / "karpathy.json", shapes_root, ["train"])[:12]
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    dataset = CaptionPretrainDataset(
        records, ImageTransform(96, 96), tokenizer, captions_per_image=captions_per_image, seed=3, mlm_probability=0
    )
    matched = matched_rows(captions_per_image)
    pairs = sum(len(r.captions) for r in records)
    assert dataset.pairs.num_pairs == pairs == 5 * len(records)
    assert len(dataset) == sum(-(-len(r.captions) // matched) for r in records)
    for epoch in (0, 1):
        served: dict[int, list[str]] = {}
        for index in range(len(dataset)):
            record = dataset.pairs.locate(index)[0]
            served.setdefault(record, []).extend(_matched_texts(dataset, dataset[(epoch, index)]))
        for record, texts in served.items():
            own = sorted(c.replace(" ", "") for c in records[record].captions)
            assert sorted(set(texts)) == sorted(set(own))  # every pair of the image, none of another's
            assert len(texts) == -(-len(own) // matched) * matched  # repeats only to fill the last item
    # The split of an image's captions into items changes with the epoch (each epoch reshuffles them).
    first, second = (_matched_texts(dataset, dataset[(e, 0)]) for e in (0, 1))
    assert matched == 1 or first != second or _matched_texts(dataset, dataset[(2, 0)]) != first


def test_validation_takes_one_item_per_image_and_the_index_counts_from_arrow(shapes_root) -> None:
    from pixelbert_pl.data.captions import to_hf_dataset
    from pixelbert_pl.data.records import ArrowRecords

    records = read_karpathy(shapes_root / "karpathy.json", shapes_root, ["train"])[:8]
    records[3] = ImageCaptions(records[3].image_id, records[3].image_path, records[3].captions[:2], "coco")
    arrow = ArrowRecords(to_hf_dataset(records))
    assert arrow.list_lengths("captions") == [len(r.captions) for r in records]
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    per_image = CaptionPretrainDataset(arrow, ImageTransform(96, 96), tokenizer, captions_per_image=2, epoch="images")
    assert len(per_image) == len(records)
    texts = {_matched_texts(per_image, per_image[(e, 3)])[0] for e in range(12)}  # one random caption an epoch
    assert texts == {c.replace(" ", "") for c in records[3].captions}
    with pytest.raises(ValueError, match="caption_counts has 3 entries for 8 records"):
        CaptionPretrainDataset(arrow, ImageTransform(96, 96), tokenizer, caption_counts=[5, 5, 5])
    with pytest.raises(ValueError, match="record 1 has no caption"):
        CaptionPretrainDataset(arrow, ImageTransform(96, 96), tokenizer, caption_counts=[5, 0, 5, 5, 5, 5, 5, 5])


def test_collate_pads_and_maps_rows_to_images(dataset) -> None:
    items = [dataset[(0, i)] for i in range(3)]
    batch = collate_pretrain(items, dataset.tokenizer.pad_token_id)
    assert batch.pixel_values.shape == (3, 3, 96, 96) and batch.pixel_mask.all()
    assert batch.input_ids.shape[0] == 12 and sorted(batch.image_index.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    lengths = batch.attention_mask.sum(dim=1).tolist()
    assert lengths == sorted(lengths)  # rows by text length, so length buckets are consecutive rows
    # Every row keeps its own fields: the same (ids, labels, ITM label, image, pixel seed) rows as the items hold.
    expected = sorted(
        (tuple(ids), tuple(labels), matched, image, seed)
        for image, item in enumerate(items)
        for ids, labels, matched, seed in zip(
            item["input_ids"], item["mlm_labels"], item["itm_labels"], item["pixel_sample_seeds"], strict=True
        )
    )
    got = sorted(
        (tuple(i[:n]), tuple(lab[:n]), m, image, seed)
        for i, lab, n, m, image, seed in zip(
            batch.input_ids.tolist(), batch.mlm_labels.tolist(), lengths, batch.itm_labels.tolist(),
            batch.image_index.tolist(), batch.pixel_sample_seeds, strict=True,
        )
    )  # fmt: skip
    assert got == expected
    assert torch.equal(batch.attention_mask.bool(), batch.input_ids != dataset.tokenizer.pad_token_id)
    assert (batch.mlm_labels[batch.attention_mask == 0] == IGNORE_INDEX).all()


def test_ranks_get_equal_batch_counts_from_an_uneven_corpus() -> None:
    corpus = list(range(103))
    counts = []
    for rank in range(2):
        sampler = EpochKeyedSampler(corpus, num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True)
        sampler.set_epoch(4)
        keys = list(sampler)
        assert all(epoch == 4 for epoch, _ in keys)
        counts.append(len(torch.utils.data.BatchSampler(keys, 8, drop_last=True)))
    assert counts[0] == counts[1] == 6
    shards = [[i for _, i in EpochKeyedSampler(corpus, 2, rank, shuffle=False, unrepeated=True)] for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == corpus  # evaluation: every sample once, none twice


def test_a_500_token_caption_is_truncated_keeping_sep(shapes_root) -> None:
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    records = [ImageCaptions("a", "/none", ["red circle " * 250], "x"), ImageCaptions("b", "/none", ["blue"], "x")]
    dataset = CaptionPretrainDataset(records, ImageTransform(96, 96), tokenizer, max_text_length=24)
    (ids,) = dataset.token_ids(records[0].captions)
    assert len(ids) == 24 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_token_ids_are_cached_per_text_as_fresh_lists(dataset) -> None:
    texts = ["a red circle.", "a blue square.", "a red circle."]
    expected = dataset.tokenizer(texts, truncation=True, max_length=dataset.max_text_length)["input_ids"]
    first = dataset.token_ids(texts)
    assert first == expected and len(dataset._token_cache) >= 2
    first[0][1] = -1  # a caller masking its copy in place must not reach the cache
    assert dataset.token_ids(texts) == expected
    dataset.token_cache_size = 2  # full: the cache starts over rather than growing
    dataset.token_ids(["a green cross."])
    assert len(dataset._token_cache) <= 2 and dataset.token_ids(texts) == expected


def test_hard_negatives_that_meet_no_record_fail_naming_both_keys(shapes_root) -> None:
    """Twins keyed under another id scheme would leave every negative another image's caption without a word."""
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    records = [ImageCaptions(i, "/none", [c], "x") for i, c in (("a", "a red circle."), ("b", "a blue square."))]
    with pytest.raises(ValueError, match=r"no key matches.*\('a', 'a red circle\.'\).*\('coco:a', 'a red circle\.'\)"):
        CaptionPretrainDataset(
            records,
            ImageTransform(96, 96),
            tokenizer,
            hard_negative_probability=0.5,
            hard_negatives={("coco:a", "a red circle."): ["a blue circle."]},
        )
    dataset = CaptionPretrainDataset(
        records,
        ImageTransform(96, 96),
        tokenizer,
        hard_negatives={("a", "a red circle."): ["a blue circle."]},
        hard_negative_probability=1.0,
    )
    rng = np.random.default_rng(0)
    assert dataset._twin_source("a", ["a red circle."], rng) == "a red circle."
    assert dataset._twin("a", "a red circle.", rng) == "a blue circle."
