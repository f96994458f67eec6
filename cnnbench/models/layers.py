"""Layers the zoo and the fine-tuning heads build with, where PyTorch's own is slow on a CPU.

`Dropout` is `nn.Dropout` (same class hierarchy, no parameters, same state dict) with a faster training-mode mask on a
CPU. PyTorch's CPU dropout draws one Bernoulli sample per element; measured on a 2-core CPU for S4's first dropout
(64x32x100x100 bf16, forward and backward) it took 235 ms against 115 ms here, and the whole catsdogs-base training
step ran about 1.1x faster (benchmarks/train_speed.py). On other devices it is PyTorch's dropout unchanged.

`BatchNorm2d` is `nn.BatchNorm2d` (same class hierarchy, parameters, buffers and state dict) with a faster training step
on a CPU for channels_last inputs of fewer than 16 channels. PyTorch's channels_last kernel works across the channels
of one pixel at a time, a vector per pixel, and a channel count that is not a multiple of 16 leaves it in scalar tail
loops: on a 2-core AMD EPYC with AVX-512 the forward and backward of mnist-7498's first BatchNorm (256x8x13x13) took
1.7-1.8 ms in bf16 and 1.4 ms in fp32, against 0.5-0.6 ms here, and 0.5 ms for 16 channels, where PyTorch's is faster
than this (benchmarks/layer_speed.py). Everywhere else, and while tracing or exporting, it is PyTorch's own.

`MaxPool2d` is `nn.MaxPool2d` with a C++ kernel (native.py, compiled on first use) for the zoo's 2x2, stride-2 pooling
of channels_last bf16 and fp32 tensors on a CPU. PyTorch's CPU kernel keeps an int64 index per output value and
scatters the gradient into a zeroed input-sized tensor, one channel at a time; this one keeps a one-byte place in the
window and writes each input gradient once, and its results are bit for bit PyTorch's (ties and NaNs pick the same
element). Measured on a 2-core AMD EPYC, forward and backward: cifar-simple's first pooling (128x32x30x30, bf16)
2-3 ms against 0.2 ms of kernel time (benchmarks/layer_speed.py); the engine's training step, in alternated processes,
1.22x faster for cifar-simple and 1.20x for mnist-7498 (benchmarks/train_speed.py). Without a compiler it is
PyTorch's own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from cnnbench.models import native

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


# Fewer channels than this take the path below; from 16 on PyTorch's channels_last kernel fills its vectors and wins
# (measured at 4, 8, 12 and 16 channels: benchmarks/layer_speed.py).
NARROW_CHANNELS = 16


class _BatchNormTraining(torch.autograd.Function):
    """Training-mode batch normalisation of a channels_last (N, C, H, W) tensor, viewed as a (pixels, C) matrix.

    Every step is a whole-tensor operation over contiguous memory in fp32 (a bf16 input is widened once, as PyTorch's
    mixed-precision kernel computes in fp32): the per-channel sums reduce the matrix's rows, and the normalised input
    is kept for the backward pass, which needs only the two per-channel sums of the gradient. The variance is taken
    about the mean (two passes), not as E[x^2] - E[x]^2, which loses its digits when the mean is large."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,  # type: ignore[override]
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        batch, channels, height, width = x.shape
        pixels = batch * height * width
        normalized = x.permute(0, 2, 3, 1).reshape(pixels, channels).float()  # a view of channels_last memory
        mean = normalized.sum(0).div_(pixels)
        normalized = normalized - mean  # a new tensor: x itself is never written
        var = normalized.square().sum(0).div_(pixels)  # biased, as the normalisation uses it
        rstd = (var + eps).rsqrt_()
        normalized.mul_(rstd)
        # The output is a tensor of its own, not a view of one made here: a ReLU(inplace=True) after it (fit models)
        # may then write into it. Written in x's dtype straight from the fp32 arithmetic.
        y = torch.empty_like(x, memory_format=torch.channels_last)
        rows = y.permute(0, 2, 3, 1).view(pixels, channels)
        if weight is not None and bias is not None:
            torch.addcmul(bias, normalized, weight, out=rows)
        else:
            rows.copy_(normalized)
        ctx.save_for_backward(normalized, rstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor, _mean: None, _var: None):  # type: ignore[override]
        normalized, rstd, weight = ctx.saved_tensors
        batch, channels, height, width = grad_y.shape
        pixels = batch * height * width
        grad = grad_y.permute(0, 2, 3, 1).reshape(pixels, channels).float()  # copies only if not channels_last
        grad_bias = grad.sum(0)
        grad_weight = (grad * normalized).sum(0)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dx = w * rstd * (g - mean(g) - xhat * mean(g * xhat)), per channel: g * a + xhat * b + c
            scale = rstd * weight if weight is not None else rstd
            grad_x = torch.addcmul(scale * grad_bias * (-1.0 / pixels), grad, scale)
            grad_x.addcmul_(normalized, scale * grad_weight * (-1.0 / pixels))
            grad_x = grad_x.to(grad_y.dtype).view(batch, height, width, channels).permute(0, 3, 1, 2)
        affine = weight is not None
        return grad_x, grad_weight if affine else None, grad_bias if affine else None, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d with a faster training step for narrow channels_last inputs on a CPU (see the module
    docstring); the same results within rounding, running statistics included."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._narrow_channels_last_training(x):
            return super().forward(x)
        y, mean, var = _BatchNormTraining.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():  # what PyTorch's kernel does: the unbiased variance into the running estimate
                self.num_batches_tracked.add_(1)
                values = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (values / (values - 1)), self.momentum)
        return y

    def _narrow_channels_last_training(self, x: torch.Tensor) -> bool:
        return (not _exporting() and self.training and self.momentum is not None and x.device.type == "cpu"
                and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16) and x.shape[1] < NARROW_CHANNELS
                and x.numel() > x.shape[1]  # one value per channel: PyTorch's own raises its error
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())


