"""The pixel encoder: real trunk weights, padding that never leaks, sampling among valid tokens only."""

import pytest
import torch
import torchvision

import pixelbert_pl
from numerics import BFLOAT16, FLOAT32, FLOAT32_DEEP, assert_close_scaled
from pixelbert_pl.models.visual import (
    PixelTokens,
    build_trunk,
    crop_pixel_tokens,
    pool_pixel_tokens,
    sample_pixel_tokens,
)


def _randomise_bn_statistics(model: torch.nn.Module) -> None:
    # Fresh BN layers are identities (mean 0, var 1); real statistics make the comparison meaningful.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.8, 1.25)
            module.weight.data.uniform_(0.8, 1.25)
            module.bias.data.uniform_(-0.1, 0.1)


def test_trunk_from_state_dict_matches_torchvision_resnet50(tmp_path) -> None:
    reference = torchvision.models.resnet50(weights=None)
    _randomise_bn_statistics(reference)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    reference.eval()

    trunk, channels = build_trunk("resnet50", 4, str(path))
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(images)
        got = trunk(images)
    assert channels == 2048
    assert got.shape == expected.shape == (2, 2048, 3, 4)
    # FrozenBN folds (x - mean) / std * w + b into one multiply-add: equal up to float32 rounding of the sum.
    assert_close_scaled(got, expected, FLOAT32_DEEP)


def test_model_loads_visual_weights_by_path_and_rejects_bad_names(tmp_path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}, path)
    model = pixelbert_pl.create_model(
        "pixelbert_tiny", backbone="resnet18", backbone_norm="frozen_batch_norm", visual_weights=str(path)
    )
    torch.testing.assert_close(model.visual.trunk[0].weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="IMAGENET1K_V9"):
        pixelbert_pl.create_model(
            "pixelbert_tiny", backbone="resnet18", backbone_norm="frozen_batch_norm", visual_weights="IMAGENET1K_V9"
        )
    with pytest.raises(ValueError, match="does not fit backbone 'resnet_tiny'"):
        pixelbert_pl.create_model("pixelbert_tiny", visual_weights=str(path))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        pixelbert_pl.create_model("pixelbert_tiny", visual_weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize(("height", "width"), [(96, 96), (80, 112), (33, 17), (100, 65)])
def test_token_grid_arithmetic_matches_the_network(tiny_model, height, width) -> None:
    pixels = tiny_model.encode_pixels(torch.randn(1, 3, height, width))
    gh, gw = tiny_model.visual.token_grid(height, width)
    assert pixels.grid == (gh, gw)
    assert pixels.tokens.shape == (1, gh * gw, tiny_model.config.hidden_size)
    assert bool(pixels.mask.all())


def test_padded_image_gives_the_tokens_it_gives_alone(tiny_model) -> None:
    small = torch.randn(3, 40, 72)
    big = torch.randn(3, 96, 96)
    values = torch.zeros(2, 3, 96, 96)
    mask = torch.zeros(2, 96, 96, dtype=torch.bool)
    values[0, :, :40, :72], mask[0, :40, :72] = small, True
    values[1], mask[1] = big, True
    with torch.no_grad():
        batch = tiny_model.encode_pixels(values, mask)
        alone = tiny_model.encode_pixels(small[None])
    gh, gw = alone.grid
    assert batch.mask[0].view(batch.grid).sum() == gh * gw
    tokens = batch.tokens[0].view(*batch.grid, -1)[:gh, :gw].reshape(gh * gw, -1)
    assert_close_scaled(tokens, alone.tokens[0], FLOAT32)


def test_padded_trunk_gives_an_image_the_tokens_of_its_padded_shape_whatever_its_batch() -> None:
    """With fixed padded shapes the trunk runs once on the padded batch: an image's tokens are those it gets padded
    alone to the same shape (the padding is zeroed, whatever the collate wrote there), its padded tokens masked."""
    from pixelbert_pl.processing import ProcessingConfig

    model = pixelbert_pl.create_model("pixelbert_tiny").eval()
    model.processing = ProcessingConfig(tokenizer=None, image_min_size=64, image_max_size=96, pad_long_sides=(96,))
    assert model.visual.padded_trunk
    images = [
        torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8),
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
    ]
    values = torch.full((2, 3, 64, 96), 255, dtype=torch.uint8)  # not zeros: the encoder must not read the padding
    values[0], values[1, :, :, :64] = images[0], images[1]
    alone = torch.zeros(1, 3, 64, 96, dtype=torch.uint8)
    alone[0, :, :, :64] = images[1]
    with torch.no_grad():
        batch = model.encode_pixels(values, image_sizes=[(64, 96), (64, 64)])
        single = model.encode_pixels(alone, image_sizes=[(64, 64)])
    gh, gw = model.visual.token_grid(64, 96)
    real = model.visual.token_grid(64, 64)
    assert batch.grid == single.grid == (gh, gw) and bool(batch.mask[0].all())
    assert torch.equal(batch.mask[1].view(gh, gw), torch.arange(gw).expand(gh, gw) < real[1])
    assert_close_scaled(batch.tokens[1], single.tokens[0], FLOAT32)
    # Training through the padded trunk reaches every visual parameter.
    model.train()
    model.encode_pixels(values, image_sizes=[(64, 96), (64, 64)]).tokens.sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters() if p.requires_grad)


