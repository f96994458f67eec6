"""The training step's accelerator-minded logic, checked where CI can run it: on the CPU.

No GPU is lent to CI, so the properties that matter most on one are tested here on their device-independent part: the
step never waits for the device (no per-batch read-back), and the fp16 path with its gradient scaler trains."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import Prepared, SplitData
from cnnbench.engine import Trainer, build_trainer
from cnnbench.models import build_model
from cnnbench.models.zoo import InputSpec

SPEC = InputSpec(channels=1, height=28, width=28, num_classes=10)


def synthetic(n: int) -> Prepared:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    manifest = {"input": vars(SPEC), "storage": "memory", "classes": [str(i) for i in range(10)],
                "normalization": {"mean": [0.5], "std": [0.25]}, "synthetic": True}  # fmt: skip
    split = SplitData(labels=labels, images=images)
    return Prepared(directory=Path("synthetic"), manifest=manifest, splits={"train": split, "val": split, "test": split})


def trainer(n: int, **options) -> Trainer:
    torch.manual_seed(0)
    model = build_model("mnist-7498", SPEC)[0]
    config = TrainConfig(batch_size=32, epochs=1, device="cpu", cache_features=False, augment="flip,translate=0.1",
                         **options)  # fmt: skip
    return build_trainer(model, synthetic(n), config, torch.device("cpu"), precision=options.get("precision", "fp32"))


READ_BACKS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")


def read_backs_in_one_epoch(monkeypatch, n: int) -> int:
    """How many times one training epoch reads a tensor's value back to the host (a sync on a GPU)."""
    t = trainer(n)
    calls = [0]
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        t.train_epoch(None)
    finally:
        monkeypatch.undo()
    return calls[0]


def test_training_steps_never_read_values_back(monkeypatch):
    # Four batches or twelve: the same number of read-backs (the epoch's totals at its end), none per batch.
    assert read_backs_in_one_epoch(monkeypatch, 4 * 32) == read_backs_in_one_epoch(monkeypatch, 12 * 32)


def test_fp16_with_gradient_scaling_and_clipping_trains():
    t = trainer(8 * 32, precision="fp16", clip_grad=1.0)
    assert t.scaler.is_enabled()
    before = [p.detach().clone() for p in t.model.parameters()]
    loss, accuracy, _, _ = t.train_epoch(None)
    assert math.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    assert t.state_dict()["scaler"]["scale"] > 0  # the scaler's state travels with the checkpoint


# --- regressions found on a GPU (benchmarks/gpu_check.sh on an H200), checked here on their CPU-runnable part


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu():
    """A CUDA generator's state is 16 bytes (philox seed and offset); loading it into the CPU's augmentation generator
    raised. The resumed run now seeds its augmentation afresh and goes on training."""
    t = trainer(64)
    t.train_epoch(None)
    state = t.state_dict()
    state["rng"]["augment"] = torch.zeros(16, dtype=torch.uint8)  # what torch.Generator("cuda").get_state() returns
    state["rng"]["augment_device"] = "cuda"
    resumed = trainer(64)
    resumed.load_state_dict(state)  # raised "RNG state is wrong size"
    assert resumed.step == t.step
    assert math.isfinite(resumed.train_epoch(None)[0])
    same_device = trainer(64)
    same_device.load_state_dict(t.state_dict())  # a CPU checkpoint on the CPU keeps its exact augmentation stream
    assert torch.equal(same_device.augment_generator.get_state(), t.augment_generator.get_state())


def test_threads_given_for_a_gpu_run_are_kept():
    """--threads was dropped on CUDA (the CPU still prepares batches and runs the data work there)."""
    from cnnbench.runs.resources import choose_format

    config = TrainConfig(precision="bf16", channels_last=True, threads=3)
    fmt = choose_format(None, None, None, config, torch.device("cuda"))
    assert (fmt.precision, fmt.channels_last, fmt.threads) == ("bf16", True, 3)
