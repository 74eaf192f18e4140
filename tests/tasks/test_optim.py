"""The paper's two-optimiser recipe in one optimizer object, and a schedule counted in optimizer steps."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from pixelbert_pl.tasks.optim import AdamWSGD, OptimizerConfig, build_param_groups, warmup_step_decay


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"cnn": torch.nn.Linear(4, 4), "bert": torch.nn.Linear(4, 2)})


def _train(optimizers: list[torch.optim.Optimizer], net: torch.nn.Module, steps: int = 5) -> None:
    for step in range(steps):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
        loss = net["bert"](net["cnn"](x).relu()).square().mean()
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()


def test_adamwsgd_equals_sgd_plus_adamw() -> None:
    config = OptimizerConfig()
    ours, reference = _net(), _net()
    groups = build_param_groups(ours.named_parameters(), ("cnn.",), config)
    _train([AdamWSGD(groups)], ours)
    sgd = torch.optim.SGD(reference["cnn"].parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    adamw = torch.optim.AdamW(
        [
            {"params": [reference["bert"].weight], "weight_decay": 1e-2},
            {"params": [reference["bert"].bias], "weight_decay": 0.0},
        ],
        lr=1e-4,
    )
    _train([sgd, adamw], reference)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_state_dict_round_trip_continues_identically() -> None:
    config = OptimizerConfig()
    a, b = _net(), _net()
    opt_a = AdamWSGD(build_param_groups(a.named_parameters(), ("cnn.",), config))
    _train([opt_a], a, 3)
    b.load_state_dict(a.state_dict())
    opt_b = AdamWSGD(build_param_groups(b.named_parameters(), ("cnn.",), config))
    # Deep copy, as a checkpoint file would: load_state_dict keeps same-device tensors by reference.
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert "momentum_buffer" in opt_b.state[b["cnn"].weight] and "exp_avg" in opt_b.state[b["bert"].weight]
    _train([opt_a], a, 3)
    _train([opt_b], b, 3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fused_kernels_by_default_on_the_cpu() -> None:
    opt = AdamWSGD(build_param_groups(_net().named_parameters(), ("cnn.",), OptimizerConfig()))
    assert opt.fused and all(inner.defaults["fused"] for inner in opt._inner)


@pytest.mark.parametrize("fused", [False, True])
def test_a_non_finite_gradient_changes_nothing(fused: bool) -> None:
    net = _net()
    opt = AdamWSGD(build_param_groups(net.named_parameters(), ("cnn.",), OptimizerConfig()), fused=fused)
    _train([opt], net, 2)
    weights = copy.deepcopy(net.state_dict())
    state = copy.deepcopy(opt.state_dict()["state"])
    net["bert"](net["cnn"](torch.randn(8, 4))).square().mean().mul(float("nan")).backward()
    opt.step()
    assert not bool(opt.last_step_finite)
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    for index, moments in opt.state_dict()["state"].items():
        assert all(torch.equal(state[index][k], v) for k, v in moments.items())


def test_frozen_cnn_gets_no_group() -> None:
    net = _net()
    net["cnn"].requires_grad_(False)
    groups = build_param_groups(net.named_parameters(), ("cnn.",), OptimizerConfig(cnn_optimizer="frozen"))
    assert [g["name"] for g in groups] == ["transformer", "transformer_no_decay"]


def test_schedule_warmup_and_milestones() -> None:
    config = OptimizerConfig(warmup_steps=10, warmup_start_factor=0.5, milestones=[0.5, 0.75])
    opt = AdamWSGD(build_param_groups(_net().named_parameters(), ("cnn.",), config))
    sched = warmup_step_decay(opt, config, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == [5e-5, 5e-5, 5e-3]
    assert lrs[10] == [1e-4, 1e-4, 1e-2]
    torch.testing.assert_close(torch.tensor(lrs[50]), torch.tensor([1e-5, 1e-5, 1e-3]))
    torch.testing.assert_close(torch.tensor(lrs[49]), torch.tensor([1e-4, 1e-4, 1e-2]))
    torch.testing.assert_close(torch.tensor(lrs[75]), torch.tensor([1e-6, 1e-6, 1e-4]))


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()
        self.config = OptimizerConfig(warmup_steps=2, milestones=[0.5])
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.net["bert"](self.net["cnn"](batch[0])).square().mean()

    def on_before_optimizer_step(self, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = AdamWSGD(build_param_groups(self.named_parameters(), ("net.cnn.",), self.config))
        sched = warmup_step_decay(opt, self.config, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_milestones_land_on_optimizer_steps_with_accumulation(tmp_path) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(24, 4)), batch_size=2)
    module = _Tiny()
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=3,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    # 12 batches / 3 = 4 optimizer steps an epoch, 8 in all: warm-up over 2, decay x0.1 from step 4 on.
    assert len(module.lrs) == 8
    expected = [1e-4 / 3, 1e-4 * (1 / 3 + 2 / 3 / 2)] + [1e-4] * 2 + [1e-5] * 4
    torch.testing.assert_close(torch.tensor(module.lrs), torch.tensor(expected))
