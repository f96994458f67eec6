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


@pytest.mark.parametrize("layer", ["batchnorm", "maxpool"])
def test_layer_speed_times_both_paths_on_a_narrow_input(layer):
    import torch
    import layer_speed
    from cnnbench.models import native

    if layer == "maxpool" and native.kernels() is None:
        pytest.skip("no C++ compiler here")
    theirs, ours = layer_speed.time_pair(layer, (8, 8, 6), torch.float32, windows=1, passes=1)
    assert theirs > 0 and ours > 0


@pytest.mark.parametrize(
    "script", ["against_keras.py", "engine_ab.py", "precision_accuracy.py", "keras_time_to_accuracy.py"]
)
def test_the_scripts_not_run_above_answer_help(script):
    """Each spawns processes or trains for minutes; their arguments and imports are checked here."""
    import subprocess

    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=BENCHMARKS.parent)  # fmt: skip
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow  # a search and two trainings, about 10 s
def test_the_search_benchmark_compares_a_search_with_the_hand_design(data_root, tmp_path, monkeypatch):
    import tune_bench

    monkeypatch.setattr(tune_bench, "SEEDS_MODELS", {722: "mnist-722"})  # one budget makes the point
    lines = tune_bench.architecture_search(data_root, tmp_path, "arch-recipe", trials=1, epochs=1, final_epochs=1,
                                           seeds=1)  # fmt: skip
    assert any(line.startswith("| 722 | arch-recipe (best of 1 trials) |") for line in lines)
    assert any(line.startswith("| 722 | mnist-722 | 722 |") for line in lines)
