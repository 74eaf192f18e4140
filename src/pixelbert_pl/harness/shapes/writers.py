"""ShapesWorld written in the published COCO, Karpathy, VQA v2 and NLVR2 formats, so that the readers of the real
corpora are exercised end to end without any download.

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

import itertools
import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pixelbert_pl.harness.shapes.language import (
    _POSITIONS,
    _TEMPLATE_WORDS,
    NUMBER_WORDS,
    RELATIONS,
    _make_statement,
    caption_is_true,
    make_captions,
    make_hard_negatives,
    make_vqa,
    statement_is_true,
)
from pixelbert_pl.harness.shapes.scenes import (
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapesWorldConfig,
    parse_combo,
    render_scene,
    sample_scene,
)
from pixelbert_pl.processing import basic_split, write_wordpiece_vocab

SPLITS = ("train", "val", "test")
HELDOUT_SPLIT = "test_heldout"
NLVR2_SPLITS = ("train", "dev", "test")
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


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


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
        # A fixed label, not the module's path: corpora stay byte-identical to those already generated.
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
    annotations: list[dict[str, Any]]  # read (len) before its first append, so mypy cannot infer it
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

    Why: pre-training reads no NLVR2, so a corpus made for it can skip their generation (most of a corpus's
    generation time) and have them added when an NLVR2 run first needs them.
    The vocabulary is unchanged: every word a statement can use is in the grammar's word list, which vocab.txt
    always holds (checked below)."""
    out = Path(out_dir)
    document = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
    # JSON lists back to the config's tuples
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in document["config"].items()}
    config = ShapesWorldConfig(**fields)
    config = replace(config, num_nlvr2=ShapesWorldConfig.num_nlvr2 if num_nlvr2 is None else num_nlvr2)
    summary, statements = _nlvr2(out, config, int(document["info"]["seed"]))
    vocab = set((out / "vocab.txt").read_text(encoding="utf-8").split())
    missing = {word for statement in statements for word in basic_split(statement)} - vocab
    if missing:
        shutil.rmtree(out / "nlvr2")  # unusable with this vocabulary; a later run must not take it as done
        raise ValueError(f"{out / 'vocab.txt'} lacks the NLVR2 words {sorted(missing)}; regenerate the corpus")
    return summary


# (width, height) `write_mixed_sizes` cuts images to: at min 64 / max 128 / divisor 16 they resize to 9 sizes.
MIXED_SIZES = ((96, 64), (64, 96), (80, 48), (48, 80), (64, 64), (112, 64), (64, 112), (72, 48), (120, 64))


def write_mixed_sizes(
    source: Path, out: Path, train_images: int = 24, sizes: Sequence[tuple[int, int]] = MIXED_SIZES
) -> Path:
    """A corpus of mixed aspect ratios from a generated one: its first `train_images` train images and its val
    images, each resized to `sizes[n % len(sizes)]` (width, height), in `out/karpathy.json` and `out/images/`,
    beside a copy of its `vocab.txt`. For what square images cannot show: padding, buckets, compilations."""
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    karpathy = json.loads((source / "karpathy.json").read_text())
    train = [i for i in karpathy["images"] if i["split"] == "train"][:train_images]
    val = [i for i in karpathy["images"] if i["split"] == "val"]
    for n, entry in enumerate(train + val):
        with Image.open(source / entry["filepath"] / entry["filename"]) as image:
            image.convert("RGB").resize(sizes[n % len(sizes)]).save(out / "images" / entry["filename"])
    _write_json(out / "karpathy.json", {**karpathy, "images": train + val})
    shutil.copyfile(source / "vocab.txt", out / "vocab.txt")
    return out
