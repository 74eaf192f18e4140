"""The speed options (channels_last, torch.compile, frozen stages) change speed, not numbers."""

import pytest
import torch

from numerics import BFLOAT16, COMPILED_BATCH_NORM_GRAD, FLOAT32, FLOAT32_DEEP, assert_close_scaled, assert_grads_close
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.tasks import PretrainTask
from pixelbert_pl.tasks.optim import OptimizerConfig


@pytest.fixture(scope="module")
def batch(shapes_root):
    dm = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, captions_per_image=2, num_workers=0)
    dm.setup("fit")
    return dm.vocab_size, next(iter(dm.train_dataloader()))


def _loss_and_grads(task: PretrainTask, batch, autocast: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    task.train()
    task.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = task.losses(batch, sample=True)["loss"]
    loss.backward()
    return loss.detach().float(), {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_fast_path_matches_the_plain_path(batch, mode) -> None:
    vocab, data = batch
    torch.manual_seed(0)
    plain = PretrainTask(preset="pixelbert_tiny", vocab_size=vocab)
    fast = PretrainTask(preset="pixelbert_tiny", vocab_size=vocab, channels_last=True, compile=True, compile_mode=mode)
    fast.load_state_dict(plain.state_dict())
    assert fast.state_dict().keys() == plain.state_dict().keys()  # compiling in place keeps checkpoint keys
    trunk_conv = fast.model.visual.trunk[0].weight
    assert trunk_conv.is_contiguous(memory_format=torch.channels_last) and not trunk_conv.is_contiguous()

    loss, grads = _loss_and_grads(plain, data)
    fast_loss, fast_grads = _loss_and_grads(fast, data)
    assert_close_scaled(fast_loss, loss, FLOAT32)
    assert_grads_close(fast_grads, grads, FLOAT32_DEEP, {"model.visual.trunk.": COMPILED_BATCH_NORM_GRAD})

    # bf16 autocast (what the GPU configs run) stays within bf16 noise of the fp32 plain path.
    bf16_loss, _ = _loss_and_grads(fast, data, autocast=True)
    assert_close_scaled(bf16_loss, loss, BFLOAT16)
    if mode == "reduce-overhead":  # CUDA graphs only for fixed shapes, never one recording per size met
        from torch._inductor import config as inductor_config

        assert inductor_config.triton.cudagraph_skip_dynamic_graphs


def test_frozen_stages_get_no_gradient_and_keep_eval_mode(batch) -> None:
    vocab, data = batch
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=vocab, optimizer=OptimizerConfig(cnn_frozen_stages=1))
    _, grads = _loss_and_grads(task, data)
    trunk = dict(task.model.visual.trunk.named_children())
    frozen = {f"model.visual.trunk.{k}." for k in ("0", "1", "4")}  # conv1, bn1, layer1
    for name, p in task.named_parameters():
        if name.startswith(tuple(frozen)):
            assert not p.requires_grad and name not in grads, name
        elif name.startswith("model.visual.trunk."):
            assert name in grads, name
    assert not trunk["1"].training and not any(m.training for m in trunk["4"].modules())
    assert trunk["5"].training  # layer2 trains, batch statistics and all
    with pytest.raises(ValueError, match="cnn_frozen_stages=5"):
        OptimizerConfig(cnn_frozen_stages=5)
