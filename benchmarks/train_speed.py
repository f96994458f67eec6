"""Training and inference speed: cnnbench's engine against the idiomatic PyTorch loop, on synthetic data.

    make bench                                       # every case, both loops; writes results/bench.{csv,md}
    .venv/bin/python benchmarks/train_speed.py --cases mnist-7498,cifar-simple

Each case is a seed model at its seed's input shape and batch size (and resnet18 at 32x32 and 224x224). The data is
random pixels of that shape (speed only; nothing here measures accuracy), labelled as synthetic in the output.

- cnnbench: the engine as `cnnbench train` runs it: uint8 data resident on the device, batches as index slices,
  normalised on the device, the precision and memory format that `train` picks (probed on the CPU), fused optimiser.
- idiomatic: what tutorials write: a torchvision-style Dataset that turns each uint8 image into a PIL image and then a
  tensor with ToTensor + Normalize, a DataLoader, fp32, contiguous tensors, `loss.item()` every batch.

Every (case, loop) pair runs in its own process so peak memory (max RSS on the CPU, max allocated on CUDA) is its own.
Throughput is the median of several timed windows after warm-up windows; the ratio compares the two loops measured in the
same run, on the same machine. Run it alone: on a 2-core machine anything else running skews it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # zoo name, or a torchvision backbone trained from scratch with a linear head
    batch_size: int
    channels: int
    size: int
    classes: int
    seed_train_images: int  # images per epoch in the seed study (for seconds per epoch)


CASES = {c.name: c for c in (
    Case("mnist-722", "mnist-722", 256, 1, 28, 10, 48_000),
    Case("mnist-7498", "mnist-7498", 256, 1, 28, 10, 48_000),
    Case("cifar-simple", "cifar-simple", 128, 3, 32, 100, 45_000),
    Case("cifar-basic", "cifar-basic", 128, 3, 32, 100, 45_000),
    Case("catsdogs-base", "catsdogs-base", 64, 3, 200, 2, 16_000),
    Case("catsdogs-deep", "catsdogs-deep", 64, 3, 200, 2, 16_000),
    Case("resnet18-32", "resnet18", 128, 3, 32, 10, 45_000),
    Case("resnet18-224", "resnet18", 32, 3, 224, 102, 4_094),
)}  # fmt: skip


def build(case: Case):
    from cnnbench.models import ModelSpec, build_model
    from cnnbench.models import build as build_spec
    from cnnbench.models.zoo import InputSpec

    spec = InputSpec(channels=case.channels, height=case.size, width=case.size, num_classes=case.classes)
    if case.model.startswith("resnet"):
        head = {"kind": "linear", "widths": [], "pool": "avg", "activation": "relu", "dropout": 0.0}
        return build_spec(ModelSpec(name=case.model, input=spec, options={"head": head, "freeze": "none"})), spec
    return build_model(case.model, spec)[0], spec


def synthetic_images(case: Case, n: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, case.channels, case.size, case.size), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, case.classes, (n,), generator=generator)


def timed_windows(run_window, case: Case, device) -> float:
    """Median images/s over timed calls of `run_window() -> images`, after warm-up calls.

    Small models keep speeding up over the first few windows (allocator and oneDNN caches warming), so they get three
    warm-up windows and five timed ones; the heavy models, whose windows take tens of seconds, and every model on a GPU
    (whose one-GPU lease is short), one and three. On CUDA the clock stops only after the device has finished the
    window's queued kernels."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warmup, windows = (3, 5) if case.size <= 32 and device.type == "cpu" else (1, 3)
    for _ in range(warmup):
        run_window()
    rates = []
    for _ in range(windows):
        sync()
        start = time.perf_counter()
        images = run_window()
        sync()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_cnnbench(case: Case, device, window_batches: int) -> dict:

    from cnnbench.spec.train import TrainConfig
    from cnnbench.data.prepare import Prepared, SplitData
    from cnnbench.engine import Preprocess, build_trainer, make_batches, predict
    from cnnbench.models import ModelSpec
    from cnnbench.runs.resources import apply_threads, choose_format

    model, spec = build(case)
    n = case.batch_size * window_batches
    images, labels = synthetic_images(case, n)
    empty = SplitData(labels=labels[:0], images=images[:0])
    manifest = {"input": vars(spec), "storage": "memory", "classes": [str(i) for i in range(case.classes)],
                "normalization": {"mean": [0.5] * case.channels, "std": [0.25] * case.channels}, "synthetic": True}
    prepared = Prepared(directory=Path("synthetic"), manifest=manifest,
                        splits={"train": SplitData(labels=labels, images=images), "val": empty, "test": empty})
    config = TrainConfig(batch_size=case.batch_size, epochs=100, device=device.type, cache_features=False)
    model_spec = ModelSpec(name=case.model, input=spec, options={})  # the format probe's cache key
    fmt = choose_format(model, model_spec, prepared, config, device)
    apply_threads(fmt)
    precision, channels_last = fmt.precision, fmt.channels_last
    trainer = build_trainer(model, prepared, config, device, precision=precision, channels_last=channels_last)
    train = timed_windows(lambda: (trainer.train_epoch(None), n)[1], case, device)
    batches = make_batches(prepared, "train", max(256, case.batch_size), device)
    preprocess = Preprocess([0.5] * case.channels, [0.25] * case.channels, device, augment=trainer.preprocess.augment,
                            channels_last=channels_last)  # fmt: skip
    infer = timed_windows(lambda: (predict(model, batches, preprocess, precision, device), n)[1], case, device)
    return {"train": train, "infer": infer, "precision": precision, "channels_last": channels_last}


