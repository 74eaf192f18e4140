"""`pixelbert-export CHECKPOINT DIRECTORY [--tokenizer NAME_OR_PATH]`: a Lightning checkpoint to a shareable
directory (config.json naming the task model, model.safetensors, heads.safetensors, processor_config.json and the
tokenizer's files) that `Predictor.from_pretrained`, `PixelBertTaskModel.from_pretrained` and
`PixelBertProcessor.from_pretrained` read, offline, with no pickle and no Lightning."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pixelbert_pl.inference import Predictor


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pixelbert-export", description=__doc__)
    p.add_argument("checkpoint", help="a .ckpt written by `pixelbert fit`")
    p.add_argument("directory", help="where to write the exported model")
    p.add_argument("--tokenizer", default=None, help="the tokenizer the model was trained with (default: its config's)")
    p.add_argument(
        "--import", dest="modules", action="append", default=[], metavar="MODULE",
        help="a module of yours that registers a task model (repeatable); nothing the checkpoint names is imported",
    )  # fmt: skip
    args = p.parse_args(argv)
    for module in args.modules:  # named by the user on the command line, as a YAML's class_path is
        importlib.import_module(module)
    predictor = Predictor.from_checkpoint(args.checkpoint, tokenizer=args.tokenizer)
    out = predictor.save_pretrained(args.directory)
    print(f"exported {type(predictor.model).__name__} to {out}")
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
