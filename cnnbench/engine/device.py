"""Where and how a model runs: the device, the precision and its autocast, and the CPU's memory and thread settings.

Kept apart from the loop because every part that runs a model (the trainer, prediction, the CPU format probe) must make
the same choices: a probe that timed steps another way than the trainer runs them would promise a speed no run gets.
On CUDA a run takes bf16 autocast where supported (else fp16 with a gradient scaler) and channels_last; on the CPU the
probe (autotune.py) measures which precision, memory format and thread count win.
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.core.errors import UsageError


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"bad --device {requested!r}: choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {requested}: MPS is not available on this machine; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"bad --device {requested!r}: choose auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# PyTorch's default thread count in this process, read at import, before any run applies its own (--threads, autotune)
DEFAULT_THREADS = torch.get_num_threads()


@functools.cache  # once per process
def keep_freed_memory_for_reuse() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the system; once per process.

    PyTorch's CPU tensors come from malloc, and glibc serves each large one (>= 128 KiB, then up to 32 MiB as its
    threshold adapts) with a fresh mmap that it unmaps on free: every training step then pays the kernel to fault in
    and zero its activations again. For S4's 200x200 models that was most of the system time: catsdogs-base trained
    at 60 img/s with 5.2 s of system time per 8 steps, and at 100 img/s with 0.1 s after this call (2-core CPU,
    benchmarks/train_speed.py). The cost: memory freed during training is kept for reuse, not handed back.
    CNNBENCH_MALLOC=system leaves malloc as it is. Returns whether it applied (glibc only).
    """
    if os.environ.get("CNNBENCH_MALLOC", "").lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def dense_layers_in_fp32(model: nn.Module) -> nn.Module:
    """Run the model's nn.Linear layers in fp32 under CPU bf16 autocast; convolutions keep bf16.

    Autocast casts a Linear weight to bf16 on every forward pass and its bf16 gradient back to fp32 (from a transposed
    layout, which is slow on a CPU): for S4's 80,000x256 dense layer at batch 64 the copies cost more than the bf16
    matmul saves, and the catsdogs-base training step ran about 1.2x faster with it in fp32 (2-core CPU; no change
    measured for the small models). The layer's own forward is replaced on the instance: same module, same state dict.
    """
    for module in model.modules():
        if type(module) is nn.Linear:  # a subclass keeps its own forward
            module.forward = functools.partial(_linear_fp32, module)  # type: ignore[method-assign]
    return model


def _linear_fp32(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return F.linear(x.to(module.weight.dtype), module.weight, module.bias)
