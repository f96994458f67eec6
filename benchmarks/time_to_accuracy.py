"""Seconds to reach a stated test accuracy: cnnbench's engine against the idiomatic PyTorch loop (and Keras).

    .venv/bin/python benchmarks/time_to_accuracy.py [--target 0.95] [--model mnist-7498] [--seeds 3]
    .venv/bin/python benchmarks/time_to_accuracy.py --keras-python keras-env/bin/python   # Keras too (issue 21)
    .venv/bin/python benchmarks/time_to_accuracy.py --dataset shapes --size 32 --model cifar-simple --target 0.8 \
        --batch-size 128 --lr 1e-3 --device cuda     # a CIFAR-size model on the generated colour stand-in

The same model, optimiser (Adam), learning rate, batch size and data (scikit-learn's digits at 28x28, the prepared
split) trained two ways: cnnbench's engine as `cnnbench train` runs it, and the idiomatic PyTorch loop (a
torchvision-style Dataset with ToTensor + Normalize, a DataLoader, fp32). After every epoch the test accuracy is
measured outside the clock; the result is the training seconds until it first reaches the target (median over seeds),
and the epochs that took. Writes results/time_to_accuracy.md (--out to change). Run it alone. With --dataset shapes
(generated images, labelled so in the output) it measures a CIFAR-size model. --keras-python adds Keras (a Python with
tensorflow-cpu) on the same split, normalised the same way, with the same model, optimiser, learning rate and batch
size: keras_time_to_accuracy.py, one process per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnbench.spec.train import TrainConfig
from cnnbench.data.augment import AugmentSpec
from cnnbench.data.prepare import PrepareOptions, load_or_prepare
from cnnbench.engine import Preprocess, build_trainer, make_batches, predict, select_device
from cnnbench.models import build_model
from cnnbench.core.errors import UsageError
from cnnbench.core.storage import write_text_atomic
from cnnbench.runs.resources import apply_threads, choose_format
from cnnbench.runs.pipeline import seed_everything


def test_accuracy(model, prepared, device, precision="fp32", channels_last=False) -> float:
    batches = make_batches(prepared, "test", 1024, device)
    preprocess = Preprocess(prepared.mean, prepared.std, device, augment=AugmentSpec(), channels_last=channels_last)
    probs, labels, _ = predict(model, batches, preprocess, precision, device)
    return float((probs.argmax(1) == labels).float().mean())


def cnnbench_run(prepared, args, seed: int, device) -> tuple[float, int]:
    seed_everything(seed, False)
    model, spec = build_model(args.model, prepared.input_spec)
    config = TrainConfig(epochs=args.max_epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                         device=device.type)  # fmt: skip
    fmt = choose_format(model, spec, prepared, config, device)
    apply_threads(fmt)
    precision, channels_last = fmt.precision, fmt.channels_last
    trainer = build_trainer(model, prepared, config, device, precision=precision, channels_last=channels_last)
    seconds = 0.0
    for epoch in range(1, args.max_epochs + 1):
        start = time.perf_counter()
        trainer.train_epoch(None)
        seconds += time.perf_counter() - start
        if test_accuracy(model, prepared, device, precision, channels_last) >= args.target:
            return seconds, epoch
    return float("nan"), args.max_epochs


def idiomatic_run(prepared, args, seed: int, device) -> tuple[float, int]:
    from PIL import Image
    from torchvision import transforms

    seed_everything(seed, False)
    model, _ = build_model(args.model, prepared.input_spec)
    model.to(device)
    train = prepared.splits["train"]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(prepared.mean, prepared.std)])

    class Dataset(torch.utils.data.Dataset):  # the shape of torchvision.datasets.MNIST's __getitem__
        def __len__(self):
            return len(train.labels)

        def __getitem__(self, i):
            image = train.images[i]  # CHW uint8
            array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            return transform(Image.fromarray(array)), int(train.labels[i])

    loader = torch.utils.data.DataLoader(Dataset(), batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    seconds = 0.0
    for epoch in range(1, args.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
        seconds += time.perf_counter() - start
        if test_accuracy(model, prepared, device) >= args.target:
            return seconds, epoch
    return float("nan"), args.max_epochs


def keras_arrays(prepared, folder: Path) -> Path:
    """The train and test splits as cnnbench's engine sees them (its own Preprocess: scaled and normalised by the train
    split's mean and std), in NHWC float32 for Keras, in an .npz file in `folder`."""
    import numpy as np

    path = folder / "keras-data.npz"
    if not path.exists():
        preprocess = Preprocess(prepared.mean, prepared.std, torch.device("cpu"), augment=AugmentSpec(),
                                channels_last=True)  # NHWC memory: the permute below is a view  # fmt: skip
        arrays = {}
        for split in ("train", "test"):
            data = prepared.splits[split]
            arrays[f"x_{split}"] = preprocess(data.images).permute(0, 2, 3, 1).numpy()
            arrays[f"y_{split}"] = data.labels.numpy()
        np.savez(path, **arrays)
    return path


