"""The benchmarks run (tiny preset, CPU, a step or two) and report what they claim; their timings are not tested."""

import json
import math
from pathlib import Path

import pytest
from benchmarks import common
from benchmarks.latency import measure_latency
from benchmarks.loader import measure_loader, measure_pretrain_loaders, write_jpegs
from benchmarks.retrieval_cost import measure_retrieval
from benchmarks.train_throughput import TrainShape, measure_training
from benchmarks.yardstick import DEFAULT_PATH


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
