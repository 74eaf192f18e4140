"""The pointing game's bookkeeping: which words count, which object they name, hits and the random baseline."""

import json
from pathlib import Path

import torch

import pixelbert_pl.harness.grounding as grounding
from pixelbert_pl import create_model, load_tokenizer
from pixelbert_pl.data.captions import read_karpathy
from pixelbert_pl.harness.shapes import COLOURS, SHAPES, Scene
from pixelbert_pl.processing import ImageTransform

CELL = 10  # the oracle's most attended cell, in raster order of the tiny preset's 6 x 6 grid on 96 px scenes


def _expected(root: Path, tokenizer) -> tuple[float, float, int]:
    """Hit rate of an attention that always peaks at CELL, and the random rate, recomputed from scenes.json."""
    scenes = {s["file_name"]: Scene.from_dict(s) for s in json.loads((root / "scenes.json").read_text())["scenes"]}
    hits = random = words = 0
    for record in read_karpathy(root / "karpathy.json", root, ["val"]):
        scene = scenes[Path(record.image_path).name]
        for caption in record.captions:
            for token in tokenizer.tokenize(caption):
                kind = "colour" if token in COLOURS else "shape" if token in SHAPES else None
                named = scene.find(**{kind: token}) if kind else []
                if len(named) != 1:
                    continue
                x, y, w, h = named[0].bbox
                overlap = [(c * 16 < x + w and x < c * 16 + 16 and r * 16 < y + h and y < r * 16 + 16)
                           for r in range(6) for c in range(6)]  # fmt: skip
                hits, random, words = hits + overlap[CELL], random + sum(overlap) / 36, words + 1
    return hits / words, random / words, words


def test_pointing_game_counts_hits_of_an_oracle_attention(shapes_root, monkeypatch) -> None:
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    model = create_model("pixelbert_tiny", vocab_size=len(tokenizer))
    transform = ImageTransform(96, 96, normalize=False)

    def peaked(model, ids, pixels, layers=(-1,), head=None):
        maps = torch.zeros(ids.shape[1], 6, 6)
        maps.view(ids.shape[1], -1)[:, CELL] = 1.0
        return [maps for _ in layers]

    monkeypatch.setattr(grounding, "text_attention_layers", peaked)
    result = grounding.pointing_game(model, shapes_root, tokenizer, transform)
    hit, random, words = _expected(shapes_root, tokenizer)
    assert result["words"] == words > 20
    assert abs(result["pointing_hit_rate"] - hit) < 1e-9 and abs(result["random_hit_rate"] - random) < 1e-9


def test_pointing_game_runs_on_a_real_model(shapes_root) -> None:
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    model = create_model("pixelbert_tiny", vocab_size=len(tokenizer)).eval()
    result = grounding.pointing_game(model, shapes_root, tokenizer, ImageTransform(96, 96, normalize=False), layer=None)
    assert 0 <= result["pointing_hit_rate"] <= 1 and 0 < result["random_hit_rate"] < 1
    assert result["layer"] == "mean" and result["colour_hit_rate"] >= 0


def _val_objects(root: Path) -> int:
    scenes = {s["file_name"]: s for s in json.loads((root / "scenes.json").read_text())["scenes"]}
    records = read_karpathy(root / "karpathy.json", root, ["val"])
    return sum(len(scenes[Path(r.image_path).name]["objects"]) for r in records)


def test_attribute_probe_reads_colour_from_a_random_cnn(shapes_root) -> None:
    # Even a random-init CNN keeps an object's colour in its centre token; the probe must find it.
    model = create_model("pixelbert_tiny", vocab_size=128)
    result = grounding.attribute_probe(model, shapes_root, ImageTransform(96, 96, normalize=False))
    assert result["objects"] == _val_objects(shapes_root) > 10
    assert result["colour_accuracy"] > result["colour_majority"] + 0.3
    assert 0 < result["shape_majority"] < 1
    assert model.training  # the probe restores the mode it found


def test_attribute_probe_finds_nothing_in_constant_tokens(shapes_root, monkeypatch) -> None:
    model = create_model("pixelbert_tiny", vocab_size=128)
    real = model.encode_pixels

    def constant(pixels):
        out = real(pixels)
        out.tokens = torch.ones_like(out.tokens)
        return out

    monkeypatch.setattr(model, "encode_pixels", constant)
    result = grounding.attribute_probe(model, shapes_root, ImageTransform(96, 96, normalize=False))
    for name in ("colour", "shape"):
        assert result[f"{name}_accuracy"] <= result[f"{name}_majority"] + 1e-6


def test_pointing_games_reads_every_layer_from_one_pass_as_separate_games_would(shapes_root) -> None:
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    torch.manual_seed(0)
    model = create_model("pixelbert_tiny", vocab_size=len(tokenizer)).eval()
    transform = ImageTransform(96, 96, normalize=False)
    together = grounding.pointing_games(model, shapes_root, tokenizer, transform, [None, 0, -1], max_images=8)
    apart = [
        grounding.pointing_game(model, shapes_root, tokenizer, transform, layer=x, max_images=8) for x in (None, 0, -1)
    ]
    assert together == apart
    assert [r["layer"] for r in together] == ["mean", 0, -1]
