"""`pixelbert-export CHECKPOINT DIRECTORY [--tokenizer NAME_OR_PATH]`: a Lightning checkpoint to a shareable
directory (config.json with every preprocessing setting, model.safetensors, heads.safetensors, the tokenizer's
files) that `Predictor.from_pretrained` and `PixelBertModel.from_pretrained` read, offline, with no pickle."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pixelbert_pl.inference import Predictor


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pixelbert-export", description=__doc__)
    p.add_argument("checkpoint", help="a .ckpt written by `pixelbert fit`")
    p.add_argument("directory", help="where to write the exported model")
    p.add_argument("--tokenizer", default=None, help="the tokenizer the model was trained with (default: its config's)")
    args = p.parse_args(argv)
    predictor = Predictor.from_checkpoint(args.checkpoint, tokenizer=args.tokenizer)
    out = predictor.save_pretrained(args.directory)
    print(f"exported {type(predictor.task).__name__} to {out}")
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
