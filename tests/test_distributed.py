"""`cnnbench train` under torchrun: two CPU processes with gloo match one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ARGS = ["--model", "mnist-722", "--dataset", "digits", "--size", "28", "--epochs", "2", "--batch-size", "64",
        "--lr", "3e-3", "--precision", "fp32", "--no-channels-last", "--device", "cpu", "--json", "--quiet"]  # fmt: skip


def test_two_gloo_processes_match_one_process(cli, data_root, tmp_path):
    single = cli("train", *ARGS, "--root", data_root, "--out", tmp_path / "single")
    assert single.code == 0, single.err
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cnnbench", "train", *ARGS, "--root", str(data_root), "--out", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1, "only rank 0 writes a run directory"
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, "only rank 0 prints the result"
    ddp = json.loads(printed[0])
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