def test_host_image_sizes_give_what_the_mask_gives(tiny_model) -> None:
    values = torch.randn(3, 3, 96, 96)
    mask = torch.zeros(3, 96, 96, dtype=torch.bool)
    sizes = [(40, 72), (96, 96), (96, 50)]
    for i, (h, w) in enumerate(sizes):
        mask[i, :h, :w] = True
    with torch.no_grad():
        from_mask = tiny_model.encode_pixels(values, mask)
        from_sizes = tiny_model.encode_pixels(values, mask, sizes)
        full = tiny_model.encode_pixels(values)
        full_mask = tiny_model.encode_pixels(values, torch.ones(3, 96, 96, dtype=torch.bool))
    assert torch.equal(from_sizes.mask, from_mask.mask) and not bool(from_mask.mask.all())
    torch.testing.assert_close(from_sizes.tokens, from_mask.tokens)
    assert torch.equal(full.mask, full_mask.mask) and bool(full.mask.all())
    torch.testing.assert_close(full.tokens, full_mask.tokens)
    with pytest.raises(ValueError, match="image_sizes"):
        tiny_model.encode_pixels(values, mask, [(40, 72), (97, 96), (96, 50)])


def test_uint8_pixels_are_normalised_on_the_device_as_on_the_host(tiny_model) -> None:
    from pixelbert_pl.processing import normalize_pixels

    raw = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)
    processing = tiny_model.processing
    host = normalize_pixels(raw, processing.image_mean, processing.image_std)
    assert host.dtype == torch.float32 and abs(host.mean().item()) < 2
    with torch.no_grad():
        from_uint8 = tiny_model.encode_pixels(raw)
        from_float = tiny_model.encode_pixels(host)
    assert torch.equal(from_uint8.tokens, from_float.tokens)


