"""Attention heat-maps: one weight per pixel token, a proper share of the word's attention, drawn over the image."""

import torch
from PIL import Image

from pixelbert_pl.visualize import overlay, word_attention


def test_word_attention_is_a_share_of_the_words_attention_per_grid_cell(tiny_model) -> None:
    ids = torch.tensor([[2, 40, 41, 42, 3]])
    pixels = torch.randn(1, 3, 96, 64)
    mask = torch.zeros(1, 96, 64, dtype=torch.bool)
    mask[:, :, :48] = True  # the right quarter is padding: its tokens must get nothing
    heat = word_attention(tiny_model, ids, pixels, mask, word_position=2)
    rows, cols = tiny_model.visual.token_grid(96, 64)
    assert heat.shape == (rows, cols)
    assert (heat >= 0).all() and 0 < heat.sum() <= 1 + 1e-5  # the rest of the row's attention goes to the text
    assert (heat[:, -1] == 0).all()
    assert not tiny_model.training


def test_overlay_keeps_the_size_and_dims_unattended_cells() -> None:
    image = Image.new("RGB", (32, 32), (200, 100, 50))
    heat = torch.zeros(2, 2)
    heat[0, 0] = 1.0
    out = overlay(image, heat)
    assert out.size == image.size
    assert out.getpixel((2, 2)) == (200, 100, 50) and sum(out.getpixel((29, 29))) < sum(image.getpixel((29, 29))) / 4
