"""`pixelbert-check-data`: scans a recipe's corpus, reports unreadable files by reason, exits non-zero when a run
would stop (or could not start)."""

from pathlib import Path

import pytest

from pixelbert_pl.check_data import main
from pixelbert_pl.harness.demo import CONFIGS
from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    generate(tmp_path, ShapesWorldConfig(num_images=24, num_nlvr2=4), seed=0)
    return tmp_path


def _check(corpus: Path, *extra: str, config: str = "pretrain_shapes.yaml") -> int:
    return main(["--config", str(CONFIGS / config), "--data.init_args.root", str(corpus), "--workers", "1", *extra])


def _split_images(corpus: Path, split: str) -> list[str]:
    import json

    return [
        str(corpus / image["filepath"] / image["filename"])
        for image in json.loads((corpus / "karpathy.json").read_text())["images"]
        if image["split"] == split
    ]


def test_a_clean_corpus_passes(corpus, capsys) -> None:
    assert _check(corpus) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and out.strip().endswith("max_skipped_fraction=0.01")


def test_unreadable_training_images_are_listed_by_reason_and_judged_against_the_fraction(corpus, capsys) -> None:
    train = _split_images(corpus, "train")
    Path(train[0]).write_text("<!DOCTYPE html><html>404</html>")
    Path(train[1]).write_bytes(Path(train[1]).read_bytes()[:60])
    assert _check(corpus) == 1  # 2 of the training images > 1%
    out = capsys.readouterr().out
    assert "UnidentifiedImageError" in out and Path(train[0]).name in out
    assert _check(corpus, "--data.init_args.max_skipped_fraction", "0.5") == 0


def test_any_unreadable_evaluation_image_fails(corpus, capsys) -> None:
    Path(_split_images(corpus, "val")[0]).write_bytes(b"")
    assert _check(corpus, "--data.init_args.max_skipped_fraction", "0.5") == 1
    assert "val: unreadable images by reason" in capsys.readouterr().out


def test_a_malformed_annotation_file_is_named(corpus, capsys) -> None:
    (corpus / "vqa_questions.json").write_text('{"questions": [{"image_id": 1, ')
    assert _check(corpus, config="vqa_shapes.yaml") == 2
    assert "vqa_questions.json" in capsys.readouterr().err


def test_a_config_without_data_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "model_only.yaml"
    config.write_text("model:\n  class_path: pixelbert_pl.tasks.PretrainTask\n")
    assert main(["--config", str(config)]) == 2
    assert "no `data:` section" in capsys.readouterr().err
