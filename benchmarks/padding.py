"""Padding and shape counts of one training epoch on COCO-like images (`benchmarks.common.COCO_LIKE_SIZES`),
resized as the shipped GPU recipes do (800 / 1333 / 32, `pad_long_sides` [1056, 1184]): no model runs, it takes
seconds on a CPU.

For pre-training batches of 32 images and VQA batches of 16 (one question an image here) it reports, as JSON lines:

- `batch_max`: the old order, a seeded shuffle, each batch padded to its own maximum: padded pixels per real pixel
  and the distinct batch shapes an epoch meets;
- `bucketed`: `BucketedEpochKeyedSampler`'s batches, each padded to its `PadShapes` shape: the same two numbers
  and the share of mixed batches (images of more than one bucket);
- `per_size_cnn`: the old model path, which ran the CNN once per distinct real size of a batch (no CNN padding):
  the distinct CNN input sizes, and input shapes with the batch dimension, an epoch meets;
- `text_padding`: distinct text widths with `text_pad_multiple` 1 and 8 (the recipes') on COCO-like caption
  (VQA-like question) lengths, and the distinct transformer inputs (text width, and in VQA the padded image shape)
  the two paths give.

    python -m benchmarks.padding
    python -m benchmarks.padding --images 5000 --resize 800 1333 --pad-long-sides 1056 1184
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    batch_max_shape,
    bucketed_batches,
    coco_like_sizes,
    coco_like_text_lengths,
    emit,
    random_batches,
    recipe_processing,
    resized_sizes,
)
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.processing.shapes import PadShapes

# The recipes' per-GPU batches in images: pre-training 32 items (`coco_vg_r50.yaml`), VQA 16 questions
# (`vqa_r50.yaml`, counted one image each here: `questions_per_image` is left out).
BATCHES = {"pretrain": 32, "finetune": 16}
TEXTS_PER_IMAGE = {"pretrain": 2, "finetune": 1}  # caption rows per image (`captions_per_image: 2`)
TEXT_MULTIPLE = 8  # the recipes' `text_pad_multiple`


def _pixels(
    batches: Sequence[Sequence[int]], shapes: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """(padded, real) pixels of these batches padded to these shapes."""
    padded = sum(len(batch) * h * w for batch, (h, w) in zip(batches, shapes, strict=True))
    real = sum(sizes[i][0] * sizes[i][1] for batch in batches for i in batch)
    return padded, real


def epoch_batches(
    sizes: Sequence[tuple[int, int]], pad_shapes: PadShapes, batch: int, seed: int = 0, divisor: int = 32
) -> tuple[dict[str, list[list[int]]], dict[str, list[tuple[int, int]]]]:
    """The epoch's batches and the shapes they are padded to, by path: `batch_max` (a seeded shuffle, each batch
    padded to its maximum rounded to `divisor`) and `bucketed` (`BucketedEpochKeyedSampler`, `PadShapes`)."""
    old = random_batches(len(sizes), batch, seed)
    new = bucketed_batches(sizes, pad_shapes, batch, seed)
    return {"batch_max": old, "bucketed": new}, {
        "batch_max": [batch_max_shape((sizes[i] for i in members), divisor) for members in old],
        "bucketed": [pad_shapes.covering(sizes[i] for i in members) for members in new],
    }


def image_padding(
    sizes: Sequence[tuple[int, int]], pad_shapes: PadShapes, batches: dict[str, list[list[int]]],
    shapes: dict[str, list[tuple[int, int]]],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The `batch_max`, `bucketed` and `per_size_cnn` records (without kind and mode) of `epoch_batches`."""
    old, new, new_shapes = batches["batch_max"], batches["bucketed"], shapes["bucketed"]
    batch = len(old[0])
    mixed = sum(len({pad_shapes.bucket(*sizes[i]) for i in members}) > 1 for members in new)  # one bucket each
    records: dict[str, dict[str, Any]] = {}
    for path in ("batch_max", "bucketed"):
        padded, real = _pixels(batches[path], shapes[path], sizes)
        records[path] = {
            "batch": batch, "batches": len(batches[path]), "padded_to_real": round(padded / real, 4),
            "padding_waste": round(padded / real - 1, 4), "distinct_batch_shapes": len(set(shapes[path])),
        }  # fmt: skip
    records["bucketed"].update(
        mixed_batch_share=round(mixed / len(new), 4), pad_shapes=[list(shape) for shape in pad_shapes.shapes],
        shape_counts={f"{h}x{w}": new_shapes.count((h, w)) for h, w in pad_shapes.shapes},
    )  # fmt: skip
    # The old model grouped a batch's images by real size and ran the CNN once per group, on exactly its pixels.
    groups = [[(i, sizes[i]) for i in members] for members in old]
    calls = [{size: sum(1 for _, s in group if s == size) for _, size in group} for group in groups]
    records["per_size_cnn"] = {
        "batch": batch, "batches": len(old), "cnn_padded_to_real": 1.0,
        "distinct_cnn_sizes": len({size for group in calls for size in group}),
        "distinct_cnn_input_shapes": len({(n, *size) for group in calls for size, n in group.items()}),
        "cnn_calls_per_batch_mean": round(sum(len(group) for group in calls) / len(calls), 2),
    }  # fmt: skip
    return records


