"""The ablation driver builds each variant as named: MLM only computes no ITM loss, ITM only no MLM loss, no
sampling sees every pixel token, no pre-training takes no step."""

import pytest
import torch
from experiments.ablation import VARIANTS, variant_flags

from pixelbert_pl.harness import demo


def _task_and_batch(variant, shapes_root):
    cli = demo._cli([
        "--config", str(demo.CONFIG), "--data.init_args.root", str(shapes_root),
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0", *variant_flags(variant),
    ], run=False)  # fmt: skip
    cli.datamodule.setup("fit")
    assert cli.datamodule.hard_negative_probability == 0  # the paper's negatives, as the committed table's runs
    return cli.model, next(iter(cli.datamodule.train_dataloader()))


@pytest.mark.parametrize("variant", ["mlm_only", "itm_only", "mlm_itm_no_sampling", "mlm_itm"])
def test_each_variant_trains_what_it_says(variant, shapes_root, monkeypatch) -> None:
    task, batch = _task_and_batch(variant, shapes_root)
    sampled = []
    original = task.model.sample_pixels
    monkeypatch.setattr(task.model, "sample_pixels", lambda *a, **k: sampled.append(1) or original(*a, **k))
    task.train()
    result = task.losses(batch, sample=task.use_sampling)
    assert ("itm" in result) == (variant != "mlm_only")
    assert ("mlm" in result) == (variant != "itm_only")
    assert bool(sampled) == (variant != "mlm_itm_no_sampling")
    assert torch.isfinite(result["loss"])


def test_no_pretraining_takes_no_step_and_every_variant_is_listed() -> None:
    assert VARIANTS["no_pretraining"] is None
    assert set(VARIANTS) == {"no_pretraining", "mlm_only", "itm_only", "mlm_itm_no_sampling", "mlm_itm"}