def keras_run(prepared, args, seed: int, device) -> tuple[float, int]:
    data = keras_arrays(prepared, args.scratch)
    script = Path(__file__).with_name("keras_time_to_accuracy.py")
    command = [str(args.keras_python), str(script), str(data), "--model", args.model, "--target", str(args.target),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--max-epochs", str(args.max_epochs),
               "--seed", str(seed)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the Keras run failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["epochs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--model", default="mnist-7498")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="digits", choices=["digits", "shapes"])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--out", type=Path, default=Path("results/time_to_accuracy.md"))
    parser.add_argument("--keras-python", type=Path, help="a Python with tensorflow-cpu: adds a Keras row (CPU only)")
    args = parser.parse_args()
    if args.keras_python is not None and not args.keras_python.exists():
        parser.error(f"--keras-python {args.keras_python} does not exist")
    try:
        device = select_device(args.device)
    except UsageError as error:  # no such device here: one line, as the CLI says it
        parser.error(str(error))
    if args.keras_python is not None and device.type != "cpu":
        parser.error(f"--keras-python runs Keras on the CPU: add --device cpu (the device was {device.type})")
    loops = [("idiomatic", idiomatic_run), ("cnnbench", cnnbench_run)]
    if args.keras_python is not None:
        loops.insert(0, ("keras", keras_run))
    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = Path(scratch)
        prepared = load_or_prepare(PrepareOptions(dataset=args.dataset, root=Path(scratch), size=args.size))
        params = sum(p.numel() for p in build_model(args.model, prepared.input_spec)[0].parameters())
        results: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in loops}
        for seed in range(args.seeds):  # the loops take turns, seed by seed, so a slow spell of the host hits all
            for name, run in loops:
                results[name].append(run(prepared, args, seed, device))
    rows = {}
    for name, runs in results.items():
        rows[name] = (statistics.median(s for s, _ in runs), statistics.median(e for _, e in runs))
    test_images = len(prepared.splits["test"].labels)
    data = "digits" if args.dataset == "digits" else "shapes (generated stand-in data)"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    lines = [f"Time to {args.target:.0%} test accuracy on {data} ({args.size}x{args.size}, {test_images:,} test images), "
             f"{args.model} ({params:,} parameters), Adam lr {args.lr}, batch {args.batch_size}, median of {args.seeds} "
             f"seeds, {where}, torch {torch.__version__}", "",
             "| loop | training seconds | epochs |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {name} | {s:.2f} | {e:g} |" for name, (s, e) in rows.items()]
    sooner = [f"{rows[name][0] / rows['cnnbench'][0]:.1f}x sooner than {label}"
              for name, label in (("idiomatic", "the idiomatic loop"), ("keras", "Keras")) if name in rows]
    lines.append(f"\ncnnbench reaches it {', '.join(sooner)}.")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
