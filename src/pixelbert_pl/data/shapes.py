"""ShapesWorld: a synthetic image-text corpus written in the published COCO, Karpathy, VQA v2 and NLVR2 formats.

A scene holds 1-4 flat shapes on a dark background. Within a scene every colour and every shape occurs at most
once, so "the [MASK] circle" or "a red [MASK]" always has exactly one answer in the pixels: a tiny Pixel-BERT can
ground the colour and shape words in minutes on a CPU, and the readers of the real corpora are exercised end to end
without any download. Every caption, question and statement comes from a small grammar that this module also
parses back (`caption_is_true`, `answer_question`, `statement_is_true`), so truth is checked against the scene,
never assumed.

Layout under `out_dir` (`generate`, or the console script `pixelbert-shapes`):

    images/shapes_{image_id:012d}.png   scenes, image ids from 1
    captions.json                       COCO captions (5 per image)
    karpathy.json                       Karpathy splits: train / val / test, plus test_heldout with --holdout
    scenes.json                         ground truth: objects with colour, shape, size, centre, bbox (x, y, w, h)
    hard_negatives.json                 per caption id: one-word swaps (colour / shape / relation) that are false
    vqa_questions.json                  VQA v2 questions (every image; the split comes from karpathy.json)
    vqa_annotations.json                VQA v2 annotations, 10 answers each
    vocab.txt                           WordPiece vocabulary holding every corpus word whole
    nlvr2/{train,dev,test}.json         NLVR2 JSON lines; images under nlvr2/images/{train/<dir>,dev,test}/
    nlvr2/scenes.json                   ground truth of the NLVR2 images
                                        (no nlvr2/ when num_nlvr2 is 0; `add_nlvr2` writes it later)

The same seed and config give byte-identical files: every random choice draws from a generator keyed by
(seed, stream, item), and nothing depends on the clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pixelbert_pl.models.tokenizer import basic_split, write_wordpiece_vocab

COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RGB = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 220, 40),
    "purple": (165, 60, 215),
    "cyan": (40, 215, 225),
}
BACKGROUND = (16, 16, 22)
SPLITS = ("train", "val", "test")
HELDOUT_SPLIT = "test_heldout"
NLVR2_SPLITS = ("train", "dev", "test")
# Centres closer than this (a fraction of the image side) along an axis get no relation word: a model at 96 px
# could not tell "left of" from "above" for objects that are nearly level.
RELATION_MARGIN = 1 / 6
_SIDE_AT_96 = {"small": 18, "large": 32}
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
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Words of the templates, so that vocab.txt depends on the grammar only, not on what a seed happened to draw.
_TEMPLATE_WORDS = (
    "a the is there are shape shapes : , and . ? how many what color size object both images image left right "
    "contain contains neither exactly more fewer than same number of in total 0 1 2 3 4 5 6 7 8 9 yes no"
)
_OUTPUTS = (
    "images",
    "captions.json",
    "karpathy.json",
    "scenes.json",
    "hard_negatives.json",
    "vqa_questions.json",
    "vqa_annotations.json",
    "vocab.txt",
    "nlvr2",
)
_LICENSE = {"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0 (generated)"}
_DATE = "2024-01-01 00:00:00"  # fixed so that reruns are byte-identical
# Independent random streams: adding questions must not change the scenes a seed draws.
_SCENE, _NOISE, _NLVR2 = 1, 2, 3


@dataclass(frozen=True)
class ShapesWorldConfig:
    num_images: int = 2000
    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 4
    captions_per_image: int = 5
    questions_per_image: int = 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    heldout: tuple[str, ...] = ()  # "colour shape" combinations seen only in the test_heldout split
    heldout_fraction: float = 0.1  # share of images built around a held-out combination (when there are any)
    hard_negatives_per_caption: int = 6
    vqa_disagreement: float = 0.1  # share of questions where 1-3 of the 10 annotators give another answer
    # Examples over train / dev / test, split by split_fractions. With 1,000 (800 train, 100 dev) the demo's NLVR2
    # fine-tuning memorised its training statements (train 1.000, dev loss rising) and dev accuracy moved by 0.2
    # between pre-training draws; with 3,200 train it keeps learning (dev loss falling) on a 400-example dev set.
    num_nlvr2: int = 4000
    nlvr2_pairs_per_set: int = 2  # image pairs sharing one sentence: half True, half False (consistency groups)
    noise: int = 6  # amplitude of the uniform per-pixel noise

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= min(len(COLOURS), len(SHAPES)):
            raise ValueError(
                f"ShapesWorldConfig: need 1 <= min_objects <= max_objects <= 4, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if self.image_size < 48:
            raise ValueError(f"image_size {self.image_size} is too small for 4 separated shapes")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {self.split_fractions}")
        for combo in self.heldout:
            parse_combo(combo)

    def side_px(self, size: str) -> int:
        return round(_SIDE_AT_96[size] * self.image_size / 96)


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    bbox: tuple[int, int, int, int]  # x, y, width, height (COCO order), in pixels

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2, y + h / 2)


@dataclass(frozen=True)
class Scene:
    image_size: int
    objects: tuple[ShapeObject, ...]

    def find(self, colour: str | None = None, shape: str | None = None, size: str | None = None) -> list[ShapeObject]:
        return [
            o
            for o in self.objects
            if colour in (None, o.colour) and shape in (None, o.shape) and size in (None, o.size)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.image_size,
            "height": self.image_size,
            "objects": [
                {"colour": o.colour, "shape": o.shape, "size": o.size, "centre": list(o.centre), "bbox": list(o.bbox)}
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        objects = tuple(ShapeObject(o["colour"], o["shape"], o["size"], tuple(o["bbox"])) for o in data["objects"])
        return cls(int(data["width"]), objects)


def parse_combo(text: str) -> tuple[str, str]:
    """Parse a held-out combination: "red triangle" -> ("red", "triangle")."""
    words = text.strip().lower().split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
        raise ValueError(f"held-out combination must be 'colour shape' from {COLOURS} x {SHAPES}, got {text!r}")
    return words[0], words[1]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


# --------------------------------------------------------------------------------------------------- scenes


def sample_scene(
    rng: np.random.Generator,
    config: ShapesWorldConfig,
    require: tuple[str | None, str | None] | None = None,
    forbid: Iterable[tuple[str, str]] = (),
) -> Scene:
    """A random scene; `require` = (colour or None, shape or None) that some object must have, `forbid` =
    (colour, shape) combinations no object may have."""
    forbid = set(forbid)
    for _ in range(10_000):
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        colours = [COLOURS[i] for i in rng.permutation(len(COLOURS))[:n]]
        shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
        for values, wanted in zip((colours, shapes), require or (None, None), strict=True):
            if wanted is not None:
                if wanted in values:
                    values.remove(wanted)
                else:
                    values.pop()
                values.insert(0, wanted)
        if forbid.intersection(zip(colours, shapes, strict=True)):
            continue
        sizes = [SIZES[i] for i in rng.integers(0, len(SIZES), n)]
        boxes = _place(rng, [config.side_px(s) for s in sizes], config.image_size)
        if boxes is not None:
            objects = zip(colours, shapes, sizes, boxes, strict=True)
            return Scene(config.image_size, tuple(ShapeObject(c, s, z, b) for c, s, z, b in objects))
    raise RuntimeError(f"no scene satisfies require={require} forbid={sorted(forbid)}")


def _place(rng: np.random.Generator, sides: Sequence[int], image_size: int) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping boxes with a gap, so that no shape hides another's colour or outline; None if stuck."""
    border, gap = max(1, round(image_size * 2 / 96)), max(2, round(image_size * 4 / 96))
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        for _ in range(100):
            x, y = (int(v) for v in rng.integers(border, image_size - border - side + 1, 2))
            if all(
                x + side + gap <= bx or bx + bw + gap <= x or y + side + gap <= by or by + bh + gap <= y
                for bx, by, bw, bh in boxes
            ):
                boxes.append((x, y, side, side))
                break
        else:
            return None
    return boxes


