"""`pixelbert-check-data --config CONFIG`: scan a recipe's corpus before a long run.

Reads the `data:` section of a LightningCLI config (the same YAML `pixelbert fit` takes, with the base it names, and
with the same `--data.init_args.*` overrides), builds the DataModule, reads every split the stage uses, decodes
every image exactly as training would, and tokenises every text. It prints how many records, images and texts each
split has, which images it cannot read, grouped by reason with an example each, and the empty and over-long texts. A
streaming recipe's shards are read each as training reads it and checked against their index (rows, caption counts,
image sizes); their images are the bytes inside the shards. A streamed `datasets` source is read block by block.

Exit status: 0 when the run would go through; 1 when the training split's unreadable fraction is above the data
module's `max_skipped_fraction` (training would stop there) or an evaluation split has any unreadable image
(evaluation never substitutes); 2 when the corpus cannot be read at all (a malformed annotation file, missing
images, an unreadable shard or one its index does not describe, ...), with the reader's error naming the file.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pixelbert_pl.processing.images import DEFAULT_MAX_PIXELS, UnreadableImageError, load_image

if TYPE_CHECKING:
    from pixelbert_pl.data.shards import ShardIndex

_TEXT_FIELDS = ("captions", "question", "sentence", "text")


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A recipe's settings as its YAML files write them (no defaults added), read as `pixelbert fit --config` reads
    them: a first key `config: BASE` reads the file BASE (relative to this one) the same way, a dotted key
    (`data.init_args.batch_size: 8`) then sets that one value, and any other key replaces the base's whole value."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        written = yaml.safe_load(f) or {}
    if "config" in written and next(iter(written)) != "config":
        raise ValueError(f"{path}: `config:` (the base) must be the file's first key, so that later keys change it")
    recipe: dict[str, Any] = read_recipe(path.parent / written.pop("config")) if "config" in written else {}
    for key, value in written.items():
        *parents, leaf = key.split(".")
        node = recipe
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return recipe


def build_datamodule(config: str, overrides: Sequence[str] = ()) -> Any:
    """The DataModule a config's `data:` section describes (other sections are not read: no model is built)."""
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    import pixelbert_pl.data  # noqa: F401  (class_path resolution)

    section = read_recipe(config).get("data")
    if not section:
        raise ValueError(f"{config}: no `data:` section (expected class_path and init_args)")
    parser = ArgumentParser(prog="pixelbert-check-data", exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = parser.parse_args(["--data", json.dumps(section), *overrides])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(cfg).data


def _fields(record: Any) -> dict[str, Any]:
    return asdict(record) if is_dataclass(record) and not isinstance(record, type) else dict(record)


def record_images(record: Any) -> list[str]:
    return [v for k, v in _fields(record).items() if k.endswith("_path") and isinstance(v, str)]


def record_texts(record: Any) -> list[str]:
    texts: list[str] = []
    for key, value in _fields(record).items():
        if key in _TEXT_FIELDS:
            texts.extend(value if isinstance(value, list) else [value])
    return texts


def check_image(path: str, data: bytes | None = None) -> tuple[str, str | None]:
    """(path, None) when `load_image` decodes it (or its file bytes `data`, read from a shard), else (path, the
    reason)."""
    try:
        load_image(path, DEFAULT_MAX_PIXELS, data=data)
    except UnreadableImageError as err:
        return path, err.reason or str(err)
    return path, None


def reason_kind(reason: str) -> str:
    if "pixels >" in reason:
        return "over the pixel cap"
    return reason.split(":")[0]


def text_counts(texts: Sequence[str], tokenizer: Any, max_text_length: int) -> dict[str, int]:
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]] if texts else []
    return {
        "texts": len(texts), "empty_texts": sum(not t.strip() for t in texts),
        "truncated_texts": sum(n > max_text_length for n in lengths),
    }  # fmt: skip


def _pool(workers: int) -> Any:
    """Worker processes started by a fork server, not forked from this process: a fork copies whatever lock another
    thread holds at that moment (tqdm's monitor thread, which `datasets` starts), and a worker that needs it waits
    forever. The server imports this module once; each worker is a fork of it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context.Pool(workers)


def check_held_image(images: Mapping[str, bytes] | None, path: str) -> tuple[str, str | None]:
    """`check_image` of the bytes the data holds for `path` (a `datasets` image column), else of the file."""
    return check_image(path, None if images is None else images.get(path))


def scan_split(
    records: Sequence[Any],
    tokenizer: Any,
    max_text_length: int,
    workers: int,
    images: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """The records' images decoded (from `images` where the data holds their bytes) and texts tokenised."""
    paths = sorted({p for r in records for p in record_images(r)})
    with _pool(workers) as pool:
        check = functools.partial(check_held_image, images)
        results: Iterable[tuple[str, str | None]] = pool.imap_unordered(check, paths, chunksize=32)
        bad = {path: reason for path, reason in results if reason is not None}
    texts = text_counts([t for r in records for t in record_texts(r)], tokenizer, max_text_length)
    return {"records": len(records), "images": len(paths), "unreadable": bad, **texts}


def scan_shard(index: ShardIndex, shard: int) -> tuple[int, list[str], dict[str, str]]:
    """Shard `shard` of `index` read as training reads it and checked against the index (`ShardError` naming it
    where it cannot be read or differs): its row count, its texts and its unreadable images, as `shard: path`."""
    from pixelbert_pl.data.streaming import read_listed_shard

    records, images = read_listed_shard(index, shard, check_sizes=True)
    checked = (check_image(r.image_path, images[r.image_path]) for r in records)
    bad = {f"{index.shards[shard].file}: {path}": reason for path, reason in checked if reason is not None}
    return len(records), [t for r in records for t in record_texts(r)], bad


