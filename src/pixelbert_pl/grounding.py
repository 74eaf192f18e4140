"""The pointing game on ShapesWorld: does a colour or shape word attend to the shape it names?

For every caption of a split and every colour or shape word in it that names exactly one object of the scene (an
ambiguous word, e.g. "red" with two red shapes, is skipped), the word's attention to the pixel tokens is read
(`visualize.text_attention`: one layer or the mean over layers, one head or the mean over heads). A *hit* is when
the most attended token's cell overlaps the named shape's box. The baseline is the expected hit rate of a uniformly
random token of the image: the share of its cells that overlap the box, averaged over the same words. Cells are
`token_stride` pixels wide (16 for the tiny preset on 96 px scenes), so "overlaps" is the finest fair reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import read_karpathy
from pixelbert_pl.data.images import ImageTransform, load_image
from pixelbert_pl.data.shapes import COLOURS, SHAPES, Scene, ShapeObject
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.visualize import text_attention


def _overlaps(box: tuple[int, int, int, int], cell: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    left, top, right, bottom = cell
    return left < x + w and x < right and top < y + h and y < bottom


def _cells(rows: int, cols: int, stride: float, scale: float) -> list[tuple[float, float, float, float]]:
    """Each token cell as (left, top, right, bottom) in the scene's pixel coordinates."""
    side = stride * scale
    return [(c * side, r * side, (c + 1) * side, (r + 1) * side) for r in range(rows) for c in range(cols)]


@torch.no_grad()
def pointing_game(
    model: PixelBertModel,
    root: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    transform: ImageTransform,
    split: str = "val",
    layer: int | None = -1,
    head: int | None = None,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Hit rate of the most attended pixel token against the random-token rate, overall and per word kind."""
    root = Path(root)
    scenes = {s["file_name"]: Scene.from_dict(s) for s in json.loads((root / "scenes.json").read_text())["scenes"]}
    words = {tokenizer.convert_tokens_to_ids(w): ("colour", w) for w in COLOURS}
    words.update({tokenizer.convert_tokens_to_ids(w): ("shape", w) for w in SHAPES})
    stats = {kind: [0, 0.0, 0] for kind in ("colour", "shape")}  # hits, expected random hits, words
    for record in read_karpathy(root / "karpathy.json", root, [split])[:max_images]:
        scene = scenes[Path(record.image_path).name]
        pixels = transform(load_image(record.image_path))[None]
        scale = scene.image_size / pixels.shape[-1]
        for caption in record.captions:
            ids = tokenizer(caption, return_tensors="pt")["input_ids"]
            targets: list[tuple[int, str, ShapeObject]] = []
            for position, token in enumerate(ids[0].tolist()):
                if token in words:
                    kind, word = words[token]
                    named = scene.find(**{kind: word})
                    if len(named) == 1:
                        targets.append((position, kind, named[0]))
            if not targets:
                continue
            maps = text_attention(model, ids, pixels, layer=layer, head=head)
            rows, cols = maps.shape[1:]
            cells = _cells(rows, cols, model.config.token_stride, scale)
            for position, kind, obj in targets:
                inside = [_overlaps(obj.bbox, cell) for cell in cells]
                stats[kind][0] += inside[int(maps[position].flatten().argmax())]
                stats[kind][1] += sum(inside) / len(inside)
                stats[kind][2] += 1
    total = [sum(s[i] for s in stats.values()) for i in range(3)]
    if not total[2]:
        raise ValueError(f"{root}: no unambiguous colour or shape word in the {split} captions")
    return {
        "pointing_hit_rate": total[0] / total[2],
        "random_hit_rate": total[1] / total[2],
        "words": total[2],
        **{f"{kind}_hit_rate": s[0] / max(s[2], 1) for kind, s in stats.items()},
        **{f"{kind}_random_hit_rate": s[1] / max(s[2], 1) for kind, s in stats.items()},
        "layer": "mean" if layer is None else layer,
        "head": "mean" if head is None else head,
    }
