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


def test_weights_give_the_mean_of_the_rows_that_count() -> None:
    from pixelbert_pl.metrics import DeviceMean

    metric = DeviceMean()
    metric.update(torch.tensor([1.0, 0.0, 1.0, 1.0]), weights=torch.tensor([True, True, False, False]))
    metric.update(torch.tensor([1.0, 1.0]), weights=torch.tensor([True, False]))
    assert metric.compute().item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="expected the values' \\(2,\\)"):
        metric.update(torch.ones(2), weights=torch.ones(3))
