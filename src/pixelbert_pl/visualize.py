"""Where a word looks: attention from one text token to the pixel tokens, as a heat-map over the image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from pixelbert_pl.models.pixel_bert import PixelBertModel


@torch.no_grad()
def text_attention(
    model: PixelBertModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None = None,
    layer: int | None = -1,
    head: int | None = None,
) -> torch.Tensor:
    """(t, rows, cols): the attention of every text position to each pixel token of one image, one forward pass.

    `layer`: which layer (negative counts from the last), or None for the mean over layers; `head`: which head, or
    None for the mean over heads. Cells the image does not cover are 0. One caption and one image (batch 1).
    """
    return text_attention_layers(model, input_ids, pixel_values, pixel_mask, [layer], head)[0]


def text_attention_layers(
    model: PixelBertModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None = None,
    layers: Sequence[int | None] = (-1,),
    head: int | None = None,
) -> list[torch.Tensor]:
    """`text_attention` for each of `layers` (an int or None each, as there), all from one forward pass."""
    if input_ids.shape[0] != 1 or pixel_values.shape[0] != 1:
        raise ValueError(f"takes one caption and one image, got {input_ids.shape[0]} and {pixel_values.shape[0]}")
    was_training = model.training
    model.eval()
    out = model(input_ids, pixel_values=pixel_values, pixel_mask=pixel_mask, output_attentions=True)
    model.train(was_training)
    assert out.attentions is not None and out.pixel_token_mask is not None and out.pixel_token_index is not None
    assert out.pixel_grid is not None
    t = input_ids.shape[1]
    rows, cols = out.pixel_grid
    keep = out.pixel_token_mask[0].cpu()
    index = out.pixel_token_index[0].cpu()
    grids = []
    for layer in layers:
        maps = torch.stack(out.attentions) if layer is None else out.attentions[layer][None]  # (layers, 1, h, L, L)
        maps = maps[:, 0] if head is None else maps[:, 0, head : head + 1]
        weights = maps.mean(dim=(0, 1))[:t, t:].float().cpu() * keep  # (t, p) over this image's pixel tokens
        grid = torch.zeros(t, rows * cols)
        grid[:, index] = weights
        grids.append(grid.view(t, rows, cols))
    return grids


def word_attention(
    model: PixelBertModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None = None,
    word_position: int = 1,
    layer: int | None = -1,
    head: int | None = None,
) -> torch.Tensor:
    """(rows, cols) attention of text position `word_position` to each pixel token (see `text_attention`)."""
    return text_attention(model, input_ids, pixel_values, pixel_mask, layer, head)[word_position]


def overlay(image: Image.Image, heat: torch.Tensor, floor: float = 0.15) -> Image.Image:
    """The image dimmed where `heat` (any non-negative grid, scaled to its maximum) is low: brightness goes from
    `floor` at no attention to 1 at the most attended cell. Dimming, not a colour map, so that the shapes' own
    colours stay readable."""
    heat = heat / heat.max().clamp(min=1e-12)
    cells = Image.fromarray(((floor + (1 - floor) * heat.numpy()) * 255).astype("uint8"), mode="L")
    gain = cells.resize(image.size, Image.Resampling.BILINEAR)
    black = Image.new("RGB", image.size)
    return Image.composite(image.convert("RGB"), black, gain)