def measure_idiomatic(case: Case, device, window_batches: int) -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms

    model, _ = build(case)
    model.to(device)
    n = case.batch_size * window_batches
    images, labels = synthetic_images(case, n)
    arrays = images.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision's datasets keep them
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * case.channels,
                                                                                [0.25] * case.channels)])

    class Dataset(torch.utils.data.Dataset):  # the shape of torchvision.datasets.MNIST / CIFAR10's __getitem__
        def __len__(self):
            return n

        def __getitem__(self, i):
            array = arrays[i] if case.channels == 3 else arrays[i, :, :, 0]
            return transform(Image.fromarray(array)), int(labels[i])

    loader = torch.utils.data.DataLoader(Dataset(), batch_size=case.batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_of(out, y):
        return F.binary_cross_entropy_with_logits(out[:, 0], y.float()) if out.shape[1] == 1 else F.cross_entropy(out, y)

    def train_window() -> int:
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_of(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()  # what a progress bar or a running average does every batch
        return n

    def infer_window() -> int:
        model.eval()
        with torch.no_grad():
            for x, _ in torch.utils.data.DataLoader(Dataset(), batch_size=max(256, case.batch_size)):
                model(x.to(device)).softmax(1).cpu()
        return n

    return {"train": timed_windows(train_window, case, device), "infer": timed_windows(infer_window, case, device),
            "precision": "fp32",
            "channels_last": False}


def run_one(case_name: str, loop: str, device_name: str) -> dict:
    """Measure one (case, loop) in this process and return its row."""
    import resource

    import torch

    from cnnbench.engine import select_device

    device = select_device(device_name)
    case = CASES[case_name]
    measure = measure_cnnbench if loop == "cnnbench" else measure_idiomatic
    result = measure(case, device, window_batches_for(case, device.type))
    processor = platform.processor() or platform.machine()
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 1e6
        processor = torch.cuda.get_device_name(device)
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux
    return {"case": case.name, "loop": loop, "batch_size": case.batch_size,
            "input": f"{case.channels}x{case.size}x{case.size}", "train_images_per_s": round(result["train"], 1),
            "infer_images_per_s": round(result["infer"], 1),
            "seconds_per_seed_epoch": round(case.seed_train_images / result["train"], 1),
            "peak_memory_mb": round(peak_mb, 1), "precision": result["precision"],
            "channels_last": result["channels_last"], "threads": torch.get_num_threads(), "device": device.type,
            "processor": processor,
            "data": "synthetic"}  # fmt: skip


def measure_in_process(name: str, loop: str, device: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", name, loop, "--device", device], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"{name}/{loop} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def window_batches_for(case: Case, device: str) -> int:
    """Enough batches for a timed window of a second or more on a small CPU, few for the heavy models; a GPU runs
    hundreds of small batches a second, so its windows hold more of them to stay well above the clock's noise."""
    if device == "cuda":
        return 40 if case.size <= 32 else 8
    return 24 if case.size <= 32 else 4


def main() -> None:
    parser = argparse.ArgumentParser(description="cnnbench engine vs the idiomatic PyTorch loop, synthetic data")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--repeats", type=int, default=1, help="processes per (case, loop); the median is reported "
                        "(this machine varies by up to 25%% between processes)")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "LOOP"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        case = CASES[args.one[0]]
        print(json.dumps(run_one(case.name, args.one[1], args.device)))
        return
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    rows = []
    for name in names:
        for loop in ("idiomatic", "cnnbench"):
            repeats = [measure_in_process(name, loop, args.device) for _ in range(args.repeats)]
            row = sorted(repeats, key=lambda r: r["train_images_per_s"])[len(repeats) // 2]  # the median run
            row["repeats"] = args.repeats
            rows.append(row)
            print(f"{name:<14} {loop:<9} train {row['train_images_per_s']:>9,.0f} img/s  infer "
                  f"{row['infer_images_per_s']:>9,.0f} img/s  peak {row['peak_memory_mb']:,.0f} MB  "
                  f"({row['precision']}, {'channels_last' if row['channels_last'] else 'contiguous'})", flush=True)
    write(rows, args.out)


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per measurement, written atomically (against_keras.py writes its own rows the same way)."""
    from cnnbench.core.storage import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def write(rows: list[dict], out: Path) -> None:
    import torch

    from cnnbench.core.storage import write_text_atomic

    write_csv(rows, out / "bench.csv")
    by = {(r["case"], r["loop"]): r for r in rows}
    lines = [
        f"Synthetic data (random pixels of each seed's shape); {rows[0]['processor']}, "
        f"{torch.get_num_threads()} CPU threads, {rows[0]['device']}, torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| case | batch | input | idiomatic train img/s | cnnbench train img/s | ratio | cnnbench infer img/s "
        "| ratio | s/epoch (seed size), cnnbench | peak MB idiomatic / cnnbench | cnnbench format |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        base, ours = by.get((case, "idiomatic")), by.get((case, "cnnbench"))
        if not (base and ours):
            continue
        lines.append(
            f"| {case} | {ours['batch_size']} | {ours['input']} | {base['train_images_per_s']:,.0f} | "
            f"{ours['train_images_per_s']:,.0f} | {ours['train_images_per_s'] / base['train_images_per_s']:.2f}x | "
            f"{ours['infer_images_per_s']:,.0f} | {ours['infer_images_per_s'] / base['infer_images_per_s']:.2f}x | "
            f"{ours['seconds_per_seed_epoch']:,.1f} | {base['peak_memory_mb']:,.0f} / {ours['peak_memory_mb']:,.0f} | "
            f"{ours['precision']}, {'channels_last' if ours['channels_last'] else 'contiguous'}, {ours['threads']} threads |"
        )  # fmt: skip
    write_text_atomic(out / "bench.md", "\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