def scan_shards(index: ShardIndex, tokenizer: Any, max_text_length: int, workers: int) -> dict[str, Any]:
    """`scan_split` for a streaming split: every shard its `ShardIndex` lists, a shard a task."""
    with _pool(workers) as pool:
        shards = list(pool.imap(functools.partial(scan_shard, index), range(len(index.shards))))
    rows, bad = sum(n for n, _, _ in shards), {k: v for _, _, b in shards for k, v in b.items()}
    texts = text_counts([t for _, shard_texts, _ in shards for t in shard_texts], tokenizer, max_text_length)
    return {"records": rows, "images": rows, "unreadable": bad, **texts, "shards": len(shards), "index": index.url}


def scan_blocks(
    blocks: Iterable[tuple[Sequence[Any], Mapping[str, bytes]]], tokenizer: Any, max_text_length: int, workers: int
) -> dict[str, Any]:
    """`scan_split` of a stream, block by block (records and their image bytes), so that no more than a block is
    held: the counts are the blocks' sums."""
    total: dict[str, Any] = {"records": 0, "images": 0, "unreadable": {}, "texts": 0, "empty_texts": 0,
                             "truncated_texts": 0, "blocks": 0}  # fmt: skip
    for records, images in blocks:
        scanned = scan_split(records, tokenizer, max_text_length, workers, images)
        total["unreadable"].update(scanned.pop("unreadable"))
        for key, count in scanned.items():
            total[key] += count
        total["blocks"] += 1
    return total


def scan_corpus(datamodule: Any, stage: str, workers: int) -> dict[str, dict[str, Any]]:
    """The scan of every split `stage` reads, by split name: a streaming recipe's shards, a streamed `datasets`
    source's training stream block by block, else its records."""
    from pixelbert_pl.data.hf_pretraining import HFPretrainDataModule
    from pixelbert_pl.data.hf_streaming import StreamedTask
    from pixelbert_pl.data.streaming import StreamingPretrainDataModule

    tokenizer, max_text_length = datamodule.tokenizer, datamodule.processing.max_text_length
    if isinstance(datamodule, StreamingPretrainDataModule):
        indexes = datamodule.split_indexes(stage)
        return {split: scan_shards(index, tokenizer, max_text_length, workers) for split, index in indexes.items()}
    streamed = isinstance(datamodule, (HFPretrainDataModule, StreamedTask)) and datamodule.hf.source.streaming
    if streamed and stage == "fit":
        # Training reads the stream as it goes (its records are not listed); validation is read whole, as training.
        blocks = datamodule.stream_blocks("train", datamodule.block_size)
        val = datamodule.split_records("validate")["val"]
        return {
            "train": scan_blocks(blocks, tokenizer, max_text_length, workers),
            "val": scan_split(val, tokenizer, max_text_length, workers, datamodule.image_bytes.get("val")),
        }
    splits = datamodule.split_records(stage)
    return {
        split: scan_split(records, tokenizer, max_text_length, workers, datamodule.image_bytes.get(split))
        for split, records in splits.items()
    }


def report(results: dict[str, dict[str, Any]], max_fraction: float) -> int:
    print(f"{'split':<8} {'records':>8} {'images':>8} {'unreadable':>10} {'fraction':>9} {'texts':>8} {'empty':>6} "
          f"{'truncated':>9}")  # fmt: skip
    status = 0
    for split, r in results.items():
        fraction = len(r["unreadable"]) / max(r["images"], 1)
        print(f"{split:<8} {r['records']:>8} {r['images']:>8} {len(r['unreadable']):>10} {fraction:>9.2%} "
              f"{r['texts']:>8} {r['empty_texts']:>6} {r['truncated_texts']:>9}")  # fmt: skip
        if (split == "train" and fraction > max_fraction) or (split != "train" and r["unreadable"]):
            status = 1
    for split, r in results.items():
        if "index" in r:
            print(f"{split}: {r['shards']} shard(s), each readable and as {r['index']} lists it")
        if "blocks" in r:
            print(f"{split}: streamed, read in {r['blocks']} block(s) (an image whose rows straddle two counts twice)")
    for split, r in results.items():
        if not r["unreadable"]:
            continue
        kinds = Counter(reason_kind(reason) for reason in r["unreadable"].values())
        print(f"\n{split}: unreadable images by reason")
        for kind, count in kinds.most_common():
            example = next(p for p, reason in r["unreadable"].items() if reason_kind(reason) == kind)
            print(f"  {count:>6}  {kind:<28} e.g. {example}")
    if status:
        print(f"\nFAIL: training would stop above max_skipped_fraction={max_fraction}, or evaluation would meet an "
              "unreadable image (evaluation never substitutes)")  # fmt: skip
    else:
        print(f"\nOK: unreadable training images (if any) are within max_skipped_fraction={max_fraction}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="pixelbert-check-data", description=__doc__.split("\n\n")[1],
        epilog="Other arguments are --data.init_args.* overrides, as for `pixelbert fit`.",
    )  # fmt: skip
    p.add_argument("--config", required=True, help="a LightningCLI YAML with a data: section")
    p.add_argument("--stage", default="fit", choices=["fit", "validate", "test"], help="which splits to scan")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding images")
    args, overrides = p.parse_known_args(argv)
    try:
        datamodule = build_datamodule(args.config, overrides)
        results = scan_corpus(datamodule, args.stage, args.workers)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"pixelbert-check-data: cannot read the corpus: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return report(results, datamodule.max_skipped_fraction)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
