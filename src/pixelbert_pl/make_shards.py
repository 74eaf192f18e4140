"""`pixelbert-make-shards --out DIR (--config CONFIG | --tsv FILE --image-root DIR | --folder DIR)`: write a
pre-training corpus as sharded Parquet files that Hugging Face `datasets` streams.

With --config (a LightningCLI YAML, with the same `--data.init_args.*` overrides as `pixelbert fit`) it writes the
DataModule's train and val splits exactly as training would read them, the leak filters included. --tsv (a
CC3M-style caption<TAB>image file) and --folder (img2dataset-style image + .txt pairs) write a train split.

Exit status: 0 when every split was written; 2 when the corpus cannot be read (a malformed file, missing images,
...), with the reader's error naming the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pixelbert_pl.data.shards import read_caption_folder, read_caption_tsv, write_shards


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixelbert-make-shards", description=__doc__.split("\n\n")[1],
        epilog="With --config, other arguments are --data.init_args.* overrides, as for `pixelbert fit`.",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="folder to write the shards and {split}.index.json into")
    p.add_argument("--records-per-shard", type=int, default=1000, help="images per Parquet file")
    p.add_argument("--seed", type=int, default=0, help="seed of the one shuffle before sharding")
    corpus = p.add_mutually_exclusive_group(required=True)
    corpus.add_argument("--config", help="a LightningCLI YAML with a data: section (writes train and val)")
    corpus.add_argument("--tsv", help="a caption<TAB>image file (needs --image-root)")
    corpus.add_argument("--folder", help="a folder of image files, each with a same-stem .txt caption file")
    p.add_argument("--image-root", help="with --tsv: the folder its relative image paths start from")
    p.add_argument("--source", default="cc3m", help="with --tsv/--folder: the corpus name in records and ids")
    p.add_argument("--allow-missing", action="store_true", help="with --tsv: skip lines whose image is missing")
    return p


def _splits(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Sequence[Any]]:
    if args.config:
        from pixelbert_pl.check_data import build_datamodule  # imports Lightning: only for this mode

        return dict(build_datamodule(args.config, overrides).split_records("fit"))
    if args.tsv:
        return {"train": read_caption_tsv(args.tsv, args.image_root, args.source, allow_missing=args.allow_missing)}
    return {"train": read_caption_folder(args.folder, args.source)}


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args, overrides = p.parse_known_args(argv)
    if overrides and (not args.config or not all(a.startswith("--data.") for a in overrides if a.startswith("-"))):
        p.error(f"unrecognized arguments: {' '.join(overrides)} (only --config takes --data.* overrides)")
    if args.tsv and not args.image_root:
        p.error("--tsv needs --image-root (the folder its image paths are relative to)")
    try:
        for split, records in _splits(args, overrides).items():
            index = write_shards(records, args.out, split, args.records_per_shard, args.seed)
            print(f"{split}: {index.num_records} records, {index.num_pairs} pairs, {len(index.shards)} shards "
                  f"-> {index.root}")  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, argparse.ArgumentError) as err:  # the last: a bad override
        print(f"pixelbert-make-shards: cannot read the corpus: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
