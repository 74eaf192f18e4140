"""`CUDAGraphRunner`: replay one captured call of a function on inputs of fixed shapes.

At batch 1 a Pixel-BERT forward is a few hundred small kernels, and launching them from Python costs more than
running them; a CUDA graph launches them all at once. This is the latency path for serving one image-question
pair at a time: capture once per input shape, then copy each new input into the captured buffers and replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class CUDAGraphRunner:
    """`runner = CUDAGraphRunner(fn, *example_inputs)`; `runner(*inputs)` returns what `fn(*inputs)` would.

    `fn` must take and return tensors, run only device work (no `.item()`, no host-to-device copies) and see
    inputs of the captured shapes; the returned tensors are the graph's own buffers, overwritten by the next call,
    so clone what you keep. Run under `torch.inference_mode()` / autocast as you would run `fn`.
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
        if len(inputs) != len(self.inputs):
            raise ValueError(f"CUDAGraphRunner: captured with {len(self.inputs)} inputs, called with {len(inputs)}")
        for static, new in zip(self.inputs, inputs, strict=True):
            if new.shape != static.shape:
                raise ValueError(f"CUDAGraphRunner: input of shape {tuple(new.shape)}, captured {tuple(static.shape)}")
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs
