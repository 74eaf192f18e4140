"""ShapesWorld: published formats, truth of every generated text against the scenes, determinism, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelbert_pl.data.shapes import (
    BACKGROUND,
    COLOURS,
    HELDOUT_SPLIT,
    RGB,
    SHAPES,
    Scene,
    ShapeObject,
    ShapesWorldConfig,
    add_nlvr2,
    answer_question,
    caption_is_true,
    generate,
    main,
    render_scene,
    statement_is_true,
)
from pixelbert_pl.models.tokenizer import load_tokenizer

HELDOUT = ("red triangle", "blue circle")
CONFIG = ShapesWorldConfig(num_images=40, heldout=HELDOUT, heldout_fraction=0.25, num_nlvr2=24)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate(out, CONFIG, seed=0)
    return out


def load(corpus: Path, name: str):
    return json.loads((corpus / name).read_text(encoding="utf-8"))


def load_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def scenes_by_id(corpus: Path) -> dict[int, dict]:
    return {s["image_id"]: s for s in load(corpus, "scenes.json")["scenes"]}


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


def test_five_true_captions_per_image(corpus) -> None:
    scenes = scenes_by_id(corpus)
    per_image = Counter()
    for a in load(corpus, "captions.json")["annotations"]:
        per_image[a["image_id"]] += 1
        caption = a["caption"]
        assert caption == caption.lower() and caption.endswith(".")
        assert caption_is_true(caption, scenes[a["image_id"]]), caption
    assert set(per_image.values()) == {5} and len(per_image) == 40
    kinds = Counter(c["raw"].split()[0] for i in load(corpus, "karpathy.json")["images"] for c in i["sentences"])
    assert kinds["there"] >= 40 and kinds["the"] + kinds["a"] > 100


def test_hard_negatives_are_false_and_one_word_away(corpus) -> None:
    scenes = scenes_by_id(corpus)
    captions = {a["id"]: a for a in load(corpus, "captions.json")["annotations"]}
    records = load(corpus, "hard_negatives.json")["hard_negatives"]
    assert {r["caption_id"] for r in records} == set(captions)
    kinds = Counter()
    for record in records:
        caption = captions[record["caption_id"]]
        assert record["image_id"] == caption["image_id"]
        for negative in record["negatives"]:
            words, swapped = caption["caption"].split(), negative["caption"].split()
            assert len(words) == len(swapped)
            assert sum(a != b for a, b in zip(words, swapped, strict=True)) == 1, negative
            assert not caption_is_true(negative["caption"], scenes[caption["image_id"]])
            kinds[negative["kind"]] += 1
    assert set(kinds) == {"colour", "shape", "relation"}


def test_scenes_have_distinct_colours_and_shapes(corpus) -> None:
    for scene in load(corpus, "scenes.json")["scenes"]:
        objects = scene["objects"]
        assert 1 <= len(objects) <= 4
        assert len({o["colour"] for o in objects}) == len({o["shape"] for o in objects}) == len(objects)
        for i, a in enumerate(objects):
            x, y, w, h = a["bbox"]
            assert 0 <= x and x + w <= scene["width"] and 0 <= y and y + h <= scene["height"]
            assert a["centre"] == [x + w / 2, y + h / 2]
            for b in objects[i + 1 :]:
                bx, by, bw, bh = b["bbox"]
                assert x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y


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


def test_vqa_answers_match_the_scenes(corpus) -> None:
    scenes = scenes_by_id(corpus)
    questions = {q["question_id"]: q for q in load(corpus, "vqa_questions.json")["questions"]}
    disagreements = 0
    for a in load(corpus, "vqa_annotations.json")["annotations"]:
        question, scene = questions[a["question_id"]]["question"], scenes[a["image_id"]]
        answer = a["multiple_choice_answer"]
        assert answer_question(question, scene) == (answer, a["question_type"], a["answer_type"])
        votes = Counter(x["answer"] for x in a["answers"])
        assert votes[answer] >= 7
        disagreements += len(votes) > 1
        colours = {o["colour"] for o in scene["objects"]}
        shapes = {o["shape"] for o in scene["objects"]}
        if question == "how many shapes are there?":  # independent of answer_question's parser
            assert answer == str(len(scene["objects"]))
        elif m := re.fullmatch(r"is there a (\w+) (\w+)\?", question):
            present = (m[1], m[2]) in {(o["colour"], o["shape"]) for o in scene["objects"]} or (
                m[2] == "shape" and m[1] in colours
            )
            assert answer == ("yes" if present else "no")
        elif m := re.fullmatch(r"what color is the (\w+)\?", question):
            assert m[1] in shapes and answer in colours
            assert answer == next(o["colour"] for o in scene["objects"] if o["shape"] == m[1])
    assert {a["answer_type"] for a in load(corpus, "vqa_annotations.json")["annotations"]} == {
        "yes/no",
        "number",
        "other",
    }
    assert 0 < disagreements < len(questions) / 3


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


def test_cli(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--seed", "0", "--num-images", "40", "--num-nlvr2", "6", "--holdout", "red triangle"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40 and sum(summary["splits"].values()) == 40
    assert len(list((out / "images").glob("shapes_*.png"))) == 40
    assert load(out, "scenes.json")["config"]["heldout"] == ["red triangle"]
    with pytest.raises(ValueError, match="colour shape"):
        main(["--out", str(out), "--holdout", "red banana"])


def test_one_shape_corpus_shares_the_vocabulary(corpus, tmp_path, capsys) -> None:
    """The demo's warm-up corpus: one shape per scene, and the full corpus's vocab.txt byte for byte, so that a
    checkpoint trained on it fits the full corpus's tokenizer."""
    out = tmp_path / "one"
    assert main(["--out", str(out), "--num-images", "30", "--num-nlvr2", "6", "--max-objects", "1"]) == 0
    capsys.readouterr()
    assert {len(s["objects"]) for s in load(out, "scenes.json")["scenes"]} == {1}
    assert (out / "vocab.txt").read_bytes() == (corpus / "vocab.txt").read_bytes()
    with pytest.raises(ValueError, match="max_objects"):
        main(["--out", str(tmp_path / "bad"), "--max-objects", "5"])


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


