"""Layers the zoo and the fine-tuning heads build with, where PyTorch's own is slow on a CPU.

`Dropout` is `nn.Dropout` (same class hierarchy, no parameters, same state dict) with a faster training-mode mask on a
CPU. PyTorch's CPU dropout draws one Bernoulli sample per element; measured on a 2-core CPU for S4's first dropout
(64x32x100x100 bf16, forward and backward) it took 235 ms against 115 ms here, and the whole catsdogs-base training
step ran about 1.1x faster (benchmarks/train_speed.py). On other devices it is PyTorch's dropout unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# The mask compares 16 random bits per element with a threshold: a 64-bit draw serves four elements.
_LEVELS = 1 << 16


def _keep_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A boolean keep-mask in `x`'s memory layout, and the scale that keeps the expected value unchanged.

    The drop probability is p rounded to a multiple of 1/65,536 (0.2 becomes 0.199997), and the scale is exact for
    that probability, so E[output] = input as with PyTorch's dropout."""
    dropped = round(p * _LEVELS)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)  # full 64 bits
    bits = words.view(torch.int16)[:n]  # uniform over [-32768, 32767]
    keep = bits >= dropped - _LEVELS // 2
    # Lay the mask out as x is laid out in memory (channels_last is NHWC), so the multiply runs over contiguous memory.
    if not x.is_contiguous():  # channels_last (see _dense)
        batch, channels, height, width = x.shape
        keep = keep.view(batch, height, width, channels).permute(0, 3, 1, 2)
    else:
        keep = keep.view(x.shape)
    return keep, _LEVELS / (_LEVELS - dropped)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        keep, scale = _keep_mask(x, p)
        multiplier = keep.to(x.dtype).mul_(scale)  # kept for the backward pass, as PyTorch's dropout keeps its mask
        ctx.save_for_backward(multiplier)
        return x * multiplier

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None


class Dropout(nn.Dropout):
    """nn.Dropout with a faster mask on a CPU (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * _LEVELS)  # p very near 0 or 1 rounds to none or all: PyTorch's dropout does those
        fast = self.training and 0 < dropped < _LEVELS and not self.inplace and x.device.type == "cpu" and _dense(x)
        return _MaskedScale.apply(x, self.p) if fast else super().forward(x)


def _dense(x: torch.Tensor) -> bool:
    """Laid out contiguously, as NCHW or NHWC (channels_last): what the mask's layout covers."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
