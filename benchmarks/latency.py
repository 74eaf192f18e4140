"""Batch-1 VQA inference latency at the paper's resolution: one image, one question, every pixel token, answer
logits out; median of `--runs` timed calls after warm-up, the device synchronised around each (as the
yardstick's `latency`).

    python -m benchmarks.latency --size 800 1344                  # on a GPU
    python -m benchmarks.latency --device cpu --preset pixelbert_tiny --size 96 96
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import emit, environment, median_ms
from pixelbert_pl.tasks import VQATask

NUM_ANSWERS = 3129


class CUDAGraphRunner:
    """`runner = CUDAGraphRunner(fn, *example_inputs)`; `runner(*inputs)` returns what `fn(*inputs)` would, by
    replaying one captured call: at batch 1 a forward is a few hundred small kernels, and launching them from Python
    costs more than running them.

    `fn` must take and return CUDA tensors, run only device work (no `.item()`, no host-to-device copies) and see
    inputs of the captured shapes; the returned tensors are the graph's own buffers, overwritten by the next call.
    """

    def __init__(self, fn: Callable[..., Any], *example_inputs: torch.Tensor, warmup: int = 3) -> None:
        if not all(isinstance(x, torch.Tensor) and x.is_cuda for x in example_inputs):
            raise ValueError("CUDAGraphRunner: every input must be a CUDA tensor")
        self.inputs = [x.clone() for x in example_inputs]
        # Warm-up on a side stream, as CUDA graph capture requires (lazy inits, cuBLAS workspaces, autotuning).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        for static, new in zip(self.inputs, inputs, strict=True):
            if new.shape != static.shape:
                raise ValueError(f"CUDAGraphRunner: input of shape {tuple(new.shape)}, captured {tuple(static.shape)}")
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs


def vqa_model(preset: str, device: str, channels_last: bool) -> VQATask:
    task = VQATask(answer_vocab=[f"answer{i}" for i in range(NUM_ANSWERS)], preset=preset, channels_last=channels_last)
    return task.to(device).eval()


def measure_latency(
    preset: str, size: tuple[int, int], device: str, variant: str, text_len: int = 32, runs: int = 30
) -> dict[str, Any]:
    """variant: "fp32" (eager, float32), "bf16" (eager, bf16 autocast, channels_last), "bf16_cuda_graph"."""
    torch.manual_seed(0)
    tuned = variant != "fp32"
    task = vqa_model(preset, device, channels_last=tuned)
    image = torch.randn(1, 3, *size, device=device)
    vocab = task.model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(30000, vocab), (1, text_len), device=device)

    def answer_logits(pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=tuned):
            return task.net.vqa_head(task.model(input_ids, pixel_values=pixel_values).cls_output)

    call: Callable[[], Any]
    with torch.inference_mode():
        if variant == "bf16_cuda_graph":
            runner = CUDAGraphRunner(answer_logits, image, ids)
            eager = answer_logits(image, ids).float()
            graphed = runner(image, ids).float()
            torch.testing.assert_close(graphed, eager, rtol=0, atol=0)  # the replay computes what eager computes
            call = lambda: runner(image, ids)  # noqa: E731
        else:
            call = lambda: answer_logits(image, ids)  # noqa: E731
        ms = median_ms(call, device, runs=runs)
    return {
        "kind": "latency", "task": "vqa", "preset": preset, "variant": variant, "size": list(size),
        "text_len": text_len, "batch": 1, "latency_ms_median": ms, "runs": runs,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="pixelbert_r50")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1344])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    emit(environment(args.device))
    variants = ["fp32", "bf16"] + (["bf16_cuda_graph"] if args.device == "cuda" else [])
    for variant in variants:
        emit(measure_latency(args.preset, tuple(args.size), args.device, variant, runs=args.runs))


if __name__ == "__main__":
    main()
