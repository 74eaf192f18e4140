"""Cost of exhaustive retrieval evaluation (every image scored with every caption by the cross-encoder), through
`RetrievalTask`'s own evaluation code: CNN features cached once per image, then `score_matrix` over all texts
in `eval_chunk`-pair forward passes under inference_mode + bf16 autocast.

The cost is linear in image-text pairs, so `--measure-images` images x all 5N captions are timed and the full
N x 5N (and COCO 5K x 25K) is extrapolated from the measured time per pair; `--measure-images N` times it all.
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
from pixelbert_pl.data.retrieval import RetrievalTexts
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
    eval_chunk: int = 1024, compile: bool = False,
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

    def run_batch() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            pixels = task.model.encode_pixels(pixel_values, image_sizes=image_sizes)
            return task.score_matrix(pixels, on_device, lengths, image_sizes)

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
    return {
        "kind": "retrieval_eval", "preset": preset, "size": list(size),
        "pixel_tokens": round(sum(tokens) / len(tokens), 1),
        "padded_batch_pixel_tokens": padded_grid[0] * padded_grid[1],
        "text_tokens_mean": round(float(lengths.float().mean()), 1),
        "images": images, "texts": 5 * images, "measured_images": batches * image_batch, "measured_pairs": pairs,
        "measured_wall_s": round(wall, 2), "pairs_per_s": round(pairs / wall, 1), "eval_chunk": eval_chunk,
        "compile": compile, "warmup_s": round(warm, 1), "peak_gib": peak_gib(device),
        "extrapolated_wall_s": round(per_pair * 5 * images * images, 1),
        "extrapolated_coco5k_wall_s": round(per_pair * 5000 * 25000, 1),
        "score_matrix_shape": list(scores.shape),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="pixelbert_r50")
    p.add_argument("--size", type=int, nargs="+", default=[800, 1344], help="H W, or several: H1 W1 H2 W2 ...")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--measure-images", type=int, default=32)
    p.add_argument("--eval-chunk", type=int, default=1024)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    emit(environment(args.device))
    emit(measure_retrieval(
        args.preset, tuple(args.size), args.device, args.images, args.measure_images,
        eval_chunk=args.eval_chunk, compile=args.compile,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