def render_scene(scene: Scene, noise: int = 0, rng: np.random.Generator | None = None) -> Image.Image:
    """Filled shapes (no anti-aliasing) on the background; `noise` adds uniform per-pixel noise everywhere."""
    image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x, y, w, h = obj.bbox
        x1, y1, fill = x + w - 1, y + h - 1, RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x, y, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x, y, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(x + (w - 1) / 2, y), (x, y1), (x1, y1)], fill=fill)
        else:
            arm = w // 3
            draw.rectangle((x, y + arm, x1, y1 - arm), fill=fill)
            draw.rectangle((x + arm, y, x1 - arm, y1), fill=fill)
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-noise, noise + 1, (*image.size[::-1], 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


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
    relation_pool, seen_pairs = [], set()
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
    by_kind: dict[str, list[str]] = {"colour": [], "shape": [], "relation": []}
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
    # Count statements only where scenes differ in count: with a fixed count they are always true, and the pair
    # search for a False example would spend its 500 draws in vain each time (10 of the 14 s that generating the
    # one-shape warm-up corpus took).
    if lo < hi:
        options += [
            (f"the {side} image contains exactly {NUMBER_WORDS[exact]} shape{'s' * (exact > 1)}.", None),
            (f"there are {NUMBER_WORDS[total]} shapes in total.", None),
        ]
        more = ("more", "fewer")[int(rng.integers(2))]
        options += [(f"the left image contains {more} shapes than the right image.", None)]
        options += [("both images contain the same number of shapes.", None)]
    return options[int(rng.integers(len(options)))]


def _make_pair(
    rng: np.random.Generator,
    config: ShapesWorldConfig,
    sentence: str,
    mention: tuple[str | None, str | None] | None,
    label: bool,
    avoid: set[tuple[str, str]],
) -> tuple[Scene, Scene] | None:
    # Each side holds the mentioned object half the time, so that "both ..." and "neither ..." are each reached
    # in a few draws; None when the label cannot be reached (e.g. a count the config never draws).
    for _ in range(500):
        left, right = (
            sample_scene(rng, config, mention if mention and rng.integers(2) else None, avoid) for _ in range(2)
        )
        if statement_is_true(sentence, left, right) == label:
            return left, right
    return None


def _write_nlvr2(
    out: Path, config: ShapesWorldConfig, seed: int, avoid: set[tuple[str, str]]
) -> tuple[dict[str, int], list[str]]:
    counts = _split_counts(config.num_nlvr2, config.split_fractions)
    scene_records: list[dict[str, Any]] = []
    summary, sentences = {}, []
    for split_index, (split, n_examples) in enumerate(zip(NLVR2_SPLITS, counts, strict=True)):
        lines = []
        for set_id in range(math.ceil(n_examples / config.nlvr2_pairs_per_set)):
            rng = _rng(seed, _NLVR2, split_index, set_id)
            n_pairs = min(config.nlvr2_pairs_per_set, n_examples - set_id * config.nlvr2_pairs_per_set)
            start = int(rng.integers(2))  # alternate labels within a set, so every split stays balanced
            labels = [(start + j) % 2 == 0 for j in range(n_pairs)]
            while True:
                sentence, mention = _make_statement(rng, config, avoid)
                pairs = [_make_pair(rng, config, sentence, mention, label, avoid) for label in labels]
                if all(pairs):
                    break
            for pair_id, (label, pair) in enumerate(zip(labels, pairs, strict=True)):
                stem = f"{split}-{set_id}-{pair_id}"
                folder = Path("images", split, str(set_id % 100)) if split == "train" else Path("images", split)
                (out / folder).mkdir(parents=True, exist_ok=True)
                urls = []
                for side, scene in enumerate(pair or ()):
                    name = (folder / f"{stem}-img{side}.png").as_posix()
                    noise_rng = _rng(seed, _NLVR2, split_index, set_id, pair_id, side, _NOISE)
                    render_scene(scene, config.noise, noise_rng).save(out / name)
                    scene_records.append({"image_id": f"{stem}-img{side}", "file_name": name, **scene.to_dict()})
                    urls.append(name)
                text = str(label)
                record: dict[str, Any] = {
                    "validation": {"1": text},
                    "sentence": sentence,
                    "left_url": urls[0],
                    "writer": "0",
                    "label": text,
                    "right_url": urls[1],
                    "synset": "shape",
                    "query": " ".join(w for w in mention or ("shapes",) if w) + f" {set_id}",
                    "identifier": f"{stem}-0",
                }
                if split == "train":
                    record["directory"] = set_id % 100
                else:
                    record["extra_validations"] = {str(k): text for k in range(2, 6)}
                lines.append(json.dumps(record) + "\n")
                sentences.append(sentence)
        (out / f"{split}.json").write_text("".join(lines), encoding="utf-8")
        summary[split] = len(lines)
    _write_json(out / "scenes.json", {"info": _info(seed, "NLVR2 scenes"), "scenes": scene_records})
    return summary, sentences


# ------------------------------------------------------------------------------------------------- corpus


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    head = [round(n * f) for f in fractions[:-1]]
    return [*head, n - sum(head)]


def _info(seed: int, what: str) -> dict[str, Any]:
    return {
        "description": f"ShapesWorld {what} (synthetic, pixelbert_pl.data.shapes)",
        "url": "",
        "version": "1.0",
        "year": 2024,
        "contributor": "pixelbert-pl",
        "date_created": _DATE,
        "seed": seed,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


@dataclass
class _Image:
    image_id: int
    scene: Scene
    heldout: bool
    captions: list[str]
    negatives: list[list[dict[str, str]]]
    vqa: list[tuple[dict[str, Any], dict[str, Any]]]
    split: str = HELDOUT_SPLIT

    @property
    def file_name(self) -> str:
        return f"shapes_{self.image_id:012d}.png"


def _make_image(
    out: Path, config: ShapesWorldConfig, seed: int, image_id: int, heldout: list[tuple[str, str]]
) -> _Image:
    rng = _rng(seed, _SCENE, image_id)
    held = bool(heldout) and rng.random() < config.heldout_fraction
    avoid = set() if held else set(heldout)
    scene = sample_scene(rng, config, heldout[int(rng.integers(len(heldout)))] if held else None, avoid)
    image = _Image(image_id, scene, held, make_captions(scene, rng, config.captions_per_image), [], [])
    render_scene(scene, config.noise, _rng(seed, _NOISE, image_id)).save(out / "images" / image.file_name)
    for caption in image.captions:
        if not caption_is_true(caption, scene):
            raise AssertionError(f"generated a false caption {caption!r} for {scene}")
        image.negatives.append(make_hard_negatives(caption, scene, rng, config.hard_negatives_per_caption, avoid))
    image.vqa = make_vqa(scene, image_id, rng, config, avoid)
    return image


def _write_captions(out: Path, seed: int, images: Sequence[_Image]) -> None:
    """captions.json (COCO), karpathy.json and hard_negatives.json; a caption's COCO id is its Karpathy sentid."""
    coco_images, annotations, karpathy, negatives = [], [], [], []
    for imgid, image in enumerate(images):
        size = image.scene.image_size
        coco_images.append(
            {
                "license": 1,
                "file_name": image.file_name,
                "coco_url": "",
                "height": size,
                "width": size,
                "date_captured": _DATE,
                "flickr_url": "",
                "id": image.image_id,
            }
        )
        sentences = []
        for caption, found in zip(image.captions, image.negatives, strict=True):
            sentid = len(annotations) + 1
            annotations.append({"image_id": image.image_id, "id": sentid, "caption": caption})
            negatives.append({"caption_id": sentid, "image_id": image.image_id, "negatives": found})
            tokens = re.findall(r"[a-z0-9]+", caption)
            sentences.append({"tokens": tokens, "raw": caption, "imgid": imgid, "sentid": sentid})
        karpathy.append(
            {
                "filepath": "images",
                "filename": image.file_name,
                "imgid": imgid,
                "cocoid": image.image_id,
                "split": image.split,
                "sentids": [sentence["sentid"] for sentence in sentences],
                "sentences": sentences,
            }
        )
    info = _info(seed, "captions")
    _write_json(
        out / "captions.json", {"info": info, "images": coco_images, "licenses": [_LICENSE], "annotations": annotations}
    )
    _write_json(out / "karpathy.json", {"images": karpathy, "dataset": "coco"})
    _write_json(out / "hard_negatives.json", {"info": _info(seed, "hard negatives"), "hard_negatives": negatives})


def _write_vqa(out: Path, seed: int, images: Sequence[_Image]) -> None:
    license = {"url": _LICENSE["url"], "name": _LICENSE["name"]}
    subset = {"data_type": "mscoco", "data_subtype": "shapes"}
    questions = [q for image in images for q, _ in image.vqa]
    annotations = [a for image in images for _, a in image.vqa]
    _write_json(
        out / "vqa_questions.json",
        {"info": _info(seed, "VQA questions"), "task_type": "Open-Ended", **subset, "license": license}
        | {"questions": questions},
    )
    _write_json(
        out / "vqa_annotations.json",
        {"info": _info(seed, "VQA annotations"), "license": license, **subset, "annotations": annotations},
    )


def generate(out_dir: str | Path, config: ShapesWorldConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the whole corpus under `out_dir` (layout in the module docstring); returns a summary."""
    config = config or ShapesWorldConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    heldout = [parse_combo(c) for c in config.heldout]
    images = [_make_image(out, config, seed, image_id, heldout) for image_id in range(1, config.num_images + 1)]
    # Scenes are drawn independently, so consecutive ids make as random a split as any shuffle.
    kept = [image for image in images if not image.heldout]
    bounds = np.cumsum([0, *_split_counts(len(kept), config.split_fractions)])
    for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        for image in kept[lo:hi]:
            image.split = split

    _write_captions(out, seed, images)
    _write_vqa(out, seed, images)
    scenes = [{"image_id": i.image_id, "file_name": i.file_name, "split": i.split, **i.scene.to_dict()} for i in images]
    _write_json(out / "scenes.json", {"info": _info(seed, "scenes"), "config": asdict(config), "scenes": scenes})
    nlvr2, statements = _nlvr2(out, config, seed) if config.num_nlvr2 > 0 else ({}, [])
    texts = itertools.chain(
        [_TEMPLATE_WORDS, *COLOURS, *SHAPES, *SIZES, *RELATIONS, *NUMBER_WORDS, *_POSITIONS.values()],
        (c for image in images for c in image.captions),
        (n["caption"] for image in images for group in image.negatives for n in group),
        (q["question"] for image in images for q, _ in image.vqa),
        (x["answer"] for image in images for _, a in image.vqa for x in a["answers"]),
        statements,
    )
    write_wordpiece_vocab(texts, out / "vocab.txt")
    splits = [image.split for image in images]
    return {
        "out_dir": str(out),
        "seed": seed,
        "images": len(images),
        "splits": {s: splits.count(s) for s in (*SPLITS, HELDOUT_SPLIT) if s in splits},
        "captions": sum(len(image.captions) for image in images),
        "hard_negatives": sum(len(group) for image in images for group in image.negatives),
        "questions": sum(len(image.vqa) for image in images),
        "nlvr2": nlvr2,
        "files": {name: str(out / name) for name in _OUTPUTS if (out / name).exists()},
    }


def _nlvr2(out: Path, config: ShapesWorldConfig, seed: int) -> tuple[dict[str, int], list[str]]:
    (out / "nlvr2").mkdir(exist_ok=True)
    return _write_nlvr2(out / "nlvr2", config, seed, {parse_combo(c) for c in config.heldout})


def add_nlvr2(out_dir: str | Path, num_nlvr2: int | None = None) -> dict[str, int]:
    """Write `nlvr2/` into a corpus generated without it (`num_nlvr2=0`), with the corpus's own seed and config
    (read back from its scenes.json): the same files `generate` would have written with that many examples.
    Returns the examples per split.

    Why: pre-training reads no NLVR2, so a corpus made for it can skip their generation (~3 s per 1,000 examples
    on 2 CPU cores: 10-12 s of the demo's 16.5 s corpus) and have them added when an NLVR2 run first needs them.
    The vocabulary is unchanged: every word a statement can use is in the grammar's word list, which vocab.txt
    always holds (checked below)."""
    out = Path(out_dir)
    document = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in document["config"].items()}  # JSON lists
    config = ShapesWorldConfig(**fields)
    config = replace(config, num_nlvr2=ShapesWorldConfig.num_nlvr2 if num_nlvr2 is None else num_nlvr2)
    summary, statements = _nlvr2(out, config, int(document["info"]["seed"]))
    vocab = set((out / "vocab.txt").read_text(encoding="utf-8").split())
    missing = {word for statement in statements for word in basic_split(statement)} - vocab
    if missing:
        shutil.rmtree(out / "nlvr2")  # unusable with this vocabulary; a later run must not take it as done
        raise ValueError(f"{out / 'vocab.txt'} lacks the NLVR2 words {sorted(missing)}; regenerate the corpus")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    defaults = ShapesWorldConfig()
    parser = argparse.ArgumentParser(prog="pixelbert-shapes", description="Generate the ShapesWorld corpus.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=defaults.num_images)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--holdout", default="", help='held-out combinations, e.g. "red triangle,blue circle"')
    parser.add_argument("--num-nlvr2", type=int, default=defaults.num_nlvr2, help="NLVR2 examples over all splits")
    parser.add_argument("--min-objects", type=int, default=defaults.min_objects, help="fewest shapes in a scene")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, help="most shapes in a scene (<= 4)")
    args = parser.parse_args(argv)
    config = ShapesWorldConfig(
        num_images=args.num_images,
        image_size=args.image_size,
        heldout=tuple(c.strip() for c in args.holdout.split(",") if c.strip()),
        num_nlvr2=args.num_nlvr2,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
    )
    summary = generate(args.out, config, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
