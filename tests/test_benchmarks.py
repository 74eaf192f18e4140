"""The benchmarks run (tiny preset, CPU, a step or two) and report what they claim; their timings are not tested."""

import argparse
import json
import math
from pathlib import Path

import pytest
from benchmarks import common
from benchmarks.latency import measure_latency
from benchmarks.loader import measure_coco_like_loader, measure_loader, measure_pretrain_loaders, write_jpegs
from benchmarks.padding import padding_report
from benchmarks.retrieval_cost import measure_retrieval
from benchmarks.train_throughput import TrainShape, measure_training
from benchmarks.yardstick import DEFAULT_PATH, coco_like_plan

from pixelbert_pl.processing.shapes import PadShapes

TINY_PADDING = common.recipe_processing(64, 128, pad_long_sides=(96,))  # shapes of 64 / 96 / 128 at the tiny preset


@pytest.mark.parametrize(
    ("mode", "captions", "frozen"), [("pretrain", 1, 0), ("pretrain", 2, 1), ("finetune", 1, 1), ("finetune", 2, 1)]
)
def test_training_throughput_through_lightning(mode, captions, frozen) -> None:
    shape = TrainShape(
        mode=mode, preset="pixelbert_tiny", size=(64, 96), batch=4, captions_per_image=captions,
        frozen_stages=frozen, precision="32-true",
    )  # fmt: skip
    result = measure_training(shape, "cpu", warmup=1, steps=2)
    assert result["images_per_step"] == 4 // captions
    assert result["samples_per_s"] > 0 and result["step_s"] > 0
    assert 0 < result["tflops_per_step"] < 1


def test_latency_and_retrieval_cost() -> None:
    latency = measure_latency("pixelbert_tiny", (64, 64), "cpu", "fp32", runs=3)
    assert latency["latency_ms_median"] > 0 and latency["batch"] == 1
    retrieval = measure_retrieval("pixelbert_tiny", (64, 64), "cpu", images=6, measure_images=4, image_batch=2)
    assert retrieval["texts"] == 30 and retrieval["measured_pairs"] == 4 * 30
    assert retrieval["score_matrix_shape"] == [2, 30]
    # Linear extrapolation from the measured pairs: the full 6 x 30 costs 6 / 4 of the measured time.
    assert retrieval["extrapolated_wall_s"] == pytest.approx(retrieval["measured_wall_s"] * 6 / 4, abs=0.1)
    # Landscape and portrait in one batch: each pair pays for its image's 4x3 tokens, not the batch's padded 4x4.
    mixed = measure_retrieval("pixelbert_tiny", (64, 48, 48, 64), "cpu", images=2, measure_images=2, image_batch=2)
    assert mixed["pixel_tokens"] == 12 and mixed["padded_batch_pixel_tokens"] == 16
    with pytest.raises(ValueError, match="pairs of height and width"):
        measure_retrieval("pixelbert_tiny", (64, 48, 48), "cpu", images=2, measure_images=2)


def test_two_stage_retrieval_cost_adds_the_exact_stage() -> None:
    r = measure_retrieval(
        "pixelbert_tiny", (64, 64), "cpu", images=6, measure_images=4, image_batch=2, rerank_top_k=2,
        coarse_pool=2,
    )  # fmt: skip
    assert r["coarse_pool"] == 2 and r["measured_pairs"] == 4 * 30
    assert r["exact_pairs_per_image"] == 6 * 2 and r["exact_measured_pairs"] == 4 * 12
    coarse = r["measured_wall_s"] / r["measured_pairs"] * 6 * 30
    assert r["extrapolated_wall_s"] == pytest.approx(coarse + r["exact_per_pair_s"] * 12 * 6, abs=0.1)
    assert r["kept_pixel_tokens_gib"] >= 0


def test_loader_decodes_and_resizes_jpegs(tmp_path) -> None:
    paths = write_jpegs(tmp_path, 6)
    result = measure_loader(paths, workers=0, batch=2)
    assert result["jpeg_size"] == [480, 640] and result["resized_to"][0] == 800
    assert result["images"] == 4 and result["images_per_s"] > 0


