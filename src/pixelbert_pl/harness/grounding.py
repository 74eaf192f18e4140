"""Grounding diagnostics on ShapesWorld: the pointing game (does a colour or shape word attend to the shape it
names?) and a linear probe of what the pixel tokens themselves encode (`attribute_probe`).

The pointing game: for every caption of a split and every colour or shape word in it that names exactly one object
of the scene (an ambiguous word, e.g. "red" with two red shapes, is skipped), the word's attention to the pixel
tokens is read (`visualize.text_attention_layers`: one layer or the mean over layers, one head or the mean over
heads; every layer asked for comes from one forward pass per caption). A *hit* is when the most attended token's
cell overlaps the named shape's box. The baseline is the expected hit rate of a uniformly random token of the image:
the share of its cells that overlap the box, averaged over the same words.
Cells are `token_stride` pixels wide (16 for the tiny preset on 96 px scenes), so "overlaps" is the finest fair
reading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import read_karpathy
from pixelbert_pl.harness.shapes import COLOURS, SHAPES, Scene, ShapeObject
from pixelbert_pl.models.pixel_bert import PixelBertModel
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.images import load_image
from pixelbert_pl.visualize import text_attention_layers


def _overlaps(box: tuple[int, int, int, int], cell: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    left, top, right, bottom = cell
    return left < x + w and x < right and top < y + h and y < bottom


def _cells(rows: int, cols: int, stride: float, scale: float) -> list[tuple[float, float, float, float]]:
    """Each token cell as (left, top, right, bottom) in the scene's pixel coordinates."""
    side = stride * scale
    return [(c * side, r * side, (c + 1) * side, (r + 1) * side) for r in range(rows) for c in range(cols)]


def _read_scenes(root: Path) -> dict[str, Scene]:
    """ShapesWorld's ground truth, by image file name."""
    return {s["file_name"]: Scene.from_dict(s) for s in json.loads((root / "scenes.json").read_text())["scenes"]}


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
    return pointing_games(model, root, tokenizer, transform, [layer], split, head, max_images)[0]


@torch.no_grad()
def pointing_games(
    model: PixelBertModel,
    root: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    transform: ImageTransform,
    layers: Sequence[int | None],
    split: str = "val",
    head: int | None = None,
    max_images: int | None = None,
) -> list[dict[str, Any]]:
    """`pointing_game` for each of `layers` (an int or None for the mean), one forward pass per caption for all."""
    root = Path(root)
    scenes = _read_scenes(root)
    words = {tokenizer.convert_tokens_to_ids(w): ("colour", w) for w in COLOURS}
    words.update({tokenizer.convert_tokens_to_ids(w): ("shape", w) for w in SHAPES})
    # Per layer and word kind: hits, expected random hits, words.
    stats = [{kind: [0, 0.0, 0] for kind in ("colour", "shape")} for _ in layers]
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
            all_maps = text_attention_layers(model, ids, pixels, layers=layers, head=head)
            rows, cols = all_maps[0].shape[1:]
            cells = _cells(rows, cols, model.config.token_stride, scale)
            for position, kind, obj in targets:
                inside = [_overlaps(obj.bbox, cell) for cell in cells]
                for maps, layer_stats in zip(all_maps, stats, strict=True):
                    layer_stats[kind][0] += inside[int(maps[position].flatten().argmax())]
                    layer_stats[kind][1] += sum(inside) / len(inside)
                    layer_stats[kind][2] += 1
    return [_rates(layer_stats, layer, head, root, split) for layer, layer_stats in zip(layers, stats, strict=True)]


def _rates(stats: dict[str, list[Any]], layer: int | None, head: int | None, root: Path, split: str) -> dict[str, Any]:
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


@torch.no_grad()
def _centre_tokens(
    model: PixelBertModel, root: Path, transform: ImageTransform, split: str, max_images: int | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The pixel token at each object's centre, (objects, d), with each object's colour and shape index."""
    scenes = _read_scenes(root)
    labels: dict[str, list[int]]  # each object's colour and shape index
    tokens, labels = [], {"colour": [], "shape": []}
    for record in read_karpathy(root / "karpathy.json", root, [split])[:max_images]:
        scene = scenes[Path(record.image_path).name]
        pixels = transform(load_image(record.image_path))[None]
        out = model.encode_pixels(pixels)
        cell = model.config.token_stride * scene.image_size / pixels.shape[-1]  # a token's side in scene pixels
        for obj in scene.objects:
            x, y, w, h = obj.bbox
            row, col = min(int((y + h / 2) // cell), out.grid[0] - 1), min(int((x + w / 2) // cell), out.grid[1] - 1)
            tokens.append(out.tokens[0, row * out.grid[1] + col])
            labels["colour"].append(COLOURS.index(obj.colour))
            labels["shape"].append(SHAPES.index(obj.shape))
    if not tokens:
        raise ValueError(f"{root}: no object in the {split} split of karpathy.json")
    return torch.stack(tokens), {k: torch.tensor(v) for k, v in labels.items()}


def attribute_probe(
    model: PixelBertModel,
    root: str | Path,
    transform: ImageTransform,
    train_split: str = "train",
    eval_split: str = "val",
    max_images: int | None = 1000,
    steps: int = 300,
    seed: int = 0,
) -> dict[str, float]:
    """Can an object's colour and shape be read linearly from the pixel token at its centre?

    A logistic regression per attribute is fitted on `train_split`'s objects (features standardised with their
    statistics) and scored on `eval_split`'s, beside the majority-class rate of the evaluation objects. It asks the
    CNN, not the transformer: when a word fails to ground, this says whether the information was in the tokens.
    """
    root = Path(root)
    was_training = model.training
    model.eval()
    train_x, train_y = _centre_tokens(model, root, transform, train_split, max_images)
    eval_x, eval_y = _centre_tokens(model, root, transform, eval_split, max_images)
    model.train(was_training)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    result: dict[str, float] = {"objects": float(len(eval_x))}
    for name, classes in (("colour", len(COLOURS)), ("shape", len(SHAPES))):
        generator = torch.Generator().manual_seed(seed)
        weight = (torch.randn(train_x.shape[1], classes, generator=generator) * 0.01).requires_grad_()
        bias = torch.zeros(classes, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=1e-2, weight_decay=1e-4)
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y[name]).backward()
            optimizer.step()
        predicted = (eval_x @ weight + bias).detach().argmax(1)
        result[f"{name}_accuracy"] = float((predicted == eval_y[name]).float().mean())
        result[f"{name}_majority"] = float(eval_y[name].bincount(minlength=classes).max() / len(eval_y[name]))
    return result
