"""The pixel encoder: CNN trunk -> conv to hidden -> 2x2 max-pool -> + s_v -> LayerNorm -> dropout.

Shapes: b images, H x W padded input, h x w one image's real region, gh x gw token grid, p = gh * gw tokens,
k sampled tokens, d hidden size.

Padding is known, never guessed: the collate's `pixel_mask` (True = real pixel, real region top-left) gives each
image's size, and the trunk runs once per group of equal-size images on exactly their real region. So no image
sees zero padding at its border, no pooled cell mixes real and padded features, and an image's tokens do not
depend on what else is in the batch. Token counts follow the trunk's arithmetic: every stride-2 op in
torchvision's ResNet maps n -> ceil(n / 2), and the pool uses ceil mode, so a side of n pixels gives
ceil(n / (stride * pool)) tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from pixelbert_pl.models.buckets import group_rows, run_grouped
from pixelbert_pl.models.config import PixelBertConfig
from pixelbert_pl.models.weights import read_weights
from pixelbert_pl.processing import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels


class FrozenBatchNorm2dSameDtype(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (same buffers and state_dict keys) that keeps the input's dtype.

    The original multiplies bf16 activations by fp32 buffers, so under autocast every frozen BN of the trunk
    writes fp32 activations that the next conv casts back to bf16: twice the memory traffic for nothing, since the
    conv rounds them anyway. One fused multiply-add in the input's dtype gives the conv the same bf16 input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return torch.addcmul(shift.to(x.dtype)[:, None, None], x, scale.to(x.dtype)[:, None, None])


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "frozen_batch_norm": FrozenBatchNorm2dSameDtype,
    "batch_norm": nn.BatchNorm2d,
    # 32 groups, or fewer for thin layers; batch-independent in training as well as in eval.
    "group_norm": lambda channels: nn.GroupNorm(min(32, channels // 4), channels),
}

_TORCHVISION_RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
)  # fmt: skip


def _make_resnet(name: str, norm: Callable[[int], nn.Module]) -> ResNet:
    if name in _TORCHVISION_RESNETS:
        return getattr(torchvision.models, name)(weights=None, norm_layer=norm)
    if name == "resnext152_32x8d":  # torchvision has none; the paper's X152 is 32x8d at ResNet-152's depth
        return ResNet(Bottleneck, [3, 8, 36, 3], groups=32, width_per_group=8, norm_layer=norm)
    if name == "resnet_tiny":
        return ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=norm)
    raise ValueError(
        f"unknown backbone {name!r}; available: {sorted([*_TORCHVISION_RESNETS, 'resnext152_32x8d', 'resnet_tiny'])}"
    )


def load_trunk_weights(resnet: ResNet, backbone: str, weights: str) -> None:
    """Load ImageNet weights from a torchvision enum name ("IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2") or a
    local state_dict file.

    The classifier (`fc.*`) may be absent from the file: the trunk never uses it.
    """
    path = Path(weights).expanduser()
    if path.suffix in {".pth", ".pt", ".bin", ".safetensors"} or path.exists():
        state = read_weights(path, "visual_weights")
    else:
        try:
            enum = torchvision.models.get_model_weights(backbone)
        except ValueError as err:
            raise ValueError(
                f"visual_weights={weights!r}: torchvision has no weights for backbone {backbone!r}; give a local "
                "state_dict path instead"
            ) from err
        enum_name, _, member = weights.rpartition(".")
        if enum_name and enum_name != enum.__name__:
            raise ValueError(f"visual_weights={weights!r} are not weights of backbone {backbone!r} ({enum.__name__})")
        if member not in enum.__members__:
            raise ValueError(
                f"visual_weights={weights!r} is neither a file nor a {enum.__name__} member "
                f"({sorted(enum.__members__)})"
            )
        state = enum[member].get_state_dict(progress=False)
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"visual_weights={weights!r} does not fit backbone {backbone!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def build_trunk(
    backbone: str, stages: int, weights: str | None = None, norm: str = "frozen_batch_norm"
) -> tuple[nn.Sequential, int]:
    """A torchvision ResNet cut after `stages` residual stages; returns the trunk and its output channels."""
    if norm not in NORMS:
        raise ValueError(f"unknown backbone norm {norm!r}; available: {sorted(NORMS)}")
    resnet = _make_resnet(backbone, NORMS[norm])
    if weights is not None:
        load_trunk_weights(resnet, backbone, weights)
    layers = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4][:stages]
    last = layers[-1][-1]
    channels = last.conv3.out_channels if isinstance(last, Bottleneck) else last.conv2.out_channels
    trunk = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, *layers)
    return trunk, channels


@dataclass
class PixelTokens:
    """Visual tokens of a batch of images, computed once and reusable by any number of captions."""

    tokens: torch.Tensor  # (b, p, d)
    mask: torch.Tensor  # (b, p) bool, True = a token of the real image
    grid: tuple[int, int]  # (gh, gw): tokens are the raster-order cells of this grid
    index: torch.Tensor | None = None  # (b, k) grid cell of each token after sampling; None = all p in order

    def select(self, image_index: torch.Tensor) -> PixelTokens:
        """The tokens of image `image_index[i]` for row i (several captions of one image share its CNN pass)."""
        index = None if self.index is None else self.index[image_index]
        # index_select, not tokens[image_index]: its CPU backward sums an image's rows in thread order (not repeatable).
        tokens = self.tokens.index_select(0, image_index)
        return PixelTokens(tokens, self.mask[image_index], self.grid, index)


def crop_pixel_tokens(pixels: PixelTokens, grid: tuple[int, int]) -> PixelTokens:
    """The tokens of the top-left `grid` cells of `pixels.grid`: images whose real region is that grid, freed of
    the padding that larger images of their batch gave them (their tokens are the same; padding was masked)."""
    rows, cols = grid
    height, width = pixels.grid
    if pixels.index is not None:
        raise ValueError("crop_pixel_tokens needs every token of the grid; these were sampled")
    if not (0 < rows <= height and 0 < cols <= width):
        raise ValueError(f"grid={grid}: expected a grid within the tokens' {height}x{width}")
    if (rows, cols) == (height, width):
        return pixels
    device = pixels.tokens.device
    keep = (torch.arange(rows, device=device)[:, None] * width + torch.arange(cols, device=device)).flatten()
    return PixelTokens(pixels.tokens[:, keep], pixels.mask[:, keep], (rows, cols))


def pool_pixel_tokens(pixels: PixelTokens, size: int) -> PixelTokens:
    """Each `size` x `size` block of the token grid averaged into one token, over the block's real tokens (edge
    blocks have fewer cells): a view of the whole image in 1/size^2 of the tokens, the coarse stage of two-stage
    retrieval (`RetrievalTask(rerank_top_k=...)`). A block with no real token is masked."""
    if pixels.index is not None:
        raise ValueError("pool_pixel_tokens needs every token of the grid; these were sampled")
    if size < 1:
        raise ValueError(f"size={size}: expected >= 1")
    if size == 1:
        return pixels
    b, _, d = pixels.tokens.shape
    gh, gw = pixels.grid
    weight = pixels.mask.to(pixels.tokens.dtype).view(b, 1, gh, gw)
    grid = (pixels.tokens.transpose(1, 2).reshape(b, d, gh, gw) * weight).contiguous()
    # Both sums share avg_pool2d's divisor, which cancels: the ratio is the mean over the block's real tokens.
    total = F.avg_pool2d(grid, size, ceil_mode=True)
    count = F.avg_pool2d(weight, size, ceil_mode=True)
    tokens = (total / count.clamp(min=torch.finfo(count.dtype).tiny)).flatten(2).transpose(1, 2)
    return PixelTokens(tokens, count.flatten(1) > 0, (total.shape[2], total.shape[3]))


def image_sizes_from_mask(pixel_mask: torch.Tensor) -> torch.Tensor:
    """(b, 2) real height and width of each image, checking that each real region is a top-left rectangle."""
    heights = pixel_mask.any(dim=2).sum(dim=1)
    widths = pixel_mask.any(dim=1).sum(dim=1)
    top_left = pixel_mask[:, :1, :1].flatten() | (heights == 0)
    if not torch.equal(pixel_mask.sum(dim=(1, 2)), heights * widths) or not bool(top_left.all()):
        raise ValueError("pixel_mask: each image's real pixels must form one rectangle at the top left of the padding")
    if bool((heights == 0).any()):
        raise ValueError(f"pixel_mask: image(s) {torch.nonzero(heights == 0).flatten().tolist()} have no real pixel")
    return torch.stack([heights, widths], dim=1)


def sample_pixel_tokens(pixels: PixelTokens, k: int, scores: torch.Tensor) -> PixelTokens:
    """Keep k tokens per image, drawn without replacement among that image's valid tokens only.

    `scores` (b, p) are uniform draws in [0, 1); an image with fewer than k valid tokens keeps them all and the
    rest of its k slots stay masked. The kept tokens stay in raster order.
    """
    b, p, d = pixels.tokens.shape
    k = min(k, p)
    keyed = scores.masked_fill(~pixels.mask, 2.0)  # invalid tokens rank behind every valid one
    index = keyed.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    tokens = pixels.tokens.gather(1, index.unsqueeze(-1).expand(b, k, d))
    return PixelTokens(tokens, pixels.mask.gather(1, index), pixels.grid, index)


class PixelEncoder(nn.Module):
    """Raw pixels to Pixel-BERT's visual tokens (paper Fig. 2: CNN backbone -> Conv -> Pooling -> + s_v)."""

    def __init__(self, config: PixelBertConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk, channels = build_trunk(
            config.backbone, config.backbone_stages, config.visual_weights, config.backbone_norm
        )
        kernel = config.visual_kernel_size
        if kernel % 2 == 0:
            raise ValueError(f"visual_kernel_size={kernel}: expected an odd size, so the feature grid keeps its size")
        self.projection = nn.Conv2d(channels, config.hidden_size, kernel, padding=kernel // 2)
        self.semantic_embedding = nn.Parameter(torch.zeros(config.hidden_size))  # the paper's s_v
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        nn.init.normal_(self.semantic_embedding, std=config.initializer_range)
        side = config.visual_position_grid
        self.row_embedding = nn.Embedding(side, config.hidden_size) if side else None
        self.column_embedding = nn.Embedding(side, config.hidden_size) if side else None
        # Of the trunk's inputs, not its architecture: `PixelBertModel.processing` sets them.
        self.image_mean: tuple[float, ...] = IMAGENET_MEAN
        self.image_std: tuple[float, ...] = IMAGENET_STD
        # Run the trunk on the whole padded batch (inputs padded to fixed `PadShapes`: few shapes, compiled and
        # CUDA graphs hold) instead of once per real size (exact, but a shape per size); set from `pad_long_sides`.
        self.padded_trunk = False

    def _token_mask(self, sizes: list[tuple[int, int]], gh: int, gw: int, device: torch.device) -> torch.Tensor:
        """(b, gh * gw) True on the tokens of each image's real region, built on the host (no device sync)."""
        valid = -(-torch.tensor(sizes) // self.config.token_stride)  # (b, 2) token rows and columns of each image
        rows = torch.arange(gh)[None, :, None] < valid[:, 0, None, None]
        cols = torch.arange(gw)[None, None, :] < valid[:, 1, None, None]
        return (rows & cols).flatten(1).to(device, non_blocking=True)

    @staticmethod
    def _pixel_mask(sizes: list[tuple[int, int]], height: int, width: int, device: torch.device) -> torch.Tensor:
        rows = torch.arange(height)[None, :, None] < torch.tensor([h for h, _ in sizes])[:, None, None]
        cols = torch.arange(width)[None, None, :] < torch.tensor([w for _, w in sizes])[:, None, None]
        return (rows & cols).to(device, non_blocking=True)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        stride = self.config.token_stride
        return math.ceil(height / stride), math.ceil(width / stride)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) images of one size -> (n, d, gh', gw') pooled features."""
        # The stem conv's k x k kernel (a 1 x 1 one reads as contiguous in either format).
        stem = cast(torch.Tensor, self.trunk[0].weight)
        if stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous():
            # The task converted the CNN to channels_last (tensor-core convs without transposes); match its input.
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.projection(self.trunk(images))
        pool = self.config.visual_pool_size
        if pool > 1:
            features = F.max_pool2d(features, pool, stride=pool, ceil_mode=True)
        return features

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> PixelTokens:
        """Tokens of a padded batch of normalised float images, or of uint8 RGB ones (normalised here, on the
        device, with `image_mean` / `image_std`, set from the model's `processing`).

        Each image's real size comes from `image_sizes` (host ints, as the collates give them: no device sync),
        else from `pixel_mask` (read back from the device), else every image fills the whole padded size (also no
        sync, and the path a CUDA graph can capture). The trunk runs once per group of equal real sizes on exactly
        their pixels, or, with `padded_trunk`, once on the padded batch with the padding zeroed."""
        b, _, height, width = pixel_values.shape
        device = pixel_values.device
        if pixel_values.dtype == torch.uint8:  # raw pixels, as the DataModules send them: normalise here
            pixel_values = normalize_pixels(pixel_values, self.image_mean, self.image_std)
        if image_sizes is not None:
            sizes = [(int(h), int(w)) for h, w in image_sizes]
            if len(sizes) != b or any(not (0 < h <= height and 0 < w <= width) for h, w in sizes):
                raise ValueError(f"image_sizes={sizes}: expected {b} sizes within the padded {height}x{width}")
        elif pixel_mask is not None:
            if pixel_mask.shape != (b, height, width):
                raise ValueError(f"pixel_mask has shape {tuple(pixel_mask.shape)}; expected {(b, height, width)}")
            sizes = [(h, w) for h, w in image_sizes_from_mask(pixel_mask.bool()).tolist()]
        else:
            sizes = [(height, width)] * b
        gh, gw = self.token_grid(height, width)

        groups = group_rows(sizes)
        if len(groups) == 1 and next(iter(groups)) == (height, width):
            grid = self._features(pixel_values)
            mask = torch.ones(b, gh * gw, dtype=torch.bool, device=device)
        elif self.padded_trunk:
            # One trunk call on the padded batch, one of a few fixed shapes; the padding is set to 0 after
            # normalisation (the mean colour), so an image's tokens depend on the shape it is padded to alone.
            real = pixel_mask if pixel_mask is not None else self._pixel_mask(sizes, height, width, device)
            grid = self._features(pixel_values * real[:, None].to(pixel_values.dtype))
            mask = self._token_mask(sizes, gh, gw, device)
        else:

            def trunk(size: tuple[int, int], images: torch.Tensor) -> torch.Tensor:
                features = self._features(images[:, :, : size[0], : size[1]])
                # Zero-fill outside the real region; those tokens are masked out of attention below.
                return F.pad(features, (0, gw - features.shape[-1], 0, gh - features.shape[-2]))

            grid = run_grouped(groups.items(), trunk, pixel_values)
            mask = self._token_mask(sizes, gh, gw, device)

        tokens = grid.flatten(2).transpose(1, 2) + self.semantic_embedding
        if self.row_embedding is not None and self.column_embedding is not None:
            if max(gh, gw) > self.config.visual_position_grid:
                raise ValueError(
                    f"a {gh}x{gw} token grid exceeds visual_position_grid={self.config.visual_position_grid}"
                )
            rows_pos = self.row_embedding.weight[:gh, None, :]
            cols_pos = self.column_embedding.weight[None, :gw, :]
            tokens = tokens + (rows_pos + cols_pos).reshape(gh * gw, -1)
        tokens = self.dropout(self.layer_norm(tokens))
        return PixelTokens(tokens, mask, (gh, gw))