class _MaxPool2x2(torch.autograd.Function):
    """2x2, stride-2 max pooling of a channels_last (N, C, H, W) tensor by native.py's kernels; H or W odd drops the
    last row or column, as PyTorch's floor mode does."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        lib = native.kernels()
        batch, channels, height, width = x.shape
        out = torch.empty((batch, channels, height // 2, width // 2), dtype=x.dtype, memory_format=torch.channels_last)
        place = torch.empty((batch, height // 2, width // 2, channels), dtype=torch.uint8)  # 0-3 in each window
        forward = lib.max_pool2x2_forward_bf16 if x.dtype == torch.bfloat16 else lib.max_pool2x2_forward_f32
        forward(x.data_ptr(), out.data_ptr(), place.data_ptr(), batch, height, width, channels, torch.get_num_threads())
        ctx.save_for_backward(place)
        ctx.input_shape, ctx.dtype = x.shape, x.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        lib = native.kernels()
        (place,) = ctx.saved_tensors
        batch, channels, height, width = ctx.input_shape
        grad_out = grad_out.to(ctx.dtype).contiguous(memory_format=torch.channels_last)
        grad_in = torch.empty(ctx.input_shape, dtype=ctx.dtype, memory_format=torch.channels_last)
        backward = lib.max_pool2x2_backward_16 if grad_in.element_size() == 2 else lib.max_pool2x2_backward_32
        backward(grad_out.data_ptr(), place.data_ptr(), grad_in.data_ptr(), batch, height, width, channels,
                 torch.get_num_threads())  # fmt: skip
        return grad_in


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d with a faster 2x2, stride-2 pooling of channels_last inputs on a CPU (see the module docstring);
    the same results, bit for bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxPool2x2.apply(x) if self._native(x) else super().forward(x)

    def _native(self, x: torch.Tensor) -> bool:
        return (not _exporting() and _pair(self.kernel_size) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.padding) == (0, 0)
                and _pair(self.dilation) == (1, 1) and not self.ceil_mode and not self.return_indices
                and x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
                and min(x.shape[2:]) >= 2 and x.numel() > 0 and x.is_contiguous(memory_format=torch.channels_last)
                and native.kernels() is not None)  # fmt: skip


def _exporting() -> bool:
    """Tracing, scripting or compiling: the graph must hold PyTorch's own operators (ONNX export, torch.compile). Asked
    first, so that no shape test below it is recorded by a trace."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _dense(x: torch.Tensor) -> bool:
    """Laid out contiguously, as NCHW or NHWC (channels_last): what the mask's layout covers."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
