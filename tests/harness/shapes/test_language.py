"""The ShapesWorld grammar: every generated caption, hard negative and VQA answer checked against the scenes;
the parsers on hand-built scenes."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from pixelbert_pl.harness.shapes import (
    Scene,
    ShapeObject,
    ShapesWorldConfig,
    answer_question,
    caption_is_true,
    statement_is_true,
)

from .corpus_files import load, scenes_by_id


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
    from pixelbert_pl.harness.shapes.language import _make_statement

    def statements(config: ShapesWorldConfig) -> list[str]:
        rng = np.random.default_rng(0)
        return [_make_statement(rng, config, set())[0] for _ in range(300)]

    counting = re.compile(r".*(exactly \w+ shapes?|in total|than the right|same number)\.")
    assert not any(counting.fullmatch(s) for s in statements(ShapesWorldConfig(max_objects=1)))
    assert sum(bool(counting.fullmatch(s)) for s in statements(ShapesWorldConfig())) > 50
