"""Exact parameter accounting, MACs and size: what `budget`, `models` and every run's summary print.

Keras counts BatchNorm as four values per channel (gamma, beta and two moving statistics); PyTorch keeps the moving
statistics as buffers. `keras_total` = trainable + frozen + BatchNorm statistics, so a PyTorch model can be compared
with a Keras summary's "Total params" line figure for figure.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnbench.models.zoo import InputSpec

# The layers that multiply and accumulate in every family's models; BatchNorm, pooling and activations do no MACs.
_MAC_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_parameters(model: nn.Module) -> dict[str, int | float]:
    """Trainable, frozen, BatchNorm statistics, the Keras-style total, and how many parameters pruning left.

    `nonzero` counts every parameter that is not exactly zero. `sparsity` is the zeros in weight tensors (convolution
    kernels and dense matrices, the tensors pruning zeroes) over all parameters: a fresh model has none, whereas its
    zero-initialised biases and BatchNorm shifts would make a count over every tensor read as sparse.
    """
    parameters = list(model.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    frozen = sum(p.numel() for p in parameters if not p.requires_grad)
    bn_statistics = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    nonzero = zero_weights = 0
    for parameter in parameters:
        kept = int(torch.count_nonzero(parameter.detach()))
        nonzero += kept
        if parameter.dim() >= 2:
            zero_weights += parameter.numel() - kept
    total = trainable + frozen
    return {
        "trainable": trainable,
        "frozen": frozen,
        "bn_statistics": bn_statistics,
        "keras_total": total + bn_statistics,
        "nonzero": nonzero,
        "sparsity": zero_weights / total if total else 0.0,
    }


def count_macs(model: nn.Module, spec: InputSpec) -> int:
    """Multiply-accumulates of one forward pass on one image, counted by forward hooks on convolutions and dense layers.

    Each such layer does output elements x (input channels per group x kernel area, or input features) MACs, which is
    exactly what torch.utils.flop_counter.FlopCounterMode counts for them (halved: it counts 2 flops per MAC; biases
    are not counted). Hooks are used because FlopCounterMode imports torch._dynamo, a second of start-up that
    `cnnbench budget` (a CI gate) would otherwise pay on every call.
    """
    macs = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        # weight is (out, in/groups, *kernel) for a convolution and (out, in) for a dense layer: each output element
        # takes one multiply-accumulate per element of its row of the weight.
        macs += output.numel() * math.prod(module.weight.shape[1:])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _MAC_LAYERS)]
    parameter = next(model.parameters(), None)
    probe = torch.zeros(1, spec.channels, spec.height, spec.width,
                        device=parameter.device if parameter is not None else None)  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return macs


def size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers (what a checkpoint's weights take), in MB (10^6 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def budget(model: nn.Module, spec: InputSpec) -> dict[str, float | int]:
    return {**count_parameters(model), "macs": count_macs(model, spec), "size_mb": round(size_mb(model), 4)}
