"""Edge cases a user meets: empty validation splits, early-stopped resumes, options that do not apply, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnbench.runs.kinds import resume_run
from cnnbench.runs.kinds import run as run_spec
from tests.helpers import DIGITS28, StopAfter, digits, finetune_spec, spec


def test_without_a_validation_split_the_last_epoch_is_kept(data_root, tmp_path):
    result = run_spec(spec(digits(data_root, split=(0.8, 0.0, 0.2)), "mnist-722", epochs=3, lr=1e-2), out=tmp_path)
    assert result.summary["best_epoch"] == 3
    best = result.run.load_checkpoint("best")["model"]
    last = result.run.load_checkpoint("last")["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)


def test_resuming_a_frozen_backbone_fine_tune_matches_an_uninterrupted_one(data_root, tmp_path):
    parent = run_spec(spec(digits(data_root), "mnist-7498", epochs=1), out=tmp_path / "parent").run
    config = finetune_spec(digits(data_root), weights=f"run:{parent.path}", epochs=3, precision="fp32",
                           channels_last=False)  # fmt: skip
    straight = run_spec(config, out=tmp_path / "a")
    stopped = run_spec(config, out=tmp_path / "b", callbacks=[StopAfter(1)])
    resumed = resume_run(stopped.run.path)
    assert [r["val_loss"] for r in resumed.run.metrics()] == pytest.approx(
        [r["val_loss"] for r in straight.run.metrics()], rel=1e-6)  # fmt: skip


def test_an_early_stopped_run_is_not_trained_again_by_a_plain_resume(cli, data_root, tmp_path):
    result = run_spec(spec(digits(data_root), "mnist-722", epochs=10, patience=1, min_delta=5.0),
                       out=tmp_path)  # fmt: skip
    assert result.summary["stopped_early"]
    before = (result.run.path / "summary.json").read_text()
    refused = cli("train", "--resume", result.run.path)
    assert refused.code == 2 and "already completed" in refused.err
    assert (result.run.path / "summary.json").read_text() == before


def test_a_check_that_fails_before_training_leaves_no_run_directory(cli, data_root, tmp_path):
    result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--split", "0.8,0,0.2",
                 "--patience", "2", "--out", tmp_path / "runs")  # fmt: skip
    assert result.code == 2 and "needs a validation split" in result.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_refuses_options_it_would_ignore(cli, data_root, tmp_path):
    stopped = run_spec(spec(digits(data_root), "mnist-722", epochs=3), out=tmp_path,
                        callbacks=[StopAfter(1)])  # fmt: skip
    result = cli("train", "--resume", stopped.run.path, "--size", "64", "--out", tmp_path / "elsewhere")
    assert result.code == 2
    assert "--out" in result.err and "--size" in result.err


def test_the_from_scratch_baseline_trains_the_whole_network_by_default(cli, data_root, tmp_path):
    result = cli("finetune", "--backbone", "squeezenet1_1", "--weights", "none", *DIGITS28, "--size", "32", "--root",
                 data_root, "--epochs", "1", "--out", tmp_path, "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["params"]["frozen"] == 0
    config = json.loads((Path(result.json()["run_dir"]) / "config.json").read_text())
    assert config["finetune"]["freeze"] == "none"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--precision", "fp16"], "--precision fp16 needs a GPU"),
        (["--precision", "fp16", "--no-channels-last"], "--precision fp16 needs a GPU"),
        (["--label-smoothing", "1.5"], "bad --label-smoothing 1.5"),
        (["--seed", "-1"], "bad --seed -1"),
        (["--gamma", "-1"], "bad --gamma -1"),
        (["--workers", "-1"], "bad --workers -1"),
        (["--lr", "nan"], "bad --lr nan"),
    ],
)
def test_bad_training_values_exit_2(cli, data_root, tmp_path, args, expected):
    result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--epochs", "1", "--out", tmp_path,
                 *args)  # fmt: skip
    assert result.code == 2, result.err
    assert expected in result.err and "Traceback" not in result.err


def test_prepare_validates_options_even_when_the_cache_exists(cli, data_root):
    assert cli("prepare", "digits", "--root", data_root).code == 0
    result = cli("prepare", "digits", "--root", data_root, "--storage", "bogus")
    assert result.code == 2 and "bad --storage 'bogus'" in result.err


def test_a_last_global_batch_smaller_than_the_world_is_dropped_not_left_empty():
    from cnnbench.engine import shuffled_batches

    batches = list(shuffled_batches(9, 4, torch.Generator().manual_seed(0), (1, 2)))
    assert [len(b) for b in batches] == [2, 2]  # 4 + 4 + 1: the single leftover image would leave a rank empty
