"""`compile_backbone`: `torch.compile` a Pixel-BERT backbone in place, with the settings its padded shapes need,
and `mark_cuda_graph_step` for the loops that run it under CUDA graphs."""

from __future__ import annotations

import torch

from pixelbert_pl.models.pixel_bert import PixelBertModel

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Graphs a compiled function may hold with fixed padded shapes: (shapes + fallback) x text lengths x image counts
# of a recipe stay well below it.
FIXED_SHAPE_GRAPHS = 256
Compiled = tuple[str | None, bool]  # (mode, static shapes) of a compiled backbone


def compile_backbone(model: PixelBertModel, mode: str | None = None) -> Compiled:
    """`torch.compile` the CNN trunk and the transformer encoder in place (lazily: at their first call; state_dict
    keys unchanged). The host-side glue between them (grouping images by size, pixel sampling) stays eager, so
    varying batches do not multiply graphs.

    With fixed padded shapes (`ProcessingConfig.pad_long_sides`) the inputs take a bounded set of shapes, so each
    gets a static graph (and, in "reduce-overhead", a CUDA graph) of its own; without, a module meeting a second
    shape compiles one dynamic graph for all, which CUDA graphs skip. Compiling again replaces the compilation."""
    fixed = model.visual.padded_trunk
    if mode in CUDA_GRAPH_MODES:
        # Dynamic graphs would record a CUDA graph per size met (every caption length, every image size):
        # unbounded memory and recording time; they run without CUDA graphs instead. Process-wide.
        from torch._inductor import config as inductor_config

        inductor_config.triton.cudagraph_skip_dynamic_graphs = True
    if fixed:
        # Dynamo's default of 8 graphs per function would send the 9th shape of the set back to eager code.
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, FIXED_SHAPE_GRAPHS)
        dynamo_config.accumulated_recompile_limit = max(
            dynamo_config.accumulated_recompile_limit, 4 * FIXED_SHAPE_GRAPHS
        )
    dynamic = False if fixed else None
    model.visual.trunk.compile(mode=mode, dynamic=dynamic)
    model.compile_transformer(mode, dynamic)
    return mode, fixed


def mark_cuda_graph_step(compiled: Compiled | None) -> None:
    """Under CUDA graphs a batch is a new step: the previous one's graph outputs may be overwritten, which torch
    cannot infer when evaluation or several encoder calls per batch interleave with training."""
    if compiled is not None and compiled[0] in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()
