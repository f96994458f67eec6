"""The CUDA path end to end: mixed precision, channels_last, resume and evaluation across devices, fine-tuning with and
without cached features, torch.compile. Skipped where no GPU is visible (CI); benchmarks/gpu_check.sh runs them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]

SHAPES = ("--dataset", "shapes", "--size", "32", "--quiet", "--json")


def summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_on_cuda_in_mixed_precision_learns(cli, data_root, tmp_path, precision):
    done = cli("train", "--model", "cifar-simple", *SHAPES, "--root", data_root, "--epochs", "3", "--device", "cuda",
               "--precision", precision, "--channels-last", "--out", tmp_path)  # fmt: skip
    assert done.code == 0, done.err
    result = done.json()
    assert result["status"] == "completed"
    written = summary(result["run_dir"])
    assert (written["device"], written["precision"]) == ("cuda", precision)
    best = written["best"]
    assert math.isfinite(best["val_loss"]) and best["val_acc"] > 0.2, best  # 10 classes: chance is 0.1


def test_a_cuda_run_resumes_and_evaluates_on_the_cpu(cli, data_root, tmp_path):
    """Checkpoints written on the GPU (CUDA RNG state, bf16 training) must load where no GPU is used."""
    first = cli("train", "--model", "fit:7500", "--dataset", "digits", "--root", data_root, "--epochs", "2",
                "--device", "cuda", "--out", tmp_path, "--quiet", "--json")  # fmt: skip
    assert first.code == 0, first.err
    run_dir = first.json()["run_dir"]
    resumed = cli("train", "--resume", run_dir, "--epochs", "3", "--device", "cpu", "--quiet", "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["status"] == "completed"
    evaluated = cli("evaluate", run_dir, "--device", "cpu", "--quiet", "--json")
    assert evaluated.code == 0, evaluated.err
    on_gpu = cli("evaluate", run_dir, "--device", "cuda", "--quiet", "--json")
    assert on_gpu.code == 0, on_gpu.err
    assert abs(evaluated.json()["accuracy"] - on_gpu.json()["accuracy"]) < 0.02  # bf16 vs fp32 rounding at most


@pytest.mark.parametrize("cache", ["--cache-features", "--no-cache-features"])
def test_finetune_resnet18_on_cuda(cli, data_root, tmp_path, cache):
    done = cli("finetune", "--backbone", "resnet18", "--weights", "none", "--freeze", "all", cache, *SHAPES,
               "--root", data_root, "--epochs", "2", "--device", "cuda", "--out", tmp_path)  # fmt: skip
    assert done.code == 0, done.err
    assert done.json()["status"] == "completed"


def test_compile_on_cuda(cli, data_root, tmp_path):
    done = cli("train", "--model", "mnist-7498", "--dataset", "digits", "--size", "28", "--root", data_root,
               "--epochs", "2", "--device", "cuda", "--compile", "--out", tmp_path, "--quiet", "--json")  # fmt: skip
    assert done.code == 0, done.err
    assert done.json()["status"] == "completed"