def test_emit_appends_json_lines(tmp_path, capsys) -> None:
    out = tmp_path / "results.jsonl"
    common.log_to(out)
    try:
        common.emit({"kind": "x", "value": 1})
    finally:
        common._SINKS.pop().close()
    assert json.loads(out.read_text()) == {"kind": "x", "value": 1}
    assert json.loads(capsys.readouterr().out) == {"kind": "x", "value": 1}


@pytest.mark.skipif(not Path(DEFAULT_PATH).is_file(), reason="the yardstick lives in ../shared beside the checkout")
def test_yardstick_loads_and_runs_a_cpu_step() -> None:
    from benchmarks.yardstick import load_yardstick, run_training, yardstick_args

    module = load_yardstick(DEFAULT_PATH, "cpu")
    result = run_training(
        module, yardstick_args((64, 64), 1, "cpu", warmup=0, steps=1), "finetune", False, False, False
    )
    assert result["samples_per_s"] > 0 and result["mode"] == "finetune"


def test_pretrain_loaders_files_and_shards(tmp_path, minilm_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    paths = write_jpegs(images, 8, size=(120, 160))
    results = measure_pretrain_loaders(tmp_path, paths, minilm_path, workers=0, batch=2, batches=3)
    assert set(results) == {"files", "shards"}
    for result in results.values():
        assert result["images"] == 6  # 3 timed batches of 2 items, after the warm-up one
        assert math.isfinite(result["images_per_s"]) and result["images_per_s"] > 0
        assert result["images_per_s_per_worker"] == result["images_per_s"]
        assert result["short_sides"] == [800]  # 120 x 160 resized as the recipes do: 800 x 1067


def test_coco_like_draws_are_seeded_and_weighted_as_stated() -> None:
    assert common.coco_like_sizes(50, seed=3) == common.coco_like_sizes(50, seed=3)
    assert common.coco_like_sizes(50, seed=3) != common.coco_like_sizes(50, seed=4)
    assert sum(weight for _, weight in common.COCO_LIKE_SIZES) == pytest.approx(1.0)
    # The table's groups: landscape and portrait past 5:4, square and near-square between.
    landscape = sum(weight for (h, w), weight in common.COCO_LIKE_SIZES if w > 1.25 * h)
    portrait = sum(weight for (h, w), weight in common.COCO_LIKE_SIZES if h > 1.25 * w)
    assert landscape == pytest.approx(0.6) and portrait == pytest.approx(0.3)
    captions = common.coco_like_text_lengths(4000, "caption")
    assert 13 < sum(captions) / len(captions) < 15 and min(captions) >= 10 and max(captions) <= 40
    with pytest.raises(ValueError, match="kind='answer'"):
        common.coco_like_text_lengths(3, "answer")


def test_padding_report_bucketed_beats_batch_max() -> None:
    records = padding_report(images=3000)
    setup = records[0]
    shapes = PadShapes.from_config(common.recipe_processing())
    assert setup["kind"] == "padding_setup" and shapes is not None
    by = {(r["mode"], r.get("path")): r for r in records[1:]}
    for mode in ("pretrain", "finetune"):
        old, new = by[mode, "batch_max"], by[mode, "bucketed"]
        assert 1 <= new["padded_to_real"] < old["padded_to_real"]
        assert new["distinct_batch_shapes"] <= len(shapes) and sum(new["shape_counts"].values()) == new["batches"]
        assert 0 <= new["mixed_batch_share"] < 0.1
        assert by[mode, "per_size_cnn"]["distinct_cnn_sizes"] == setup["distinct_resized_sizes"]
        text = by[mode, None]
        assert text["multiple_8"]["distinct_text_widths"] <= text["multiple_1"]["distinct_text_widths"]
        assert text["distinct_transformer_inputs"]["bucketed"] <= text["distinct_transformer_inputs"]["batch_max"]


def test_loader_coco_like_sizes_in_bucketed_padded_batches(tmp_path) -> None:
    sizes = common.coco_like_sizes(8, seed=1)
    paths = write_jpegs(tmp_path, 8, sizes=sizes)
    with pytest.raises(ValueError, match="3 sizes for count=8"):
        write_jpegs(tmp_path, 8, sizes=sizes[:3])
    r = measure_coco_like_loader(paths, workers=0, batch=2, min_size=64, max_size=128, pad_long_sides=(96,))
    shapes = PadShapes.from_config(TINY_PADDING)
    assert shapes is not None and r["kind"] == "loader_coco_like" and r["batches"] == 4
    assert r["images"] == 6  # the first batch warms up
    assert all(tuple(shape) in shapes.shapes for shape in r["batch_shapes"]) and r["padded_to_real"] >= 1
    assert r["host_ms_per_image"] == pytest.approx(
        r["decode_ms_per_image"] + r["resize_ms_per_image"] + r["collate_ms_per_image"], abs=0.02
    )


@pytest.mark.parametrize("mode", ["pretrain", "finetune"])
def test_training_throughput_on_coco_like_batches(mode) -> None:
    shape = TrainShape(
        mode=mode, preset="pixelbert_tiny", batch=4, captions_per_image=2, precision="32-true", size_mix="coco_like",
        resize=(64, 128), pad_long_sides=(96,), mix_batches=2,
    )  # fmt: skip
    result = measure_training(shape, "cpu", warmup=2, steps=2)
    shapes = PadShapes.from_config(TINY_PADDING)
    assert shapes is not None and result["pad_shapes"] == len(shapes)
    assert "compiled_graphs" in result and result["images_per_step"] == 2 and result["samples_per_s"] > 0
    assert 1 <= result["distinct_image_shapes"] <= min(2, len(shapes))
    assert all(tuple(shape) in shapes.shapes for shape in result["image_shapes"])
    assert result["padded_to_real"] >= 1
    with pytest.raises(ValueError, match="steps=3: expected a multiple of mix_batches=2"):
        measure_training(shape, "cpu", warmup=0, steps=3)
    with pytest.raises(ValueError, match="size_mix='imagenet'"):
        TrainShape(size_mix="imagenet")


def test_yardstick_coco_like_plan_pads_random_batches_to_their_maximum() -> None:
    plan = coco_like_plan("pretrain", batch=4, batches=6)
    assert sum(entry["batches"] for entry in plan) == 6
    assert len({tuple(entry["size"]) for entry in plan}) == len(plan)
    for entry in plan:
        assert all(side % 32 == 0 for side in entry["size"]) and max(entry["size"]) <= 1312
        assert entry["padded"] >= entry["real"] and 10 <= entry["text_len"] <= 40


@pytest.mark.skipif(not Path(DEFAULT_PATH).is_file(), reason="the yardstick lives in ../shared beside the checkout")
def test_yardstick_coco_like_runs_one_shape_a_batch(capsys) -> None:
    from benchmarks.yardstick import load_yardstick, run_coco_like, yardstick_args

    module = load_yardstick(DEFAULT_PATH, "cpu")
    plan = coco_like_plan("finetune", batch=1, batches=1, resize=(64, 128))
    args = yardstick_args((64, 64), 1, "cpu", warmup=0, steps=1)
    result = run_coco_like(module, args, "finetune", tuned=False, compiled=False, plan=plan, name="y")
    assert result["kind"] == "yardstick_coco_like" and result["distinct_shapes"] == 1 and result["batches"] == 1
    assert result["samples_per_s"] > 0 and result["shapes"][0]["size"] == plan[0]["size"]
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["name"] == f"y_finetune_{plan[0]['size'][0]}x{plan[0]['size'][1]}"


def test_suite_coco_like_figures_in_pairs_within_the_budget(capsys) -> None:
    from benchmarks import suite

    args = argparse.Namespace(
        coco_like_batches=4, coco_like_rows=[64, 16], preset="pixelbert_r50", yardstick="y.py", warmup=3, steps=10,
        budget_s=0.0, figure_s=90.0,
    )  # fmt: skip
    figures = suite.coco_like_figures(args)
    assert [name for name, _ in figures] == [
        "ours_pretrain_coco_like", "yardstick_coco_like_compiled", "ours_finetune_coco_like",
        "yardstick_coco_like_compiled",
    ]  # fmt: skip
    ours = figures[0][1]
    assert ours[ours.index("--batch") + 1] == "64" and ours[ours.index("--steps") + 1] == "8"
    assert "reduce-overhead" in ours and figures[3][1][-3:] == ["finetune", "--batch", "16"]
    suite.run_budgeted(figures, args, start=0.0)  # no budget left: every figure skipped, nothing started
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["error"].startswith("skipped") for line in lines] == [True] * 4
