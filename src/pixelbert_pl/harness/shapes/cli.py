"""`pixelbert-shapes`: generate the ShapesWorld corpus from the command line (layout in `writers`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pixelbert_pl.harness.shapes.scenes import ShapesWorldConfig
from pixelbert_pl.harness.shapes.writers import generate


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
