"""Tolerances for one computation taken two ways (batched vs alone, bucketed vs full, compiled vs eager, padded vs
cropped): bounds scaled by the magnitude of what is compared, so that a test passes on any CPU.

A float32 sum comes out in another order on another CPU (SIMD width, oneDNN kernel) or thread count: an element's
error is a few eps times the size of the terms it sums and the number of them, whatever its own size, so an
elementwise rtol fails on the elements near zero of a tensor whose entries are ~10. A wrong mask, a dropped row
or a missing gradient term moves results by ~1e-1 of the magnitude, far outside these bounds.
"""

from __future__ import annotations

import torch

# float32 forward outputs: one rounding is 6e-8 of the magnitude; reordered sums over a network stay below ~1e-6.
FLOAT32 = 1e-5
# float32 through many layers (a backward pass, ResNet-50's forward): roundings compound to a few 1e-6.
FLOAT32_DEEP = 1e-4
# bf16 keeps 8 significant bits (one rounding: 2e-3 of the value); a few roundings along the way.
BFLOAT16 = 2e-2
# fp16 keeps 11 (4.9e-4): a float32 difference far below that can still flip one rounding, one step of 9.8e-4.
FLOAT16 = 2e-3
# Measured, cause not pinned down: inductor's vectorised CPU code puts the CNN's weight gradients (training-mode
# batch norm, ShapesWorld's flat images) up to 1.5e-2 of their magnitude from eager's; its scalar code, 5e-6.
COMPILED_BATCH_NORM_GRAD = 5e-2


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, rel: float, msg: str = "", magnitude_floor: float = 0.0
) -> None:
    """Assert max |actual - expected| <= rel * max(max |expected|, magnitude_floor), shapes equal, all finite."""
    prefix = f"{msg}: " if msg else ""
    assert actual.shape == expected.shape, f"{prefix}shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().cpu().double().reshape(-1), expected.detach().cpu().double().reshape(-1)
    assert torch.isfinite(a).all() and torch.isfinite(e).all(), f"{prefix}non-finite values"
    if e.numel() == 0:
        return
    magnitude = max(e.abs().max().item(), magnitude_floor)
    bound = rel * max(magnitude, torch.finfo(expected.dtype).tiny)  # all-zero tensors must match exactly
    diff = (a - e).abs()
    worst = int(diff.argmax())
    if diff[worst].item() > bound:
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape))
        raise AssertionError(
            f"{prefix}max abs difference {diff[worst].item():.3g} at index {index} (actual {a[worst].item():.6g}, "
            f"expected {e[worst].item():.6g}) > bound {bound:.3g} = {rel:g} x magnitude {magnitude:.3g}; "
            f"{int((diff > bound).sum())} of {e.numel()} elements outside"
        )


def assert_grads_close(
    actual: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    rel: float,
    rel_by_prefix: dict[str, float] | None = None,
) -> None:
    """The same parameters got gradients, each within `rel` (or the `rel_by_prefix` of its name's prefix) of its
    magnitude, floored at 1e-5 of the largest gradient's: one that is 0 in exact arithmetic (an attention key bias,
    as softmax ignores a shift of its logits) is rounding noise (~1e-11 of the largest), which sizes nothing; real
    ones here are above 4e-5 of the largest."""
    assert actual.keys() == expected.keys(), f"gradients differ in {sorted(actual.keys() ^ expected.keys())}"
    largest = max((g.abs().max().item() for g in expected.values() if g.numel()), default=0.0)
    for name, grad in expected.items():
        tolerance = next((r for prefix, r in (rel_by_prefix or {}).items() if name.startswith(prefix)), rel)
        assert_close_scaled(actual[name], grad, tolerance, msg=name, magnitude_floor=1e-5 * largest)
