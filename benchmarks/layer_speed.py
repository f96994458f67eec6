"""PyTorch's layers against cnnbench's own (cnnbench/models/layers.py) on channels_last inputs: one forward and backward
pass, in training mode.

    .venv/bin/python benchmarks/layer_speed.py                        # both layers at the zoo's shapes, bf16, fp32
    .venv/bin/python benchmarks/layer_speed.py --layer maxpool        # one of them: batchnorm or maxpool
    .venv/bin/python benchmarks/layer_speed.py --quick                # mnist-7498's first of each (seconds)

Each pair runs on the same tensor, timed in windows that alternate between the two layers (a disturbance lands on
both), with the allocator setting the trainer uses. The figure is the median window in milliseconds per pass; the ratio
is PyTorch's over cnnbench's.
- batchnorm: decides `layers.NARROW_CHANNELS`. Below it the layer takes cnnbench's path; cnnbench's path is timed at
  every width, so the shapes with 16 channels show why it stops there.
- maxpool: the 2x2 pooling of every zoo model, with the C++ kernel (cnnbench/models/native.py, compiled on first use).
Run it alone: on a 2-core machine anything else running skews it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

SHAPES = {  # (batch, channels, side)
    # mnist-7498's three, then narrow layers at other sizes
    "batchnorm": [(256, 8, 13), (256, 16, 5), (256, 32, 1), (256, 4, 13), (256, 12, 13), (256, 16, 13), (32, 8, 100)],
    # the pooling inputs of mnist-7498 (batch 256), cifar-simple and cifar-basic (128) and catsdogs-base (64)
    "maxpool": [(256, 8, 26), (256, 16, 11), (256, 32, 3), (128, 32, 30), (128, 64, 13), (128, 64, 30),
                (128, 128, 14), (64, 32, 200), (64, 128, 50)],
}  # fmt: skip
QUICK = {"batchnorm": [(256, 8, 13)], "maxpool": [(256, 8, 26)]}


def layer_pair(layer: str, channels: int) -> tuple[Callable, Callable]:
    """(PyTorch's, cnnbench's) as functions of the input."""
    import torch
    from torch import nn

    from cnnbench.models.layers import _BatchNormTraining, _MaxPool2x2

    if layer == "maxpool":
        return nn.MaxPool2d(2), _MaxPool2x2.apply
    weight, bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def ours(x):  # cnnbench's path at any width (the layer itself takes it only below NARROW_CHANNELS)
        return _BatchNormTraining.apply(x, weight, bias, 1e-5)[0]

    return nn.BatchNorm2d(channels).train(), ours


def time_pair(layer: str, shape: tuple[int, int, int], dtype, windows: int, passes: int) -> tuple[float, float]:
    import torch

    batch, channels, side = shape
    torch.manual_seed(0)
    x = torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    layers = layer_pair(layer, channels)
    grad = torch.randn_like(layers[0](x))

    def window(run) -> float:
        start = time.perf_counter()
        for _ in range(passes):
            run(x).backward(grad)
        return (time.perf_counter() - start) / passes * 1e3

    for run in layers:  # warm-up
        window(run)
    times: list[list[float]] = [[], []]
    for w in range(windows):
        for i in ((0, 1) if w % 2 == 0 else (1, 0)):
            times[i].append(window(layers[i]))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTorch's layers against cnnbench's, channels_last, training")
    parser.add_argument("--layer", choices=["all", *SHAPES], default="all", help="which layer (default: all)")
    parser.add_argument("--quick", action="store_true", help="mnist-7498's first BatchNorm and pooling only")
    parser.add_argument("--windows", type=int, default=9, help="timed windows per layer (default 9)")
    parser.add_argument("--passes", type=int, default=30, help="forward and backward passes per window (default 30)")
    args = parser.parse_args()
    if args.windows < 1 or args.passes < 1:
        parser.error("--windows and --passes must be at least 1")

    import torch

    from cnnbench.engine.autotune import machine
    from cnnbench.engine.device import keep_freed_memory_for_reuse
    from cnnbench.models import native
    from cnnbench.models.layers import NARROW_CHANNELS

    layers = list(SHAPES) if args.layer == "all" else [args.layer]
    if "maxpool" in layers and native.kernels() is None:
        parser.error("the C++ pooling kernel is not available here (no C++ compiler, or CNNBENCH_NATIVE=0)")
    keep_freed_memory_for_reuse()  # as the trainer runs
    about = machine()
    print(f"{about['cpu']} ({', '.join(about['flags']) or 'no listed flags'}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {args.windows} alternated windows of {args.passes} passes")
    print("\n| layer | input | dtype | PyTorch ms | cnnbench's path ms | PyTorch / cnnbench | the layer takes |")
    print("|---|---|---|---:|---:|---:|---|")
    for layer in layers:
        for shape in (QUICK if args.quick else SHAPES)[layer]:
            for dtype in (torch.bfloat16, torch.float32):
                theirs, ours = time_pair(layer, shape, dtype, args.windows, args.passes)
                path = "cnnbench's" if layer == "maxpool" or shape[1] < NARROW_CHANNELS else "PyTorch's"
                print(f"| {layer} | {shape[0]}x{shape[1]}x{shape[2]}x{shape[2]} | {str(dtype).removeprefix('torch.')} "
                      f"| {theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x | {path} |", flush=True)


if __name__ == "__main__":
    main()
