"""PyTorch's BatchNorm2d against cnnbench's (cnnbench/models/layers.py) on channels_last inputs, training mode.

    .venv/bin/python benchmarks/batchnorm_speed.py                    # mnist-7498's and other shapes, bf16 and fp32
    .venv/bin/python benchmarks/batchnorm_speed.py --quick            # mnist-7498's first BatchNorm only (seconds)

One forward and backward pass of each layer on the same tensor, timed in windows that alternate between the two
layers (a disturbance lands on both), with the allocator setting the trainer uses. The figure is the median window in
milliseconds per pass; the ratio is PyTorch's over cnnbench's. It decides `layers.NARROW_CHANNELS`: below it, the layer
takes cnnbench's path; cnnbench's path is timed at every width, so the shapes with 16 channels show why it stops there.
Run it alone: on a 2-core machine anything else running skews it.
"""

from __future__ import annotations

import argparse
import statistics
import time

SHAPES = [  # (batch, channels, side): mnist-7498's three, then narrow layers at other sizes
    (256, 8, 13), (256, 16, 5), (256, 32, 1), (256, 4, 13), (256, 12, 13), (256, 16, 13), (32, 8, 100),
]  # fmt: skip
QUICK = [(256, 8, 13)]


def time_pair(shape: tuple[int, int, int], dtype, windows: int, passes: int) -> tuple[float, float]:
    import torch
    from torch import nn

    from cnnbench.models.layers import _BatchNormTraining

    batch, channels, side = shape
    torch.manual_seed(0)
    x = torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn_like(x)
    theirs = nn.BatchNorm2d(channels).train()
    weight, bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def ours(x):  # cnnbench's path at any width (the layer itself takes it only below NARROW_CHANNELS)
        return _BatchNormTraining.apply(x, weight, bias, 1e-5)[0]

    layers = [theirs, ours]

    def window(layer) -> float:
        start = time.perf_counter()
        for _ in range(passes):
            layer(x).backward(grad)
        return (time.perf_counter() - start) / passes * 1e3

    for layer in layers:  # warm-up
        window(layer)
    times: list[list[float]] = [[], []]
    for w in range(windows):
        for i in ((0, 1) if w % 2 == 0 else (1, 0)):
            times[i].append(window(layers[i]))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTorch's BatchNorm2d against cnnbench's, channels_last, training")
    parser.add_argument("--quick", action="store_true", help="mnist-7498's first BatchNorm only")
    parser.add_argument("--windows", type=int, default=9, help="timed windows per layer (default 9)")
    parser.add_argument("--passes", type=int, default=30, help="forward and backward passes per window (default 30)")
    args = parser.parse_args()
    if args.windows < 1 or args.passes < 1:
        parser.error("--windows and --passes must be at least 1")

    import torch

    from cnnbench.engine.autotune import machine
    from cnnbench.engine.device import keep_freed_memory_for_reuse
    from cnnbench.models.layers import NARROW_CHANNELS

    keep_freed_memory_for_reuse()  # as the trainer runs
    about = machine()
    print(f"{about['cpu']} ({', '.join(about['flags']) or 'no listed flags'}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {args.windows} alternated windows of {args.passes} passes")
    print("\n| input | dtype | PyTorch ms | cnnbench's path ms | PyTorch / cnnbench | the layer takes |")
    print("|---|---|---:|---:|---:|---|")
    for shape in QUICK if args.quick else SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            theirs, ours = time_pair(shape, dtype, args.windows, args.passes)
            path = "cnnbench's" if shape[1] < NARROW_CHANNELS else "PyTorch's"
            print(f"| {shape[0]}x{shape[1]}x{shape[2]}x{shape[2]} | {str(dtype).removeprefix('torch.')} | "
                  f"{theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x | {path} |", flush=True)


if __name__ == "__main__":
    main()
