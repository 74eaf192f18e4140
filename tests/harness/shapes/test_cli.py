"""`pixelbert-shapes`: the corpus from the command line, and the one-shape corpus of the demo's warm-up."""

from __future__ import annotations

import json

import pytest

from pixelbert_pl.harness.shapes.cli import main

from .corpus_files import load


def test_cli(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--seed", "0", "--num-images", "40", "--num-nlvr2", "6", "--holdout", "red triangle"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40 and sum(summary["splits"].values()) == 40
    assert len(list((out / "images").glob("shapes_*.png"))) == 40
    assert load(out, "scenes.json")["config"]["heldout"] == ["red triangle"]
    with pytest.raises(ValueError, match="colour shape"):
        main(["--out", str(out), "--holdout", "red banana"])


def test_one_shape_corpus_shares_the_vocabulary(corpus, tmp_path, capsys) -> None:
    """The demo's warm-up corpus: one shape per scene, and the full corpus's vocab.txt byte for byte, so that a
    checkpoint trained on it fits the full corpus's tokenizer."""
    out = tmp_path / "one"
    assert main(["--out", str(out), "--num-images", "30", "--num-nlvr2", "6", "--max-objects", "1"]) == 0
    capsys.readouterr()
    assert {len(s["objects"]) for s in load(out, "scenes.json")["scenes"]} == {1}
    assert (out / "vocab.txt").read_bytes() == (corpus / "vocab.txt").read_bytes()
    with pytest.raises(ValueError, match="max_objects"):
        main(["--out", str(tmp_path / "bad"), "--max-objects", "5"])
