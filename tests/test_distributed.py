"""`cnnbench train` under torchrun: two CPU processes with gloo match one process, and resume exactly."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ARGS = ["--model", "mnist-722", "--dataset", "digits", "--size", "28", "--epochs", "2", "--batch-size", "64",
        "--lr", "3e-3", "--precision", "fp32", "--no-channels-last", "--device", "cpu", "--json", "--quiet"]  # fmt: skip


@pytest.mark.slow  # torchrun starts two processes, each importing torch
def test_two_gloo_processes_match_one_process(cli, data_root, tmp_path):
    single = cli("train", *ARGS, "--root", data_root, "--out", tmp_path / "single")
    assert single.code == 0, single.err
    ddp = torchrun("train", *ARGS, "--root", data_root, "--out", tmp_path / "ddp")
    assert len(list((tmp_path / "ddp").iterdir())) == 1, "only rank 0 writes a run directory"
    one = single.json()
    # Each global batch of 64 is split 32/32 and the gradients averaged: the same steps as one process, up to the
    # order of floating-point sums. mnist-722 has no BatchNorm or dropout, whose per-rank behaviour would differ.
    assert abs(ddp["best"]["val_loss"] - one["best"]["val_loss"]) < 1e-4
    assert abs(ddp["best"]["train_loss"] - one["best"]["train_loss"]) < 1e-4
    a = torch.load(Path(one["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(ddp["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_each_rank_takes_a_disjoint_share_of_every_global_batch():
    from cnnbench.engine import shuffled_batches

    def batches(shard):
        return list(shuffled_batches(10, 4, torch.Generator().manual_seed(3), shard))

    alone = batches((0, 1))
    ranks = [batches((r, 2)) for r in range(2)]
    for i, whole in enumerate(alone):
        parts = [ranks[r][i] for r in range(2)]
        assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())  # together: the same global batch
        assert not set(parts[0].tolist()) & set(parts[1].tolist())  # apart: no image twice
    assert sorted(torch.cat(alone).tolist()) == list(range(10))  # one epoch sees every image once


def torchrun(command_name: str, *args: str | Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cnnbench", command_name, *map(str, args)]  # fmt: skip
    # One torchrun at a time across pytest-xdist workers: two pairs of ranks on a 2-core machine, beside the other
    # worker's tests, once ended with a rank aborting ("terminate called without an active exception") in a resume
    # that passes alone and in the suite run in one process.
    with open(Path(tempfile.gettempdir()) / "cnnbench-tests-torchrun.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, "only rank 0 prints the result"
    return json.loads(printed[0])


@pytest.mark.slow  # torchrun starts two processes, each importing torch
def test_a_resumed_two_process_run_continues_each_ranks_random_stream(data_root, tmp_path):
    # mnist-7498 has dropout and the flip/translate augmentation draws per image: both come from per-rank generators.
    # Resumed, each rank must go on with its own stream, not rank 0's, to match the run that never stopped.
    args = ["--model", "mnist-7498", "--dataset", "digits", "--size", "28", "--batch-size", "64", "--augment",
            "flip,translate=0.1", "--precision", "fp32", "--no-channels-last", "--device", "cpu", "--root", data_root,
            "--json", "--quiet"]  # fmt: skip
    straight = torchrun("train", *args, "--epochs", "3", "--out", tmp_path / "straight")
    first = torchrun("train", *args, "--epochs", "2", "--out", tmp_path / "stopped")
    resumed = torchrun("train", "--resume", first["run_dir"], "--epochs", "3", "--json", "--quiet")
    assert resumed["epochs_completed"] == 3
    a = torch.load(Path(straight["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    assert len(b["rank_rng"]) == 2 and not torch.equal(b["rank_rng"][0]["augment"], b["rank_rng"][1]["augment"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.slow  # torchrun starts two processes, each importing torch
def test_frozen_backbone_features_are_shared_out_like_images(cli, data_root, tmp_path):
    # With a frozen backbone the head trains on cached features; each rank must take its share of every global batch
    # (not all of it) for the averaged gradient to be the single-process one. Plain SGD shows any scale error.
    args = ["--backbone", "squeezenet1_1", "--weights", "none", "--freeze", "all", "--dataset", "digits", "--size",
            "32", "--epochs", "2", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.1", "--precision", "fp32",
            "--no-channels-last", "--device", "cpu", "--root", data_root, "--json", "--quiet"]  # fmt: skip
    single = cli("finetune", *args, "--out", tmp_path / "single")
    assert single.code == 0, single.err
    ddp = torchrun("finetune", *args, "--out", tmp_path / "ddp")
    a = torch.load(Path(single.json()["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(ddp["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
