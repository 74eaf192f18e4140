"""Cost of exhaustive retrieval evaluation (every image scored with every caption by the cross-encoder), through
`RetrievalTask`'s own evaluation code: CNN features cached once per image, then `score_matrix` over all texts
in `eval_chunk`-pair forward passes under inference_mode + bf16 autocast.

The cost is linear in image-text pairs, so `--measure-images` images x all 5N captions are timed and the full
N x 5N (and COCO 5K x 25K) is extrapolated from the measured time per pair; `--measure-images N` times it all.

`--rerank-top-k k` times the two-stage evaluation (`RetrievalTask(rerank_top_k=k)`) instead: the coarse stage
(every pair, pixel tokens averaged over `--coarse-pool` x `--coarse-pool` blocks) as above, and the exact stage on
6k random texts per measured image, the most it scores per image on average (each image's k best texts, plus each
of the 5N texts' k best images spread over N images); the extrapolation adds the two.
`--size` may name several sizes (H W H W ...): the images take them in turn, so each batch mixes them as a real
split's do (Flickr30K and COCO resized to 800 on the short side: 800 x 1067 landscape, 1067 x 800 portrait).

    python -m benchmarks.retrieval_cost --images 1000 --measure-images 32 --size 800 1344     # on a GPU
    python -m benchmarks.retrieval_cost --images 1000 --measure-images 32 --size 800 1067 1067 800
    python -m benchmarks.retrieval_cost --device cpu --preset pixelbert_tiny --size 96 96 --images 8
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks.common import emit, environment, peak_gib, reset_peak, synchronize
from pixelbert_pl.processing.batches import RetrievalTexts
from pixelbert_pl.tasks import RetrievalTask


def synthetic_texts(count: int, vocab: int, max_length: int = 40, seed: int = 0) -> RetrievalTexts:
    """`count` captions of 8-30 WordPieces (Flickr30K / COCO captions are 10-15 words) in [CLS] ... [SEP] rows."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 31, (count,), generator=g) + 2
    ids = torch.randint(min(1000, vocab // 2), min(30000, vocab), (count, max_length), generator=g)
    mask = torch.arange(max_length)[None] < lengths[:, None]
    return RetrievalTexts(ids * mask, mask, torch.arange(count) // 5)


def measure_retrieval(
    preset: str, size: tuple[int, ...], device: str, images: int, measure_images: int, image_batch: int = 8,
    eval_chunk: int = 1024, compile: bool = False, rerank_top_k: int | None = None, coarse_pool: int = 2,
) -> dict[str, Any]:  # fmt: skip
    """`size` is (H, W) or several sizes flattened (H1, W1, H2, W2, ...) that the batch's images take in turn."""
    if len(size) % 2 or not size:
        raise ValueError(f"size={list(size)}: expected pairs of height and width")
    sizes = [(size[i], size[i + 1]) for i in range(0, len(size), 2)]
    image_sizes = [sizes[i % len(sizes)] for i in range(image_batch)]
    padded = (max(h for h, _ in image_sizes), max(w for _, w in image_sizes))
    torch.manual_seed(0)
    task = RetrievalTask(preset=preset, eval_chunk=eval_chunk, channels_last=device == "cuda")
    if compile:
        task.compile_model()
    task.to(device).eval()
    texts = synthetic_texts(5 * images, task.model.config.vocab_size)
    lengths = texts.attention_mask.sum(dim=1)
    on_device = RetrievalTexts(texts.input_ids.to(device), texts.attention_mask.to(device), texts.text_to_image)
    amp = device == "cuda"
    measure_images = min(measure_images, images)
    batches = -(-measure_images // image_batch)
    pixel_values = torch.randn(image_batch, 3, *padded, device=device)
    grids = [task.model.visual.token_grid(h, w) for h, w in image_sizes]

    coarse = 1 if rerank_top_k is None else coarse_pool

    def run_batch() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            pixels = task.model.encode_pixels(pixel_values, image_sizes=image_sizes)
            return task.net.score_matrix(pixels, on_device, lengths, image_sizes, coarse)

    warm = time.perf_counter()
    run_batch()  # warm-up: cuDNN / cuBLAS heuristics, and the compilation when --compile
    synchronize(device)
    warm = time.perf_counter() - warm
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(batches):
        scores = run_batch()
    synchronize(device)
    wall = time.perf_counter() - start
    pairs = batches * image_batch * 5 * images
    per_pair = wall / pairs
    tokens = [h * w for h, w in grids]
    padded_grid = task.model.visual.token_grid(*padded)
    exact = {} if rerank_top_k is None else measure_exact_stage(
        task, pixel_values, image_sizes, on_device, lengths, 6 * rerank_top_k, batches, device, images
    )  # fmt: skip
    exact_s = exact.get("exact_per_pair_s", 0.0) * exact.get("exact_pairs_per_image", 0)  # per image
    return {
        "kind": "retrieval_eval", "preset": preset, "size": list(size),
        "pixel_tokens": round(sum(tokens) / len(tokens), 1),
        "padded_batch_pixel_tokens": padded_grid[0] * padded_grid[1],
        "text_tokens_mean": round(float(lengths.float().mean()), 1),
        "images": images, "texts": 5 * images, "measured_images": batches * image_batch, "measured_pairs": pairs,
        "measured_wall_s": round(wall, 2), "pairs_per_s": round(pairs / wall, 1), "eval_chunk": eval_chunk,
        "compile": compile, "warmup_s": round(warm, 1), "peak_gib": peak_gib(device),
        "rerank_top_k": rerank_top_k, "coarse_pool": coarse,
        "extrapolated_wall_s": round(per_pair * 5 * images * images + exact_s * images, 1),
        "extrapolated_coco5k_wall_s": round(per_pair * 5000 * 25000 + exact_s * 5000, 1),
        "score_matrix_shape": list(scores.shape), **exact,
    }  # fmt: skip


def measure_exact_stage(
    task: RetrievalTask, pixel_values: torch.Tensor, image_sizes: list[tuple[int, int]], texts: RetrievalTexts,
    lengths: torch.Tensor, per_image: int, batches: int, device: str, images: int,
) -> dict[str, Any]:  # fmt: skip
    """Seconds per pair of the exact stage: `per_image` random texts per image scored with all its tokens (the CNN
    is not timed: the evaluation keeps each image's tokens from the coarse stage), and the memory those kept tokens
    take for `images` images."""
    n, num_texts = len(image_sizes), texts.input_ids.shape[0]
    g = torch.Generator().manual_seed(1)
    per_image = min(per_image, num_texts)
    picks = [
        torch.stack([torch.randperm(num_texts, generator=g)[:per_image] for _ in range(n)]) for _ in range(batches)
    ]
    amp = device == "cuda"
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
        pixels = task.model.encode_pixels(pixel_values, image_sizes=image_sizes)
        rows = torch.arange(n).repeat_interleave(per_image)
        task.net.score_pairs(pixels, texts, rows, picks[0].flatten(), lengths, image_sizes)  # warm-up (new shapes)
        synchronize(device)
        start = time.perf_counter()
        for chosen in picks:
            task.net.score_pairs(pixels, texts, rows, chosen.flatten(), lengths, image_sizes)
        synchronize(device)
    wall = time.perf_counter() - start
    pairs = batches * n * per_image
    kept = pixels.tokens[0].numel() * pixels.tokens.element_size() * images / 2**30
    return {"exact_pairs_per_image": per_image, "exact_measured_pairs": pairs, "exact_measured_wall_s": round(wall, 2),
            "exact_per_pair_s": wall / pairs, "kept_pixel_tokens_gib": round(kept, 2)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="pixelbert_r50")
    p.add_argument("--size", type=int, nargs="+", default=[800, 1344], help="H W, or several: H1 W1 H2 W2 ...")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--measure-images", type=int, default=32)
    p.add_argument("--eval-chunk", type=int, default=1024)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--rerank-top-k", type=int, default=None, help="time the two-stage evaluation with this k")
    p.add_argument("--coarse-pool", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    emit(environment(args.device))
    emit(measure_retrieval(
        args.preset, tuple(args.size), args.device, args.images, args.measure_images,
        eval_chunk=args.eval_chunk, compile=args.compile, rerank_top_k=args.rerank_top_k,
        coarse_pool=args.coarse_pool,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
