"""NLVR2 accuracy of ShapesWorld checkpoints by statement kind ("both", "side+colour", "exact", ...), to see which
statements a demo's NLVR2 fine-tuning learns and which it memorises (experiments/results/demo_seeds.md).

    python experiments/nlvr2_by_kind.py demo-output/shapesworld/nlvr2 demo-output/nlvr2/checkpoints/last.ckpt \
        [more checkpoints] [--split train]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from PIL import Image

from pixelbert_pl.harness.shapes.language import _NLVR2_PATTERNS
from pixelbert_pl.inference import Predictor

MENTIONS = {"both", "neither", "one", "side"}  # kinds that name a shape, with or without its colour


def statement_kind(sentence: str) -> str:
    for kind, pattern in _NLVR2_PATTERNS.items():
        if match := pattern.fullmatch(sentence):
            return kind + ("+colour" if kind in MENTIONS and match.group("colour") else "")
    raise ValueError(f"not a ShapesWorld NLVR2 statement: {sentence!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the corpus's nlvr2/ folder")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.root / f"{args.split}.json").read_text().splitlines()]
    left = [Image.open(args.root / r["left_url"]).convert("RGB") for r in rows]
    right = [Image.open(args.root / r["right_url"]).convert("RGB") for r in rows]
    text = [r["sentence"] for r in rows]
    for checkpoint in args.checkpoints:
        predictions = Predictor.from_checkpoint(checkpoint).predict(left=left, right=right, text=text)
        right_by_kind: dict[str, list[bool]] = defaultdict(list)
        for row, prediction in zip(rows, predictions, strict=True):
            correct = prediction["prediction"] == row["label"]
            right_by_kind[statement_kind(row["sentence"])].append(correct)
            right_by_kind["all"].append(correct)
        print(f"{checkpoint} ({args.split})")
        for kind in sorted(right_by_kind):
            hits = right_by_kind[kind]
            print(f"  {kind:<16}{len(hits):>5}{sum(hits) / len(hits):>8.3f}")


if __name__ == "__main__":
    main()
