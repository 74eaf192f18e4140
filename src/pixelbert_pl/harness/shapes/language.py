"""The ShapesWorld language: captions, hard negatives, VQA questions and NLVR2 statements from a small grammar,
and the parsers that read each back against a scene (`caption_is_true`, `answer_question`, `statement_is_true`),
so truth is checked against the scene, never assumed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pixelbert_pl.harness.shapes.scenes import COLOURS, SHAPES, SIZES, Scene, ShapeObject, ShapesWorldConfig

RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Centres closer than this (a fraction of the image side) along an axis get no relation word: a model at 96 px
# could not tell "left of" from "above" for objects that are nearly level.
RELATION_MARGIN = 1 / 6
_POSITIONS = {  # (row, column) of the image third that holds the centre
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the middle",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
# The one-word swaps of `make_hard_negatives`, by what they swap.
HARD_NEGATIVE_KINDS = ("colour", "shape", "relation")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Words of the templates, so that vocab.txt depends on the grammar only, not on what a seed happened to draw.
_TEMPLATE_WORDS = (
    "a the is there are shape shapes : , and . ? how many what color size object both images image left right "
    "contain contains neither exactly more fewer than same number of in total 0 1 2 3 4 5 6 7 8 9 yes no"
)


def _separation(a: ShapeObject, b: ShapeObject, relation: str) -> float:
    """How far `a` lies from `b` in the direction `relation` names (negative: the other way); y grows downwards."""
    (ax, ay), (bx, by) = a.centre, b.centre
    return {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[relation]


def _position(obj: ShapeObject, image_size: int) -> str:
    x, y = obj.centre
    return _POSITIONS[(min(2, int(3 * y // image_size)), min(2, int(3 * x // image_size)))]


# ------------------------------------------------------------------------------------------------- captions

_C, _S, _Z = "|".join(COLOURS), "|".join(SHAPES), "|".join(SIZES)
_REL = "|".join(RELATIONS)
_POS = "|".join(_POSITIONS.values())


def _np_re(i: int) -> str:
    return rf"(?:a|the) (?:(?P<size{i}>{_Z}) )?(?P<colour{i}>{_C}) (?P<shape{i}>{_S})"


_NP_RE = re.compile(_np_re(0))
_OBJECT_RE = re.compile(rf"{_np_re(1)}(?: (?P<pos>{_POS}))?\.")
_RELATION_RE = re.compile(rf"{_np_re(1)} is (?P<rel>{_REL}) {_np_re(2)}\.")
_COUNT_RE = re.compile(r"there (?:is|are) (?P<num>[a-z]+) shapes?: (?P<body>.+)\.")


def _noun_phrase(obj: ShapeObject, with_size: bool, article: str = "a") -> str:
    return " ".join([article, obj.size, obj.colour, obj.shape] if with_size else [article, obj.colour, obj.shape])


def _count_caption(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return f"there is one shape: {phrases[0]}."
    return f"there are {NUMBER_WORDS[len(phrases)]} shapes: {', '.join(phrases[:-1])} and {phrases[-1]}."


def _matches(scene: Scene, m: re.Match[str], i: int) -> list[ShapeObject]:
    return scene.find(m[f"colour{i}"], m[f"shape{i}"], m[f"size{i}"])


def caption_is_true(caption: str, scene: Scene | Mapping[str, Any]) -> bool:
    """Whether a caption of the generator's grammar describes `scene` (a Scene or a scenes.json entry).

    Three templates: "a [size] colour shape [position]." (some object fits), "NP is <relation> NP." (centres
    separated by more than RELATION_MARGIN of the image side), "there are <n> shapes: NP, NP and NP." (exactly
    these objects). Raises ValueError for any other sentence."""
    scene = scene if isinstance(scene, Scene) else Scene.from_dict(scene)
    if m := _OBJECT_RE.fullmatch(caption):
        return any(m["pos"] in (None, _position(o, scene.image_size)) for o in _matches(scene, m, 1))
    if m := _RELATION_RE.fullmatch(caption):
        margin = RELATION_MARGIN * scene.image_size
        pairs = itertools.product(_matches(scene, m, 1), _matches(scene, m, 2))
        return any(a is not b and _separation(a, b, m["rel"]) > margin for a, b in pairs)
    if (m := _COUNT_RE.fullmatch(caption)) and m["num"] in NUMBER_WORDS:
        phrases = re.split(r", | and ", m["body"])
        nps = [_NP_RE.fullmatch(p) for p in phrases]
        if len(phrases) == NUMBER_WORDS.index(m["num"]) and all(nps) and _count_caption(phrases) == caption:
            found = [_matches(scene, np_match, 0) for np_match in nps if np_match]
            matched = {id(objs[0]) for objs in found if len(objs) == 1}
            return len(matched) == len(phrases) == len(scene.objects)
    raise ValueError(f"not a ShapesWorld caption: {caption!r}")


def make_captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` distinct true captions (repeats only when the scene allows fewer): one listing every object with
    the count, up to two spatial relations, the rest single objects with their position, objects taken in turn."""
    size, objs = scene.image_size, list(scene.objects)
    per_object = []
    for i in rng.permutation(len(objs)):
        o = objs[i]
        where = f" {_position(o, size)}"
        # No bare "a red circle.": it would also fit one random image in ten, blurring image-text matching.
        variants = [f"{_noun_phrase(o, z)}{p}." for z, p in ((True, ""), (True, where), (False, where))]
        per_object.append([variants[j] for j in rng.permutation(len(variants))])
    object_pool = [c for group in itertools.zip_longest(*per_object) for c in group if c]
    relation_pool: list[str] = []
    seen_pairs: set[frozenset[int]] = set()
    for i in rng.permutation(len(objs) * len(objs)):
        a, b = objs[i // len(objs)], objs[i % len(objs)]
        clear = [r for r in RELATIONS if a is not b and _separation(a, b, r) > RELATION_MARGIN * size]
        if clear:
            with_size, article = bool(rng.integers(2)), ("a", "the")[int(rng.integers(2))]
            rel = clear[int(rng.integers(len(clear)))]
            caption = f"{_noun_phrase(a, with_size, article)} is {rel} {_noun_phrase(b, with_size, article)}."
            pair = frozenset((id(a), id(b)))
            relation_pool.insert(len(seen_pairs) if pair not in seen_pairs else len(relation_pool), caption)
            seen_pairs.add(pair)
    count_pool = [_count_caption([_noun_phrase(objs[i], z) for i in rng.permutation(len(objs))]) for z in (True, False)]
    pools = {"count": count_pool, "relation": relation_pool, "object": object_pool}
    plan = (["count", "relation", "relation"] + ["object"] * count)[:count]
    chosen: list[str] = []
    for kind in plan:
        for pool in (pools[kind], object_pool, relation_pool, count_pool):
            fresh = [c for c in pool if c not in chosen]
            if fresh:
                chosen.append(fresh[0])
                break
    chosen += [chosen[i % len(chosen)] for i in range(count - len(chosen))]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def make_hard_negatives(
    caption: str,
    scene: Scene,
    rng: np.random.Generator,
    limit: int | None = None,
    avoid: Iterable[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """Captions one word away from `caption` (a colour, a shape, or left/right, above/below swapped) that are
    false for `scene`, as {"caption", "kind"}; kinds take turns so that a short list still mixes them. `avoid`
    drops negatives naming a held-out combination, which the training text must never contain."""
    by_kind: dict[str, list[str]] = {kind: [] for kind in HARD_NEGATIVE_KINDS}
    for m in re.finditer(r"[a-z]+", caption):
        word, rest = m[0], caption[m.end() :]
        if word in COLOURS:
            kind, swaps = "colour", [c for c in COLOURS if c != word]
        elif word in SHAPES:
            kind, swaps = "shape", [s for s in SHAPES if s != word]
        elif word in ("left", "right") and rest.startswith(" of"):
            kind, swaps = "relation", [_OPPOSITE[f"{word} of"].split()[0]]
        elif word in ("above", "below"):
            kind, swaps = "relation", [_OPPOSITE[word]]
        else:
            continue
        for swap in swaps:
            negative = caption[: m.start()] + swap + rest
            if not any(f"{c} {s}" in negative for c, s in avoid) and not caption_is_true(negative, scene):
                by_kind[kind].append(negative)
    queues = [[group[j] for j in rng.permutation(len(group))] for group in by_kind.values()]
    kinds = list(by_kind)
    order = [int(k) for k in rng.permutation(len(kinds))]
    out: list[dict[str, str]] = []
    for k in itertools.chain.from_iterable(itertools.repeat(order, max(map(len, queues), default=0))):
        if queues[k] and (limit is None or len(out) < limit):
            out.append({"caption": queues[k].pop(0), "kind": kinds[k]})
    return out


# ------------------------------------------------------------------------------------------------------ VQA

_VQA_PATTERNS = (
    ("is there a", "yes/no", re.compile(rf"is there a (?:(?P<colour>{_C}) )?(?P<shape>{_S}|shape)\?")),
    ("how many", "number", re.compile(rf"how many (?:(?P<size>{_Z}) )?shapes are there\?")),
    ("what color is the", "other", re.compile(rf"what color is the (?P<shape>{_S})\?")),
    ("what shape is the", "other", re.compile(rf"what shape is the (?P<colour>{_C}) object\?")),
    ("what size is the", "other", re.compile(rf"what size is the (?P<colour>{_C}) (?P<shape>{_S})\?")),
)


def answer_question(question: str, scene: Scene | Mapping[str, Any]) -> tuple[str, str, str]:
    """(answer, question_type, answer_type) for a question of the generator's grammar; numbers are digits, as in
    VQA v2. Raises ValueError for other questions and for ones whose presupposition fails."""
    scene = scene if isinstance(scene, Scene) else Scene.from_dict(scene)
    for question_type, answer_type, pattern in _VQA_PATTERNS:
        if m := pattern.fullmatch(question):
            groups = m.groupdict()
            if answer_type == "number":
                return str(len(scene.find(size=groups["size"]))), question_type, answer_type
            shape = groups.get("shape")
            found = scene.find(groups.get("colour"), None if shape == "shape" else shape)
            if answer_type == "yes/no":
                return ("yes" if found else "no"), question_type, answer_type
            if len(found) != 1:
                raise ValueError(f"{question!r} presupposes one matching object, the scene has {len(found)}")
            attribute = {"what color is the": "colour", "what shape is the": "shape", "what size is the": "size"}
            return getattr(found[0], attribute[question_type]), question_type, answer_type
    raise ValueError(f"not a ShapesWorld question: {question!r}")


def _ask(scene: Scene, rng: np.random.Generator, answer_type: str, avoid: set[tuple[str, str]]) -> str:
    def pick(options: Sequence[Any]) -> Any:
        return options[int(rng.integers(len(options)))]

    obj = pick(scene.objects)
    if answer_type == "number":
        return pick(["how many shapes are there?", *(f"how many {z} shapes are there?" for z in SIZES)])
    if answer_type == "other":
        return pick(
            [f"what color is the {obj.shape}?", f"what shape is the {obj.colour} object?"] * 2
            + [f"what size is the {obj.colour} {obj.shape}?"]
        )
    present = {(o.colour, o.shape) for o in scene.objects}
    combos = [c for c in itertools.product(COLOURS, SHAPES) if c not in avoid]
    if rng.integers(2):  # a "no" question half the time, so "yes" is not a free answer
        absent = [f"{c} {s}" for c, s in combos if (c, s) not in present]
        absent += [s for s in SHAPES if not scene.find(shape=s)] + [f"{c} shape" for c in COLOURS if not scene.find(c)]
        if absent:
            return f"is there a {pick(absent)}?"
    return f"is there a {pick([f'{obj.colour} {obj.shape}', obj.shape, f'{obj.colour} shape'])}?"


def _dissent(answer: str, answer_type: str, rng: np.random.Generator) -> str:
    if answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if answer_type == "number":
        return str(int(answer) + 1 if answer == "0" or rng.integers(2) else int(answer) - 1)
    words = next(group for group in (COLOURS, SHAPES, SIZES) if answer in group)
    others = [w for w in words if w != answer]
    return others[int(rng.integers(len(others)))]


def make_vqa(
    scene: Scene, image_id: int, rng: np.random.Generator, config: ShapesWorldConfig, avoid: set[tuple[str, str]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(question, annotation) records in VQA v2 form; question ids are image_id * 1000 + k, as in VQA v2."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    asked: set[str] = set()
    for k in range(config.questions_per_image):
        answer_type = ("yes/no", "number", "other")[k % 3]
        question = _ask(scene, rng, answer_type, avoid)
        for _ in range(10):
            if question not in asked:
                break
            question = _ask(scene, rng, answer_type, avoid)
        asked.add(question)
        answer, question_type, answer_type = answer_question(question, scene)
        answers = [answer] * 10
        if rng.random() < config.vqa_disagreement:
            wrong = _dissent(answer, answer_type, rng)
            for j in rng.choice(10, int(rng.integers(1, 4)), replace=False):
                answers[j] = wrong
        qid = image_id * 1000 + k
        out.append(
            (
                {"question_id": qid, "image_id": image_id, "question": question},
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "question_type": question_type,
                    "answer_type": answer_type,
                    "multiple_choice_answer": answer,
                    "answers": [
                        {"answer_id": j + 1, "answer": a, "answer_confidence": "yes"} for j, a in enumerate(answers)
                    ],
                },
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------- NLVR2

_MENTION = rf"a (?:(?P<colour>{_C}) )?(?P<shape>{_S}|shape)"
_NLVR2_PATTERNS = {
    "both": re.compile(rf"both images contain {_MENTION}\."),
    "neither": re.compile(rf"neither image contains {_MENTION}\."),
    "one": re.compile(rf"exactly one image contains {_MENTION}\."),
    "side": re.compile(rf"the (?P<side>left|right) image contains {_MENTION}\."),
    "compare": re.compile(r"the left image contains (?P<cmp>more|fewer) shapes than the right image\."),
    "same": re.compile(r"both images contain the same number of shapes\."),
    "exact": re.compile(r"the (?P<side>left|right) image contains exactly (?P<num>[a-z]+) shapes?\."),
    "total": re.compile(r"there are (?P<num>[a-z]+) shapes in total\."),
}


def statement_is_true(sentence: str, left: Scene | Mapping[str, Any], right: Scene | Mapping[str, Any]) -> bool:
    """Truth of an NLVR2 statement of the generator's grammar about the (left, right) pair of scenes."""
    scenes = [s if isinstance(s, Scene) else Scene.from_dict(s) for s in (left, right)]
    for kind, pattern in _NLVR2_PATTERNS.items():
        if m := pattern.fullmatch(sentence):
            groups = m.groupdict()
            if "shape" in groups:
                shape = None if groups["shape"] == "shape" else groups["shape"]
                has = [bool(s.find(groups["colour"], shape)) for s in scenes]
            counts = [len(s.objects) for s in scenes]
            if kind == "both":
                return all(has)
            if kind == "neither":
                return not any(has)
            if kind == "one":
                return sum(has) == 1
            if kind == "side":
                return has[groups["side"] == "right"]
            if kind == "compare":
                return counts[0] > counts[1] if groups["cmp"] == "more" else counts[0] < counts[1]
            if kind == "same":
                return counts[0] == counts[1]
            if groups["num"] in NUMBER_WORDS:
                number = NUMBER_WORDS.index(groups["num"])
                return (counts[groups["side"] == "right"] if kind == "exact" else sum(counts)) == number
    raise ValueError(f"not a ShapesWorld NLVR2 statement: {sentence!r}")


def _make_statement(
    rng: np.random.Generator, config: ShapesWorldConfig, avoid: set[tuple[str, str]]
) -> tuple[str, tuple[str | None, str | None] | None]:
    """A statement and the (colour, shape) it mentions, if any, so that pairs can be drawn to make it true."""
    colour, shape = COLOURS[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))]
    form = int(rng.integers(3)) if (colour, shape) not in avoid else int(rng.integers(1, 3))
    mention = [(colour, shape), (None, shape), (colour, None)][form]
    phrase = [f"a {colour} {shape}", f"a {shape}", f"a {colour} shape"][form]
    side = ("left", "right")[int(rng.integers(2))]
    lo, hi = config.min_objects, config.max_objects
    exact, total = int(rng.integers(lo, hi + 1)), int(rng.integers(2 * lo, 2 * hi + 1))
    options: list[tuple[str, tuple[str | None, str | None] | None]] = [
        (f"both images contain {phrase}.", mention),
        (f"neither image contains {phrase}.", mention),
        (f"exactly one image contains {phrase}.", mention),
        (f"the {side} image contains {phrase}.", mention),
    ]
    # Count statements only where counts vary: with a fixed count they are always true, and the False-pair search
    # would spend its 500 draws in vain each time.
    if lo < hi:
        options += [
            (f"the {side} image contains exactly {NUMBER_WORDS[exact]} shape{'s' * (exact > 1)}.", None),
            (f"there are {NUMBER_WORDS[total]} shapes in total.", None),
        ]
        more = ("more", "fewer")[int(rng.integers(2))]
        options += [(f"the left image contains {more} shapes than the right image.", None)]
        options += [("both images contain the same number of shapes.", None)]
    return options[int(rng.integers(len(options)))]
