"""The `train` section of a run specification (cnnbench/spec.py): how a model is trained, not which model or data.

One frozen, keyword-only dataclass, saved in every run's config.json under "train"; `validate_config` checks its values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cnnbench.core.errors import UsageError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
MONITORS = ("val_loss", "val_acc")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    l1: float = 0.0  # penalty on the weights of the layers matched by reg_layers (Keras kernel_regularizer)
    l2: float = 0.0
    reg_layers: str = "*"  # glob over module names, e.g. "head.*"
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_size: int = 30  # step schedule: epochs between decays
    gamma: float = 0.1  # step and plateau: decay factor
    plateau_patience: int = 5  # plateau: epochs without val-loss improvement before decaying
    label_smoothing: float = 0.0
    clip_grad: float | None = None  # max global gradient norm
    patience: int = 0  # early stopping patience in epochs; 0 = off
    monitor: str = "val_loss"
    min_delta: float = 0.0
    augment: str = "none"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"
    channels_last: bool | None = None  # None: on for CUDA; measured on a CPU (autotune)
    threads: int | None = None  # CPU threads for this process; None: measured (autotune)
    compile: bool = False
    max_params: int | None = None
    backbone_lr_mult: float = 1.0  # fine-tuning: the backbone's lr is lr x this (discriminative learning rates)
    cache_features: bool = True  # fine-tuning: with a frozen backbone and no augmentation, compute features once
    head_epochs: int = 0  # fine-tuning: train the head alone for this many epochs first (a parent run)
    head_lr: float | None = None  # fine-tuning: the head-only phase's lr; None: lr
    eval_batch_size: int = 1024
    workers: int | None = None  # DataLoader workers for file-index datasets; None: up to 4
    tensorboard: bool = False  # event files in RUN/tb (runs/tensorboard.py); changes nothing about the training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def validate_config(config: TrainConfig) -> TrainConfig:
    def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise UsageError(f"bad --{name.replace('_', '-')} {value!r}: choose from {', '.join(allowed)}")

    def positive(name: str, value: float | int | None, *, zero_ok: bool = False) -> None:
        if value is not None and (not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok)):
            need = "zero or more" if zero_ok else "greater than zero"
            raise UsageError(f"bad --{name.replace('_', '-')} {value}: expected a number {need}")

    choice("optimizer", config.optimizer, OPTIMIZERS)
    choice("schedule", config.schedule, SCHEDULES)
    choice("monitor", config.monitor, MONITORS)
    choice("precision", config.precision, PRECISIONS)
    for name in ("epochs", "batch_size", "lr", "eval_batch_size", "step_size", "plateau_patience", "max_params"):
        positive(name, getattr(config, name))
    for name in ("batch_size", "eval_batch_size"):  # a tensor dimension; far beyond any dataset anyway
        if getattr(config, name) > 2**31 - 1:
            raise UsageError(f"bad --{name.replace('_', '-')} {getattr(config, name)}: expected at most 2147483647")
    for name in ("weight_decay", "l1", "l2", "warmup_epochs", "patience", "min_delta", "momentum", "label_smoothing",
                 "backbone_lr_mult"):  # fmt: skip
        positive(name, getattr(config, name), zero_ok=True)
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise UsageError(f"bad --{name} {getattr(config, name)}: expected a value in [0, 1)")
    if config.clip_grad is not None:
        positive("clip_grad", config.clip_grad)
    if not 0.0 <= config.label_smoothing < 1.0:
        raise UsageError(f"bad --label-smoothing {config.label_smoothing}: expected a value in [0, 1)")
    if not 0.0 < config.gamma <= 1.0:
        raise UsageError(f"bad --gamma {config.gamma}: expected a decay factor in (0, 1]")
    if not 0 <= config.seed < 2**32:  # what numpy's and torch's seeding accept
        raise UsageError(f"bad --seed {config.seed}: expected a whole number from 0 to 4294967295")
    if config.head_epochs < 0:
        raise UsageError(f"bad --head-epochs {config.head_epochs}: expected zero or more")
    if config.head_lr is not None:
        positive("head_lr", config.head_lr)
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"bad --threads {config.threads}: expected 1 or more")
    if config.workers is not None and config.workers < 0:
        raise UsageError(f"bad --workers {config.workers}: expected 0 or more")
    from cnnbench.data.augment import parse_augment

    parse_augment(config.augment)  # raises a UsageError naming the bad item
    return config
