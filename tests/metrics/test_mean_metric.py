"""DeviceMean: a running mean with no per-update device sync."""

import pytest
import torch


def test_device_mean_averages_every_update_and_resets() -> None:
    from pixelbert_pl.metrics import DeviceMean

    metric = DeviceMean()
    metric.update(torch.tensor([True, False, True]))
    metric.update(torch.tensor([1.0]))
    assert metric.compute().item() == pytest.approx(3 / 4)
    metric.reset()
    assert torch.isnan(metric.compute())
