"""Fixed padded shapes through `pixelbert fit`: on ShapesWorld images cut to many sizes, every batch takes one of the
recipe's `PadShapes` and few text widths, and the compiled model stops compiling after the first epoch (validation
and checkpoints included), so CUDA graphs recorded for those shapes keep replaying."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from experiments.compile_counts import FIXED_SHAPES, fit_args
from PIL import Image

from pixelbert_pl.cli import main
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.processing.shapes import PadShapes

# fit_args's resize with FIXED_SHAPES's long side.
MIXED = ProcessingConfig(image_min_size=64, image_max_size=128, size_divisor=16, pad_long_sides=(96,))


@pytest.fixture
def eager_compile(monkeypatch):
    """`torch.compile` with dynamo's eager backend: the same graphs, guards and recompilations, none of inductor's
    code generation (minutes per shape on this CPU)."""
    compile_ = torch.compile

    def eager(fn, *, mode=None, dynamic=None, **kwargs):  # type: ignore[no-untyped-def]
        return compile_(fn, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", eager)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _fit(root: Path, tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    """The run `experiments/compile_counts.py` makes (3 epochs), recording shapes and graph counts."""
    return main([*fit_args(root, tmp_path), "--trainer.callbacks+=cli_callbacks.RecordShapes", *extra])


def _recorder(cli):  # type: ignore[no-untyped-def]
    from cli_callbacks import RecordShapes

    return next(c for c in cli.trainer.callbacks if isinstance(c, RecordShapes))


def test_compilations_stop_after_the_first_epoch_with_fixed_shapes(
    mixed_shapes_root, tmp_path, eager_compile, monkeypatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    # `pad_long_sides [96]`, texts padded to max_text_length (why: FIXED_SHAPES): every graph an image shape's.
    cli = _fit(mixed_shapes_root, tmp_path, *FIXED_SHAPES)
    record = _recorder(cli)
    shapes = PadShapes.from_config(MIXED)
    assert shapes is not None and record.image_shapes <= set(shapes.shapes)
    assert record.text_widths == {24}
    first, *later = record.graphs
    assert first > 0 and later == [first, first], f"compiled graphs after each epoch: {record.graphs}"
    assert list(tmp_path.rglob("*.ckpt")), "the epochs' checkpoints were written"


def test_without_fixed_shapes_batches_take_many_more_shapes(mixed_shapes_root, tmp_path, monkeypatch) -> None:
    """The contrast: padded to their own maximum, the same epoch's batches meet more image shapes and text widths
    (each a recompilation, or a dynamic graph that CUDA graphs skip); texts padded to 8 take three widths."""
    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    one_epoch = ["--model.init_args.compile", "false", "--trainer.max_epochs", "1"]
    record = _recorder(_fit(mixed_shapes_root, tmp_path / "free", *one_epoch))
    assert len(record.image_shapes) > 6 and len(record.text_widths) > 3
    padded = _recorder(
        _fit(mixed_shapes_root, tmp_path / "padded", *one_epoch, "--data.init_args.text_pad_multiple", "8")
    )
    assert padded.text_widths <= {8, 16, 24} and padded.text_widths


def test_checkpoints_and_exports_carry_the_padded_shapes_to_serving(mixed_shapes_root, tmp_path, monkeypatch) -> None:
    """`pixelbert fit` -> last.ckpt -> `pixelbert-export`: both predictors pad an image to the shape training padded
    it to and run the CNN on the padded image, as training did; the setting changes the scores, so it must travel."""
    from pixelbert_pl import Predictor
    from pixelbert_pl.export import main as export

    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    _fit(mixed_shapes_root, tmp_path, "--model.init_args.compile", "false", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "2", "--data.init_args.pad_long_sides", "[96]")  # fmt: skip
    (last,) = tmp_path.rglob("last.ckpt")  # the CLI's default callbacks also write best.ckpt
    assert export([str(last), str(tmp_path / "exported")]) == 0
    predictors = [Predictor.from_checkpoint(last), Predictor.from_pretrained(tmp_path / "exported")]
    # The 6th image is 112 x 64 (MIXED_SIZES): resized to 64 x 112 and padded to 64 x 128.
    entry = json.loads((mixed_shapes_root / "karpathy.json").read_text())["images"][5]
    image = mixed_shapes_root / "images" / entry["filename"]
    with Image.open(image) as opened:
        assert opened.size == (112, 64)
    scores = []
    for predictor in predictors:
        assert predictor.processor.padding.shapes == PadShapes.from_config(MIXED)
        assert predictor.model.model.visual.padded_trunk
        scores.append(predictor.match([image, image], ["a red circle", "a blue square"]))
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    predictors[0].model.model.visual.padded_trunk = False  # each real size alone: the CNN sees no padding
    cropped = predictors[0].match([image, image], ["a red circle", "a blue square"])
    assert cropped != pytest.approx(scores[0], abs=1e-6)