def test_frozen_batch_norm_keeps_the_input_dtype() -> None:
    from torchvision.ops import FrozenBatchNorm2d

    from pixelbert_pl.models.visual import FrozenBatchNorm2dSameDtype

    reference, ours = FrozenBatchNorm2d(8), FrozenBatchNorm2dSameDtype(8)
    for name, buffer in reference.named_buffers():
        buffer.copy_(torch.rand(8) + 0.5)
        getattr(ours, name).copy_(buffer)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(ours(x), reference(x))
    assert reference(x.bfloat16()).dtype == torch.float32  # torchvision's promotes bf16 activations to fp32
    half = ours(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert_close_scaled(half.float(), reference(x), BFLOAT16)


def test_mid_grey_image_is_not_padding(tiny_model) -> None:
    grey = torch.zeros(1, 3, 64, 64)  # ImageNet-normalised mid grey is ~0 everywhere
    pixels = tiny_model.encode_pixels(grey, torch.ones(1, 64, 64, dtype=torch.bool))
    assert bool(pixels.mask.all())


def test_pixel_mask_must_be_a_top_left_rectangle(tiny_model) -> None:
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    mask[0, 5, 5] = False
    with pytest.raises(ValueError, match="top left"):
        tiny_model.encode_pixels(torch.randn(1, 3, 32, 32), mask)


def _tokens(valid_counts: list[int], p: int = 12) -> PixelTokens:
    mask = torch.arange(p)[None] < torch.tensor(valid_counts)[:, None]
    return PixelTokens(torch.randn(len(valid_counts), p, 4), mask, (3, 4))


def test_sampling_keeps_exactly_k_valid_tokens_per_image() -> None:
    pixels = _tokens([12, 9, 5])
    sampled = sample_pixel_tokens(pixels, 5, torch.rand(3, 12))
    assert sampled.tokens.shape == (3, 5, 4)
    assert bool(sampled.mask.all())
    assert bool((sampled.index < torch.tensor([12, 9, 5])[:, None]).all())
    for row in range(3):
        assert len(set(sampled.index[row].tolist())) == 5
        torch.testing.assert_close(sampled.tokens[row], pixels.tokens[row, sampled.index[row]])


def test_sampling_short_image_keeps_all_valid_and_masks_the_rest() -> None:
    sampled = sample_pixel_tokens(_tokens([12, 3]), 6, torch.rand(2, 12))
    assert sampled.mask.sum(1).tolist() == [6, 3]
    assert sorted(sampled.index[1, :3].tolist()) == [0, 1, 2]


def test_model_samples_only_when_asked_in_train_mode(tiny_model) -> None:
    ids = torch.randint(5, 100, (2, 8))
    images = torch.randn(2, 3, 96, 96)
    k = tiny_model.config.pixel_sample_size
    full = tiny_model.visual.token_grid(96, 96)[0] * tiny_model.visual.token_grid(96, 96)[1]
    tiny_model.train()
    assert tiny_model(ids, pixel_values=images).pixel_output.shape[1] == full
    out = tiny_model(ids, pixel_values=images, sample_pixels=True, pixel_sample_seeds=torch.tensor([1, 2]))
    again = tiny_model(ids, pixel_values=images, sample_pixels=True, pixel_sample_seeds=torch.tensor([1, 2]))
    assert out.pixel_output.shape[1] == k and bool(out.pixel_token_mask.all())
    assert torch.equal(out.pixel_token_index, again.pixel_token_index)
    assert not torch.equal(out.pixel_token_index[0], out.pixel_token_index[1])
    tiny_model.eval()
    with torch.no_grad():
        first = tiny_model(ids, pixel_values=images, sample_pixels=True)
        second = tiny_model(ids, pixel_values=images, sample_pixels=True)
    assert first.pixel_output.shape[1] == full
    assert torch.equal(first.sequence_output, second.sequence_output)


def test_optional_visual_positions_are_off_by_default_and_order_aware() -> None:
    assert pixelbert_pl.get_config("pixelbert_r50").visual_position_grid == 0
    model = pixelbert_pl.create_model("pixelbert_tiny", visual_position_grid=8).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.encode_pixels(image).tokens
        flipped = model.encode_pixels(image.flip(-1)).tokens
    # Without positions a mirrored image would give (nearly) the mirrored token set; with them the tokens differ.
    assert not torch.allclose(tokens, flipped, atol=1e-3)
    with pytest.raises(ValueError, match="visual_position_grid=8"):
        model.encode_pixels(torch.randn(1, 3, 160, 64))


def test_selecting_tokens_for_rows_has_a_reproducible_backward() -> None:
    """Rows of one image scattered through the batch (pre-training sorts rows by text length): indexing the tokens
    with `tokens[image_index]` summed their gradients in thread order on the CPU, different bits every run."""
    torch.manual_seed(0)
    tokens = torch.randn(32, 24, 128, requires_grad=True)
    pixels = PixelTokens(tokens, torch.ones(32, 24, dtype=torch.bool), (4, 6))
    image_index = torch.randperm(128) % 32
    upstream = torch.randn(128, 24, 128)

    def gradient() -> torch.Tensor:
        tokens.grad = None
        pixels.select(image_index).tokens.mul(upstream).sum().backward()
        return tokens.grad.clone()

    first = gradient()
    assert all(torch.equal(first, gradient()) for _ in range(10))


def test_crop_pixel_tokens_frees_an_image_of_its_batchs_padding(tiny_model) -> None:
    small, large = torch.randn(3, 64, 48), torch.randn(3, 96, 96)
    padded = torch.zeros(2, 3, 96, 96)
    padded[0, :, :64, :48], padded[1] = small, large
    with torch.no_grad():
        batch = tiny_model.encode_pixels(padded, image_sizes=[(64, 48), (96, 96)])
        alone = tiny_model.encode_pixels(small[None])
    cropped = crop_pixel_tokens(batch.select(torch.tensor([0])), alone.grid)
    assert cropped.grid == alone.grid == (4, 3) and bool(cropped.mask.all())
    assert_close_scaled(cropped.tokens, alone.tokens, FLOAT32)
    assert crop_pixel_tokens(batch, batch.grid) is batch
    with pytest.raises(ValueError, match="within"):
        crop_pixel_tokens(batch, (7, 3))
    with pytest.raises(ValueError, match="sampled"):
        crop_pixel_tokens(sample_pixel_tokens(batch, 4, torch.rand(batch.mask.shape)), (4, 3))


def test_pool_pixel_tokens_averages_each_blocks_real_tokens() -> None:
    tokens = torch.arange(2 * 15 * 2, dtype=torch.float32).view(2, 15, 2)  # two images, a 3 x 5 grid, d = 2
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[1, :, 3:] = False  # the second image's real region is 3 x 3
    pooled = pool_pixel_tokens(PixelTokens(tokens, mask.flatten(1), (3, 5)), 2)
    assert pooled.grid == (2, 3) and pooled.tokens.shape == (2, 6, 2) and pooled.index is None
    grid = tokens.view(2, 3, 5, 2)
    assert torch.allclose(pooled.tokens[0, 0], grid[0, :2, :2].reshape(-1, 2).mean(0))
    assert torch.allclose(pooled.tokens[0, 5], grid[0, 2, 4])  # the corner block has one cell
    assert torch.allclose(pooled.tokens[1, 1], grid[1, :2, 2].mean(0))  # padding is left out of the mean
    assert pooled.mask.tolist() == [[True] * 6, [True, True, False, True, True, False]]
    assert pool_pixel_tokens(pooled, 1) is pooled
    sampled = PixelTokens(tokens[:, :4], mask.flatten(1)[:, :4], (3, 5), torch.arange(4).expand(2, 4))
    with pytest.raises(ValueError, match="sampled"):
        pool_pixel_tokens(sampled, 2)
