"""Build a visual-entailment benchmark in SNLI-VE's published jsonl format from a ShapesWorld corpus.

Each image premise gets `per_class` statements of each class, so every split is balanced:

- entailment: one of the image's own captions (true for its scene);
- contradiction: one of the corpus's hard negatives of its captions (one colour, shape or relation word swapped,
  checked false for the scene by the generator);
- neutral: a statement about the image's own objects that a flat 2-D drawing cannot decide: depth and
  occlusion ("the red circle is behind the blue square."), material and weight ("the red circle is made of
  wood.", "the red circle is heavier than the blue square."). Naming objects that are in the image keeps the
  statement from being refutable, and keeps it from being about some other image.

Neutral statements use words the caption grammar never does, so their class shows in the wording, as SNLI's
hypotheses often show theirs; telling entailment from contradiction needs the pixels.

Rows are written as SNLI-VE has them (`Flikr30kID` = the image file name, `gold_label`, `sentence2` = the
statement, `sentence1` = a premise caption, `pairID`, `captionID`, `annotator_labels`), one file per Karpathy split
of ShapesWorld: ve_train.jsonl, ve_dev.jsonl, ve_test.jsonl. Images stay where ShapesWorld put them
(`<shapes_root>/images`, the `image_root` to read them with). The same corpus and seed give the same files.

    python examples/visual_entailment/make_shapes_ve.py --shapes-root demo-output/shapesworld \\
        --out demo-output/shapes_ve
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelbert_pl.data.classification import SNLI_VE_LABELS
from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate

# ShapesWorld's Karpathy split -> the SNLI-VE-style file it goes to; test_heldout images are left out.
SPLIT_FILES = {"train": "ve_train.jsonl", "val": "ve_dev.jsonl", "test": "ve_test.jsonl"}
ONE_OBJECT = (
    "{a} is made of wood.",
    "{a} is made of metal.",
    "{a} is made of glass.",
    "{a} is made of paper.",
    "{a} is heavy.",
    "{a} is hollow.",
)
TWO_OBJECTS = (
    "{a} is behind {b}.",
    "{a} is in front of {b}.",
    "{a} is heavier than {b}.",
    "{a} is lighter than {b}.",
)


def neutral_statements(objects: Sequence[dict[str, Any]], with_size: bool) -> list[str]:
    """Every undecidable statement about these objects (scenes.json entries: colour, shape, size)."""
    names = [" ".join(["the", *([o["size"]] if with_size else []), o["colour"], o["shape"]]) for o in objects]
    out = [t.format(a=a) for a in names for t in ONE_OBJECT]
    return out + [t.format(a=a, b=b) for a in names for b in names if a != b for t in TWO_OBJECTS]


def _pick(rng: np.random.Generator, pool: Sequence[str], k: int) -> list[str] | None:
    """k distinct items of `pool` in random order; None when it has fewer."""
    distinct = list(dict.fromkeys(pool))
    if len(distinct) < k:
        return None
    return [distinct[i] for i in rng.choice(len(distinct), size=k, replace=False)]


def _load(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {path.parent} a ShapesWorld corpus (pixelbert-shapes --out)?")
    return json.loads(path.read_text(encoding="utf-8"))


def make_shapes_ve(shapes_root: str | Path, out_dir: str | Path, seed: int = 0, per_class: int = 1) -> dict[str, Any]:
    """Write ve_{train,dev,test}.jsonl under `out_dir` from the corpus in `shapes_root`; returns the class counts
    per file and how many images had too few statements of some class (left out whole, to stay balanced)."""
    if per_class < 1:
        raise ValueError(f"per_class={per_class}: expected >= 1 statement of each class per image")
    root, out = Path(shapes_root), Path(out_dir)
    karpathy = _load(root / "karpathy.json")["images"]
    negatives = {n["caption_id"]: n["negatives"] for n in _load(root / "hard_negatives.json")["hard_negatives"]}
    scenes = {s["image_id"]: s for s in _load(root / "scenes.json")["scenes"]}
    rows: dict[str, list[str]] = {name: [] for name in SPLIT_FILES.values()}
    skipped = 0
    for image in karpathy:
        if image["split"] not in SPLIT_FILES:
            continue
        # Keyed by (seed, image id) alone, so an image's statements do not depend on the others.
        rng = np.random.default_rng([seed, image["cocoid"]])
        captions = [s["raw"] for s in image["sentences"]]
        false = [n["caption"] for s in image["sentences"] for n in negatives.get(s["sentid"], [])]
        objects = scenes[image["cocoid"]]["objects"]
        chosen = {
            "entailment": _pick(rng, captions, per_class),
            "neutral": _pick(rng, neutral_statements(objects, with_size=bool(rng.integers(2))), per_class),
            "contradiction": _pick(rng, false, per_class),
        }
        if any(statements is None for statements in chosen.values()):
            skipped += 1
            continue
        name = image["filename"]
        for label in SNLI_VE_LABELS:
            for k, statement in enumerate(chosen[label] or (), 1):
                row = {
                    "Flikr30kID": name,
                    "annotator_labels": [label],
                    "captionID": f"{name}#0",
                    "gold_label": label,
                    "pairID": f"{name}#0r{k}{label[0]}",
                    "sentence1": captions[0],
                    "sentence2": statement,
                }
                rows[SPLIT_FILES[image["split"]]].append(json.dumps(row) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for file_name, lines in rows.items():
        (out / file_name).write_text("".join(lines), encoding="utf-8")
        counts[file_name] = dict(Counter(json.loads(line)["gold_label"] for line in lines))
    return {"out_dir": str(out), "image_root": str(root / "images"), "counts": counts, "images_skipped": skipped}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes-root", required=True, help="ShapesWorld corpus folder (generated if missing)")
    parser.add_argument("--out", required=True, help="folder for ve_{train,dev,test}.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=1, help="statements of each class per image")
    # Only used when the corpus is generated here; the defaults are the demo's, so its checkpoint fits.
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    root = Path(args.shapes_root)
    if not (root / "karpathy.json").is_file():
        generate(root, ShapesWorldConfig(num_images=args.num_images, image_size=args.image_size), seed=args.seed)
    print(json.dumps(make_shapes_ve(root, args.out, args.seed, args.per_class), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
