"""ShapesWorld written in the published formats: field names, determinism, held-out combinations, NLVR2 labels,
the vocabulary, NLVR2 added later."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from pixelbert_pl.harness.shapes import (
    HELDOUT_SPLIT,
    ShapesWorldConfig,
    add_nlvr2,
    generate,
    statement_is_true,
)
from pixelbert_pl.processing import load_tokenizer

from .corpus_files import HELDOUT, load, load_lines, scenes_by_id


def test_same_seed_same_bytes(tmp_path) -> None:
    config = ShapesWorldConfig(num_images=12, heldout=("red triangle",), num_nlvr2=8)
    summaries = [generate(tmp_path / name, config, seed=3) for name in ("a", "b")]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 12 + 16
    for path in files:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    assert summaries[0]["splits"] == summaries[1]["splits"]
    generate(tmp_path / "c", config, seed=4)
    assert (tmp_path / "c" / "captions.json").read_bytes() != (tmp_path / "a" / "captions.json").read_bytes()


def test_published_field_names(corpus) -> None:
    captions = load(corpus, "captions.json")
    assert list(captions) == ["info", "images", "licenses", "annotations"]
    image_fields = ["license", "file_name", "coco_url", "height", "width", "date_captured", "flickr_url", "id"]
    assert all(list(image) == image_fields for image in captions["images"])
    assert all(set(a) == {"image_id", "id", "caption"} for a in captions["annotations"])
    assert [i["id"] for i in captions["images"]] == list(range(1, 41))
    assert all((corpus / "images" / i["file_name"]).is_file() for i in captions["images"])
    assert captions["images"][0]["file_name"] == "shapes_000000000001.png"

    karpathy = load(corpus, "karpathy.json")
    assert karpathy["dataset"] == "coco"
    fields = {"filepath", "filename", "imgid", "cocoid", "split", "sentids", "sentences"}
    assert all(set(image) == fields for image in karpathy["images"])
    for image in karpathy["images"]:
        assert (corpus / image["filepath"] / image["filename"]).is_file()
        assert [s["sentid"] for s in image["sentences"]] == image["sentids"]
        for sentence in image["sentences"]:
            assert set(sentence) == {"tokens", "raw", "imgid", "sentid"} and sentence["imgid"] == image["imgid"]
            assert sentence["tokens"] == re.findall(r"[a-z]+", sentence["raw"])

    questions = load(corpus, "vqa_questions.json")
    assert set(questions) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
    assert questions["task_type"] == "Open-Ended" and questions["data_type"] == "mscoco"
    assert all(set(q) == {"question_id", "image_id", "question"} for q in questions["questions"])
    annotations = load(corpus, "vqa_annotations.json")
    assert set(annotations) == {"info", "license", "data_type", "data_subtype", "annotations"}
    keys = {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}
    for a in annotations["annotations"]:
        assert set(a) == keys
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(set(x) == {"answer_id", "answer", "answer_confidence"} for x in a["answers"])
    assert {q["image_id"] for q in questions["questions"]} == set(range(1, 41))
    assert [q["question_id"] for q in questions["questions"]] == [a["question_id"] for a in annotations["annotations"]]

    for split in ("train", "dev", "test"):
        for record in load_lines(corpus / "nlvr2" / f"{split}.json"):
            common = {"identifier", "sentence", "label", "left_url", "right_url", "writer", "synset", "query"}
            assert common | {"validation"} <= set(record)
            assert ("extra_validations" in record) == (split != "train")
            assert ("directory" in record) == (split == "train")


def test_heldout_combinations_only_in_test_heldout(corpus) -> None:
    scenes = scenes_by_id(corpus)
    split = {i["cocoid"]: i["split"] for i in load(corpus, "karpathy.json")["images"]}
    assert {s["split"] for s in scenes.values()} == set(split.values()) == {"train", "val", "test", HELDOUT_SPLIT}

    def has_heldout(text_or_scene) -> bool:
        if isinstance(text_or_scene, str):
            return any(combo in text_or_scene for combo in HELDOUT)
        return any(f"{o['colour']} {o['shape']}" in HELDOUT for o in text_or_scene["objects"])

    for image_id, scene in scenes.items():
        assert has_heldout(scene) == (split[image_id] == HELDOUT_SPLIT)
    seen = [a["caption"] for a in load(corpus, "captions.json")["annotations"] if split[a["image_id"]] != HELDOUT_SPLIT]
    seen += [
        n["caption"]
        for r in load(corpus, "hard_negatives.json")["hard_negatives"]
        if split[r["image_id"]] != HELDOUT_SPLIT
        for n in r["negatives"]
    ]
    seen += [
        q["question"] for q in load(corpus, "vqa_questions.json")["questions"] if split[q["image_id"]] != HELDOUT_SPLIT
    ]
    seen += [r["sentence"] for s in ("train", "dev", "test") for r in load_lines(corpus / "nlvr2" / f"{s}.json")]
    assert seen and not any(has_heldout(text) for text in seen)
    assert not any(has_heldout(s) for s in load(corpus, "nlvr2/scenes.json")["scenes"])


def test_nlvr2_labels_balanced_and_true(corpus) -> None:
    nlvr2 = corpus / "nlvr2"
    scenes = {s["image_id"]: s for s in load(corpus, "nlvr2/scenes.json")["scenes"]}
    sizes, groups = {}, {}
    for split in ("train", "dev", "test"):
        records = load_lines(nlvr2 / f"{split}.json")
        sizes[split] = len(records)
        labels = Counter(r["label"] for r in records)
        assert set(labels) <= {"True", "False"} and abs(labels["True"] - labels["False"]) <= 1
        for r in records:
            name, set_id, pair_id, sentence_id = r["identifier"].split("-")
            assert name == split and set_id.isdigit() and pair_id.isdigit() and sentence_id == "0"
            groups.setdefault((split, set_id), set()).add(r["label"])
            stem = r["identifier"].rsplit("-", 1)[0]
            folder = nlvr2 / "images" / split / (str(r["directory"]) if split == "train" else "")
            left, right = folder / f"{stem}-img0.png", folder / f"{stem}-img1.png"
            assert left.is_file() and right.is_file()
            assert r["left_url"] == left.relative_to(nlvr2).as_posix()
            assert r["right_url"] == right.relative_to(nlvr2).as_posix()
            truth = statement_is_true(r["sentence"], scenes[f"{stem}-img0"], scenes[f"{stem}-img1"])
            assert str(truth) == r["label"], r
    assert sizes == {"train": 19, "dev": 2, "test": 3}
    # A sentence holds for one pair of its set and not the other, so NLVR2 consistency means something here.
    assert sum(labels == {"True", "False"} for labels in groups.values()) >= len(groups) - 3


def test_vocab_covers_every_text_whole(corpus, tmp_path) -> None:
    # load_tokenizer, not BertTokenizerFast(vocab_file=...): transformers 5 ignores that keyword and builds a
    # 5-token vocabulary, under which every word is [UNK].
    tokenizer = load_tokenizer(corpus / "vocab.txt")
    assert tokenizer.vocab_size > 100
    texts = [a["caption"] for a in load(corpus, "captions.json")["annotations"]]
    texts += [n["caption"] for r in load(corpus, "hard_negatives.json")["hard_negatives"] for n in r["negatives"]]
    texts += [q["question"] for q in load(corpus, "vqa_questions.json")["questions"]]
    texts += [x["answer"] for a in load(corpus, "vqa_annotations.json")["annotations"] for x in a["answers"]]
    texts += [r["sentence"] for s in ("train", "dev", "test") for r in load_lines(corpus / "nlvr2" / f"{s}.json")]
    for text in texts:
        tokens = tokenizer.tokenize(text)
        assert "[UNK]" not in tokens and not any(t.startswith("##") for t in tokens), (text, tokens)
    # The vocabulary comes from the grammar, so a corpus of another seed and size shares it.
    generate(tmp_path, ShapesWorldConfig(num_images=3, num_nlvr2=2), seed=9)
    assert (tmp_path / "vocab.txt").read_text() == (corpus / "vocab.txt").read_text()


def test_nlvr2_added_later_equals_nlvr2_generated_at_once(tmp_path) -> None:
    """A corpus generated without NLVR2 (the demo's pre-training) gets, from `add_nlvr2`, byte for byte the files
    and vocabulary a corpus generated with them has."""
    config = ShapesWorldConfig(num_images=10, heldout=("red triangle",), num_nlvr2=8)
    generate(tmp_path / "at_once", config, seed=4)
    generate(tmp_path / "later", ShapesWorldConfig(num_images=10, heldout=("red triangle",), num_nlvr2=0), seed=4)
    assert not (tmp_path / "later" / "nlvr2").exists()
    assert add_nlvr2(tmp_path / "later", 8) == {"train": 6, "dev": 1, "test": 1}
    files = sorted(p.relative_to(tmp_path / "at_once") for p in (tmp_path / "at_once").rglob("*") if p.is_file())
    nlvr2 = [f for f in files if f.parts[0] == "nlvr2"]
    assert len(nlvr2) == 3 + 1 + 2 * 8  # the splits, their scenes.json, two images per example
    for name in [*nlvr2, Path("vocab.txt")]:
        assert (tmp_path / "later" / name).read_bytes() == (tmp_path / "at_once" / name).read_bytes(), name
    # A vocabulary without a statement word (a grammar change the corpus predates) is refused, leaving no nlvr2/.
    vocab = tmp_path / "later" / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("\n.\n", "\n"))  # every statement ends with "."
    with pytest.raises(ValueError, match="lacks the NLVR2 words"):
        add_nlvr2(tmp_path / "later", 8)
    assert not (tmp_path / "later" / "nlvr2").exists()
