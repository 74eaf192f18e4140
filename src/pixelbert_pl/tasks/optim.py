"""The paper's optimiser recipe: SGD for the CNN, AdamW for the transformer, in ONE optimizer object.

Lightning supports several optimizers only under manual optimisation, where `Trainer(gradient_clip_val=...)`
and accumulation stop working; one wrapper holding both update rules keeps automatic optimisation, clipping,
accumulation, AMP and checkpointing as Lightning users expect (the recipe: docs/paper_facts.md §2.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class OptimizerConfig:
    """Learning rates, decays and schedule. Defaults are the paper's pre-training recipe (+ SOHO's gap fillers).

    Milestones are fractions of the run's optimizer steps (after accumulation), so the paper's "lr / 10 at
    epochs 25 and 35 of 40" is `milestones: [0.625, 0.875]` whatever the batch size, device count or
    accumulation (docs/prior_art.md L8).
    """

    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    cnn_optimizer: str = "sgd"  # "sgd" (the paper), "adamw", or "frozen" (retrieval fine-tuning)
    cnn_lr: float = 1e-2
    cnn_momentum: float = 0.9
    cnn_weight_decay: float = 5e-4
    # Residual stages kept frozen (with the stem) while the rest of the CNN trains: 0 = none, 1 = stem + layer1
    # (SOHO's `frozen_stages=1`, docs/paper_facts.md §2.4: it also skips the costliest high-resolution backward), ...
    cnn_frozen_stages: int = 0
    warmup_steps: int = 1000
    warmup_start_factor: float = 1 / 3
    milestones: list[float] = field(default_factory=lambda: [0.625, 0.875])
    decay_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.cnn_optimizer not in {"sgd", "adamw", "frozen"}:
            raise ValueError(f"OptimizerConfig.cnn_optimizer={self.cnn_optimizer!r}: expected sgd, adamw or frozen")
        if not 0 <= self.cnn_frozen_stages <= 4:
            raise ValueError(f"OptimizerConfig.cnn_frozen_stages={self.cnn_frozen_stages}: expected 0 to 4")
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ValueError(f"OptimizerConfig.milestones={self.milestones}: expected fractions of the run in (0, 1]")


FUSED_DEVICE_TYPES = {"cuda", "cpu"}  # where torch has fused AdamW and SGD kernels


class AdamWSGD(Optimizer):
    """SGD on the groups marked `"optimizer": "sgd"`, AdamW on the others; one `step`, one `state_dict`.

    The inner optimizers share this object's group dicts and state, so schedulers, clipping, AMP grad scaling
    and checkpoints that look at `param_groups` / `state` see one ordinary optimizer.

    A step whose gradients are not all finite (a NaN or Inf loss) changes nothing: no parameter, no moment, no
    step count. With fused kernels (`fused`: the default, see `_bind`) the kernels skip it themselves,
    reading a device flag, so the check costs no host-device sync; otherwise the flag is read on the host.
    `last_step_finite` holds the flag (a 0-dim bool tensor) for the task to report.
    """

    def __init__(
        self, param_groups: list[dict[str, Any]], betas: tuple[float, float] = (0.9, 0.999), fused: bool | None = None
    ) -> None:
        groups = [g for g in param_groups if g["params"]]
        super().__init__(groups, defaults={})
        self._betas = betas
        self._fused = fused
        self.last_step_finite: torch.Tensor | None = None
        self._bind()

    def _bind(self) -> None:
        sgd_groups = [g for g in self.param_groups if g.get("optimizer") == "sgd"]
        adamw_groups = [g for g in self.param_groups if g.get("optimizer") != "sgd"]
        # Fused kernels where all parameters share a device with them: torch's default is a per-parameter loop there.
        devices = {p.device.type for g in self.param_groups for p in g["params"]}
        fused = self._fused if self._fused is not None else len(devices) == 1 and devices <= FUSED_DEVICE_TYPES
        self.fused = fused
        self._inner: list[Optimizer] = []
        if sgd_groups:
            self._inner.append(SGD(sgd_groups, lr=sgd_groups[0]["lr"], fused=fused or None))
        if adamw_groups:
            self._inner.append(AdamW(adamw_groups, lr=adamw_groups[0]["lr"], betas=self._betas, fused=fused or None))
        for inner in self._inner:
            inner.state = self.state

    def _init_momentum(self) -> None:
        # Fused SGD allocates momentum buffers uninitialised on its first step and fills them in the kernel; a
        # skipped first step would leave garbage there. Zero buffers give the same first update (buf = 0 * m + g).
        for group in self.param_groups:
            if group.get("optimizer") == "sgd" and group.get("momentum", 0):
                for p in group["params"]:
                    if "momentum_buffer" not in self.state[p]:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._bind()  # loading replaces the group dicts and the state: re-share them

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return loss
        finite = torch.stack(torch._foreach_norm(grads)).isfinite().all()
        self.last_step_finite = finite
        if self.fused:
            self._init_momentum()
            for inner in self._inner:
                inner.found_inf = (~finite).float()  # type: ignore[attr-defined]  # read by the fused kernels
                inner.step()
                del inner.found_inf  # type: ignore[attr-defined]
        elif bool(finite):
            for inner in self._inner:
                inner.step()
        return loss


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # BERT practice: no weight decay on biases, LayerNorm / norm weights and other 1-D parameters.
    return param.ndim <= 1 or name.endswith(".bias")


def build_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], cnn_prefixes: tuple[str, ...], config: OptimizerConfig
) -> list[dict[str, Any]]:
    """Split parameters into CNN (SGD) and transformer (AdamW, decay / no-decay) groups, skipping frozen ones."""
    cnn, decay, no_decay = [], [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        if name.startswith(cnn_prefixes):
            cnn.append(param)
        elif _no_decay(name, param):
            no_decay.append(param)
        else:
            decay.append(param)
    groups: list[dict[str, Any]] = [
        {"name": "transformer", "params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
        {"name": "transformer_no_decay", "params": no_decay, "lr": config.lr, "weight_decay": 0.0},
    ]
    if config.cnn_optimizer == "sgd":
        groups.append(
            {
                "name": "cnn",
                "optimizer": "sgd",
                "params": cnn,
                "lr": config.cnn_lr,
                "momentum": config.cnn_momentum,
                "weight_decay": config.cnn_weight_decay,
            }
        )
    elif config.cnn_optimizer == "adamw":
        groups.append({"name": "cnn", "params": cnn, "lr": config.cnn_lr, "weight_decay": config.cnn_weight_decay})
    elif cnn:
        raise ValueError("cnn_optimizer='frozen' but CNN parameters still require grad; freeze them first")
    return groups


def warmup_step_decay(optimizer: Optimizer, config: OptimizerConfig, total_steps: int) -> LambdaLR:
    """Linear warm-up from `warmup_start_factor`, then x`decay_factor` at each milestone (per optimizer step)."""
    boundaries = sorted(math.ceil(m * total_steps) for m in config.milestones)
    warmup = max(config.warmup_steps, 0)
    start = config.warmup_start_factor

    def factor(step: int) -> float:
        scale = config.decay_factor ** sum(step >= b for b in boundaries)
        if step < warmup:
            scale *= start + (1 - start) * step / warmup
        return scale

    return LambdaLR(optimizer, factor)


def frozen_cnn_modules(trunk: nn.Module, config: OptimizerConfig) -> list[nn.Module]:
    """The whole trunk when `cnn_optimizer` is "frozen", else the stem and the first `cnn_frozen_stages` residual
    stages (none by default)."""
    if config.cnn_optimizer == "frozen":
        return [trunk]
    stages = config.cnn_frozen_stages
    return list(trunk.children())[: 4 + stages] if stages else []


def configure_optimizers(
    named_parameters: Iterable[tuple[str, nn.Parameter]], cnn_prefixes: tuple[str, ...], config: OptimizerConfig,
    total_steps: Any,
) -> dict[str, Any]:  # fmt: skip
    """Lightning's `configure_optimizers` result: `AdamWSGD` over `build_param_groups` (it skips non-finite steps)
    and the warm-up / step-decay schedule stepped every optimizer step, over `total_steps` (the trainer's
    estimated_stepping_batches, which must be finite)."""
    if not isinstance(total_steps, int) and not (isinstance(total_steps, float) and total_steps != float("inf")):
        raise ValueError("the lr schedule needs a finite run: set trainer.max_steps or trainer.max_epochs")
    optimizer = AdamWSGD(build_param_groups(named_parameters, cnn_prefixes, config), betas=config.betas)
    scheduler = warmup_step_decay(optimizer, config, int(total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