def test_rendered_pixels_show_the_scene(corpus) -> None:
    for scene in load(corpus, "scenes.json")["scenes"][:10]:
        pixels = np.asarray(Image.open(corpus / "images" / f"shapes_{scene['image_id']:012d}.png").convert("RGB"))
        assert pixels.shape == (96, 96, 3)
        for o in scene["objects"]:  # every shape covers its own centre
            x, y = (int(v) for v in o["centre"])
            assert np.abs(pixels[y, x].astype(int) - RGB[o["colour"]]).max() <= CONFIG.noise
    scene = Scene(96, (ShapeObject("green", "circle", "large", (10, 20, 32, 32)),))
    image = np.asarray(render_scene(scene))
    assert tuple(image[36, 26]) == RGB["green"] and tuple(image[0, 0]) == BACKGROUND
    assert tuple(image[21, 11]) == BACKGROUND  # a circle leaves its bounding-box corners empty
    distinct = {tuple(RGB[c]) for c in COLOURS}
    assert len(distinct) == len(COLOURS) and len(SHAPES) == 4


def test_caption_grammar_and_truth() -> None:
    red_circle = ShapeObject("red", "circle", "large", (4, 4, 32, 32))  # centre (20, 20): top left
    blue_square = ShapeObject("blue", "square", "small", (60, 8, 18, 18))  # centre (69, 17): top right
    scene = Scene(96, (red_circle, blue_square))
    assert caption_is_true("a large red circle at the top left.", scene)
    assert not caption_is_true("a large red circle at the top right.", scene)
    assert not caption_is_true("a small red circle.", scene)
    assert caption_is_true("the red circle is left of the small blue square.", scene)
    assert not caption_is_true("a red circle is right of a blue square.", scene)
    assert not caption_is_true("a blue square is above a red circle.", scene)  # 3 px higher is not "above"
    assert caption_is_true("there are two shapes: a blue square and a large red circle.", scene)
    assert not caption_is_true("there is one shape: a red circle.", scene)
    assert caption_is_true("a blue square at the top right.", scene.to_dict())  # a scenes.json entry works too
    with pytest.raises(ValueError, match="not a ShapesWorld caption"):
        caption_is_true("a red banana.", scene)
    with pytest.raises(ValueError, match="not a ShapesWorld caption"):
        caption_is_true("there are two shapes: a red circle.", scene)
    assert answer_question("what shape is the blue object?", scene) == ("square", "what shape is the", "other")
    assert answer_question("how many small shapes are there?", scene)[0] == "1"
    with pytest.raises(ValueError, match="presupposes"):
        answer_question("what color is the cross?", scene)
    lone = Scene(96, (blue_square,))
    assert statement_is_true("the left image contains more shapes than the right image.", scene, lone)
    assert statement_is_true("exactly one image contains a red shape.", scene, lone)
    assert statement_is_true("there are three shapes in total.", scene, lone)
    assert not statement_is_true("both images contain a circle.", scene, lone)


def test_count_statements_only_where_scene_counts_vary() -> None:
    """With one shape in every scene a count statement is always true: no False example could be drawn for it."""
    from pixelbert_pl.data.shapes import _make_statement

    def statements(config: ShapesWorldConfig) -> list[str]:
        rng = np.random.default_rng(0)
        return [_make_statement(rng, config, set())[0] for _ in range(300)]

    counting = re.compile(r".*(exactly \w+ shapes?|in total|than the right|same number)\.")
    assert not any(counting.fullmatch(s) for s in statements(ShapesWorldConfig(max_objects=1)))
    assert sum(bool(counting.fullmatch(s)) for s in statements(ShapesWorldConfig())) > 50
