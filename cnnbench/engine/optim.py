"""What the training step optimises with: optimizers and their parameter groups, the learning-rate schedule, the
weights under an L1/L2 penalty, and weight initialisation.

These are the parts a TrainConfig's optimisation options select; they are built once by `build_trainer` and know
nothing of the loop, so each can be tested and resumed on its own.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.spec.train import TrainConfig

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda groups, c, fused: torch.optim.Adam(groups, lr=c.lr, betas=(c.beta1, c.beta2),
                                                      weight_decay=c.weight_decay, fused=fused),
    "adamw": lambda groups, c, fused: torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2),
                                                        weight_decay=c.weight_decay, fused=fused),
    "sgd": lambda groups, c, fused: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum,
                                                    nesterov=c.nesterov and c.momentum > 0,
                                                    weight_decay=c.weight_decay, fused=fused),
    "rmsprop": lambda groups, c, fused: torch.optim.RMSprop(groups, lr=c.lr, momentum=c.momentum,
                                                            weight_decay=c.weight_decay),  # torch has no fused RMSprop
}  # fmt: skip


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters; with backbone_lr_mult != 1 the body (everything but `head.`, the name every cnnbench
    model gives its classifier) gets its own group at lr x mult."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.backbone_lr_mult == 1.0:
        return [{"params": [p for _, p in named]}]
    head = [p for n, p in named if n.startswith("head.")]
    body = [p for n, p in named if not n.startswith("head.")]
    return [g for g in ({"params": body, "lr": config.lr * config.backbone_lr_mult}, {"params": head, "lr": config.lr})
            if g["params"]]  # fmt: skip


class LRSchedule:
    """Learning-rate factor per optimizer step: warmup x (constant | step | cosine | onecycle), x a plateau factor.

    Written here rather than composed from torch.optim.lr_scheduler because warmup + ReduceLROnPlateau do not chain
    there, and because its whole state is three numbers that resume exactly. `onecycle` follows torch's OneCycleLR
    defaults (rise from lr/25 over 30% of the steps, cosine down to lr/1e4).
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.plateau_factor = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0

    def factor(self, step: int) -> float:
        c = self.config
        epoch = step / self.steps_per_epoch
        warmup_steps = c.warmup_epochs * self.steps_per_epoch
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if c.schedule == "step":
            shape = c.gamma ** int(epoch // c.step_size)
        elif c.schedule == "cosine":
            progress = min(1.0, max(0.0, (step - warmup_steps) / max(1.0, self.total_steps - warmup_steps)))
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif c.schedule == "onecycle":
            rise = 0.3 * self.total_steps
            if step < rise:
                shape = 1 / 25 + (1 - 1 / 25) * step / rise
            else:
                progress = min(1.0, (step - rise) / max(1.0, self.total_steps - rise))
                shape = 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * progress))
            warm = 1.0
        else:
            shape = 1.0
        return warm * shape * self.plateau_factor

    def end_epoch(self, val_loss: float) -> None:
        if self.config.schedule != "plateau" or math.isnan(val_loss):
            return
        if val_loss < self.plateau_best - 1e-12:
            self.plateau_best, self.plateau_bad_epochs = val_loss, 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs >= self.config.plateau_patience:
                self.plateau_factor *= self.config.gamma
                self.plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, float]:
        return {"plateau_factor": self.plateau_factor, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}  # fmt: skip

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])


def penalized_weights(model: nn.Module, pattern: str) -> list[torch.Tensor]:
    """Weights (not biases, not BatchNorm) of conv and linear layers whose module name matches `pattern`."""
    chosen = [
        module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and fnmatch.fnmatch(name, pattern) and module.weight.requires_grad
    ]
    if not chosen:
        raise UsageError(f"--reg-layers {pattern!r} matches no conv or linear layer of this model")
    return chosen


def initialise(model: nn.Module, scheme: str) -> None:
    """`glorot`: Keras' default (Glorot-uniform kernels, zero biases); `he`: He-uniform (S4's ReLU layers)."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "glorot":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
