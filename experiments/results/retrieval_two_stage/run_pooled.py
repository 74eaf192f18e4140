"""Two-stage retrieval (2x2-pooled coarse tokens) against exhaustive on the demo's fine-tuned tiny model, ShapesWorld
val and test (200 images x 1,000 captions each); JSON lines on stdout.

    python experiments/results/retrieval_two_stage/run_pooled.py OUT demo-output/shapesworld  # make_checkpoint's OUT

The exact stage's scores are the exhaustive matrix's entries (tests/tasks/test_retrieval_task.py checks that the
task's exact stage gives those), so one coarse matrix serves every k; one end-to-end run through RetrievalTask's own
evaluation checks that.
"""

import json
import sys
import time
from types import SimpleNamespace

import torch

from pixelbert_pl.harness.datamodules import ShapesWorldRetrievalDataModule
from pixelbert_pl.metrics import rerank_candidates, rerank_scores, retrieval_recall
from pixelbert_pl.tasks import RetrievalTask

out, root = sys.argv[1:3]
task = RetrievalTask.load_from_checkpoint(f"{out}/retrieval.ckpt", map_location="cpu").eval()
data = ShapesWorldRetrievalDataModule(
    root=root, num_images=2000, image_size=64, image_min_size=64, image_max_size=64, batch_size=16, num_workers=0,
    max_eval_images=None, seed=0,
)  # fmt: skip
data.setup("validate")
data.setup("test")
task.trainer = SimpleNamespace(datamodule=data, sanity_checking=False)  # what the evaluator reads


def loader(stage: str):
    return data.val_dataloader() if stage == "val" else data.test_dataloader()


def rounded(result: dict) -> dict:
    return {k: round(v, 2) for k, v in result.items()}


def matrix(stage: str, pool: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    texts = getattr(data, f"{stage}_texts")
    lengths, rows = texts.attention_mask.sum(1), []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader(stage):
            pixels = task.model.encode_pixels(batch.pixel_values, batch.pixel_mask, batch.image_sizes)
            rows.append(task.net.score_matrix(pixels, texts, lengths, batch.image_sizes, pool))
    return torch.cat(rows).float(), texts.text_to_image, time.perf_counter() - start


def end_to_end(stage: str, k: int) -> dict:
    task.evaluator.rerank_top_k, task.evaluator.coarse_pool = k, 2
    task.on_validation_epoch_start()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader(stage):
            (task.validation_step if stage == "val" else task.test_step)(batch, 0)
        result = task.evaluator.compute(stage)
    wall = round(time.perf_counter() - start, 1)
    return {"stage": stage, "protocol": "two_stage_end_to_end", "coarse_pool": 2, "rerank_top_k": k, "wall_s": wall,
            **rounded(result)}  # fmt: skip


print(json.dumps(end_to_end("val", 20)), flush=True)
for stage in ("val", "test"):
    exact, t2i, wall = matrix(stage, 1)
    line = {"stage": stage, "protocol": "exhaustive", "wall_s": round(wall, 1)}
    print(json.dumps({**line, **rounded(retrieval_recall(exact, t2i))}), flush=True)
    coarse, _, wall = matrix(stage, 2)
    line = {"stage": stage, "protocol": "coarse_only", "coarse_pool": 2, "wall_s": round(wall, 1)}
    print(json.dumps({**line, **rounded(retrieval_recall(coarse, t2i))}), flush=True)
    for k in (5, 10, 20, 50):
        chosen = rerank_candidates(coarse, k)
        rows, cols = chosen.nonzero(as_tuple=True)
        key = rerank_scores(coarse, rows, cols, exact[rows, cols])
        line = {"stage": stage, "protocol": "two_stage", "coarse_pool": 2, "rerank_top_k": k,
                "rescored_fraction": round(chosen.float().mean().item(), 4)}  # fmt: skip
        print(json.dumps({**line, **rounded(retrieval_recall(key, t2i))}), flush=True)
