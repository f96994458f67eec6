"""The benchmark scripts still run against the current engine: each one's measuring code, on the smallest case and
the fewest batches (what is measured here is that they work, not how fast; timing belongs to the scripts). They reach
into the core (the format probe, the trainer, the feature cache), so a change there that they miss would otherwise
be found only by the next engineer who runs `make bench` (train_speed and time_to_accuracy had both stopped running
after a change to choose_format's arguments)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def importable():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


def test_train_speed_measures_both_loops_on_the_smallest_seed_model():
    import torch
    import train_speed

    case = train_speed.CASES["mnist-722"]
    device = torch.device("cpu")
    ours = train_speed.measure_cnnbench(case, device, window_batches=1)
    theirs = train_speed.measure_idiomatic(case, device, window_batches=1)
    assert ours["train"] > 0 and ours["infer"] > 0 and ours["precision"] in ("fp32", "bf16")
    assert theirs["train"] > 0 and theirs["precision"] == "fp32"


def test_time_to_accuracy_runs_both_loops_to_a_target(data_root):
    import torch
    import time_to_accuracy

    from cnnbench.data.prepare import PrepareOptions, load_or_prepare

    prepared = load_or_prepare(PrepareOptions(dataset="digits", root=data_root, size=28))
    args = SimpleNamespace(model="mnist-722", max_epochs=1, batch_size=256, lr=3e-3, target=0.0)
    for loop in (time_to_accuracy.cnnbench_run, time_to_accuracy.idiomatic_run):
        seconds, epochs = loop(prepared, args, 0, torch.device("cpu"))
        assert seconds > 0 and epochs == 1  # a target of 0 is reached after the first epoch


def test_finetune_cache_measures_a_cached_frozen_backbone():
    import torch
    import finetune_cache

    result = finetune_cache.measure(finetune_cache.synthetic(16, 32), "resnet18", 2, True, torch.device("cpu"))
    assert result["cached"] and result["epoch_s"] > 0


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_script_answers_help(script):
    import subprocess

    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=BENCHMARKS.parent)  # fmt: skip
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow  # two searches and four runs in a subprocess, about 30 s
def test_the_search_benchmark_runs_its_smoke_scale(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(BENCHMARKS / "tune_bench.py"), "--smoke", "--part", "arch", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "tune_bench_arch.md").read_text()
    assert "| 722 | mnist-722 |" in table and "| 7,500 | mnist-7498 |" in table
