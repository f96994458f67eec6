"""Exact parameter accounting, MACs and size: what `budget`, `models` and every run's summary print.

Keras counts BatchNorm as four values per channel (gamma, beta and two moving statistics); PyTorch keeps the moving
statistics as buffers. `keras_total` = trainable + frozen + BatchNorm statistics, so a PyTorch model can be compared
with a Keras summary's "Total params" line figure for figure.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnbench.models.zoo import InputSpec


def count_parameters(model: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_statistics = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return {
        "trainable": trainable,
        "frozen": frozen,
        "bn_statistics": bn_statistics,
        "keras_total": trainable + frozen + bn_statistics,
    }


def count_macs(model: nn.Module, spec: InputSpec) -> int:
    """Multiply-accumulates of one forward pass on one image, from torch's own flop counter (2 flops per MAC)."""
    probe = torch.zeros(1, spec.channels, spec.height, spec.width)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(probe)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers (what a checkpoint's weights take), in MB (10^6 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def budget(model: nn.Module, spec: InputSpec) -> dict[str, float | int]:
    return {**count_parameters(model), "macs": count_macs(model, spec), "size_mb": round(size_mb(model), 4)}