def text_padding(
    lengths: Sequence[int], per_image: int, image_batches: dict[str, list[list[int]]],
    image_shapes: dict[str, list[tuple[int, int]]], pixel_tokens_in_input: bool,
) -> dict[str, Any]:  # fmt: skip
    """Text widths over the bucketed batches (image `i`'s texts at `lengths[i * per_image:]`) padded to multiples
    of 1 and `TEXT_MULTIPLE`: distinct widths and padded tokens per real token. Then the transformer's distinct
    inputs, old path (batch maximum, multiple 1) against new (bucketed, `TEXT_MULTIPLE`): the text width alone in
    pre-training (100 sampled pixels), with the padded image shape in VQA (every pixel token)."""

    def widths(path: str, multiple: int) -> tuple[list[int], float]:
        out, padded, real = [], 0, 0
        for members in image_batches[path]:
            rows = [lengths[i * per_image + j] for i in members for j in range(per_image)]
            out.append(-(-max(rows) // multiple) * multiple)
            padded, real = padded + out[-1] * len(rows), real + sum(rows)
        return out, round(padded / real, 4)

    record: dict[str, Any] = {"texts_per_image": per_image}
    for multiple in (1, TEXT_MULTIPLE):  # one order for both, so the difference is the multiple's alone
        found, ratio = widths("bucketed", multiple)
        record[f"multiple_{multiple}"] = {"distinct_text_widths": len(set(found)), "text_padded_to_real": ratio}
    inputs = {}
    for path, multiple in (("batch_max", 1), ("bucketed", TEXT_MULTIPLE)):
        found, _ = widths(path, multiple)
        keys = set(zip(found, image_shapes[path], strict=True)) if pixel_tokens_in_input else set(found)
        inputs[path] = len(keys)
    record["distinct_transformer_inputs"] = inputs
    return record


def padding_report(
    images: int = 20_000, processing: ProcessingConfig | None = None, seed: int = 0,
    batches: dict[str, int] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every record for an epoch of `images` COCO-like images under `processing` (default: the recipes')."""
    processing = processing or recipe_processing()
    pad_shapes = PadShapes.from_config(processing)
    if pad_shapes is None:
        raise ValueError(f"processing.pad_long_sides={list(processing.pad_long_sides)}: expected some long sides")
    if images < 1:
        raise ValueError(f"images={images}: expected >= 1")
    sizes = resized_sizes(coco_like_sizes(images, seed), processing)
    divisor = processing.size_divisor
    resize = [processing.image_min_size, processing.image_max_size, divisor]
    common = {"images": images, "seed": seed, "resize": resize, "pad_long_sides": list(processing.pad_long_sides)}
    out = [{"kind": "padding_setup", **common, "distinct_resized_sizes": len(set(sizes))}]
    for mode, batch in (batches or BATCHES).items():
        if mode not in BATCHES or not 1 <= batch <= images:
            raise ValueError(f"{mode} batch={batch}: expected a mode of {list(BATCHES)}, 1 <= batch <= {images}")
        epoch, shapes = epoch_batches(sizes, pad_shapes, batch, seed, divisor)
        for path, record in image_padding(sizes, pad_shapes, epoch, shapes).items():
            out.append({"kind": "padding", "mode": mode, "path": path, **record})
        per_image = TEXTS_PER_IMAGE[mode]
        kind = "caption" if mode == "pretrain" else "question"
        lengths = coco_like_text_lengths(images * per_image, kind, seed, processing.max_text_length)
        text = text_padding(lengths, per_image, epoch, shapes, pixel_tokens_in_input=mode == "finetune")
        out.append({"kind": "text_padding", "mode": mode, "text_kind": kind, **text})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="images in the epoch")
    p.add_argument("--resize", type=int, nargs=2, default=[800, 1333], metavar=("MIN", "MAX"))
    p.add_argument("--pad-long-sides", type=int, nargs="+", default=[1056, 1184])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    processing = recipe_processing(*args.resize, pad_long_sides=args.pad_long_sides)
    for record in padding_report(args.images, processing, args.seed):
        emit(record)


if __name__ == "__main__":
    main()
