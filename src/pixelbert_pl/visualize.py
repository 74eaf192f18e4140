"""Where a word looks: attention from one text token to the pixel tokens, as a heat-map over the image."""

from __future__ import annotations

import torch
from PIL import Image

from pixelbert_pl.models.pixel_bert import PixelBertModel


@torch.no_grad()
def word_attention(
    model: PixelBertModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None = None,
    word_position: int = 1,
    layer: int = -1,
) -> torch.Tensor:
    """(rows, cols) attention of text position `word_position` to each pixel token of one image, averaged over
    heads, at `layer`; cells the image does not cover are 0. Inputs are one image and one caption (batch 1)."""
    if input_ids.shape[0] != 1 or pixel_values.shape[0] != 1:
        raise ValueError(
            f"word_attention takes one caption and one image, got {input_ids.shape[0]} and {pixel_values.shape[0]}"
        )
    was_training = model.training
    model.eval()
    out = model(input_ids, pixel_values=pixel_values, pixel_mask=pixel_mask, output_attentions=True)
    model.train(was_training)
    t = input_ids.shape[1]
    weights = out.attentions[layer][0, :, word_position, t:].mean(0)  # (p,) over this image's pixel tokens
    rows, cols = out.pixel_grid
    grid = torch.zeros(rows * cols)
    grid[out.pixel_token_index[0]] = weights * out.pixel_token_mask[0]
    return grid.view(rows, cols)


def overlay(image: Image.Image, heat: torch.Tensor, floor: float = 0.15) -> Image.Image:
    """The image dimmed where `heat` (any non-negative grid, scaled to its maximum) is low: brightness goes from
    `floor` at no attention to 1 at the most attended cell. Dimming, not a colour map, so that the shapes' own
    colours stay readable."""
    heat = heat / heat.max().clamp(min=1e-12)
    cells = Image.fromarray(((floor + (1 - floor) * heat.numpy()) * 255).astype("uint8"), mode="L")
    gain = cells.resize(image.size, Image.Resampling.BILINEAR)
    black = Image.new("RGB", image.size)
    return Image.composite(image.convert("RGB"), black, gain)
