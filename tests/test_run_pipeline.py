"""The run pipeline that tune, prune and studies stand on: callbacks that stop a run with a status, a diverged run
that says so, many runs in one process, old run directories, file modes."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import pytest
import torch

from cnnbench.engine import Callback, StopRun
from cnnbench.core.errors import CheckFailed
from cnnbench.runs.rundir import RunDir
from cnnbench.runs.kinds import resume_run
from cnnbench.runs.kinds import run as run_spec
from tests.helpers import DIGITS28, MNIST7498, digits, spec


def test_a_diverging_run_stops_at_once_and_says_why(cli, data_root, tmp_path):
    result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--lr", "1e12", "--epochs", "20",
                 "--out", tmp_path, "--quiet")  # fmt: skip
    assert result.code == 1
    assert "diverged" in result.err and "lower --lr" in result.err and "Traceback" not in result.err
    run = RunDir(next(tmp_path.iterdir()))
    summary = run.summary()
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 1
    assert summary["best_epoch"] == 0, "a NaN epoch is never the best one"
    assert not run.checkpoint_path("best").exists()
    assert "lower --lr" in summary["reason"]


class StopAtStep(Callback):
    """A step callback that ends the run with its own status (as a pruning schedule or a search's pruner would)."""

    def __init__(self, step: int) -> None:
        self.step, self.calls = step, 0

    def on_step_end(self, trainer) -> None:
        self.calls += 1
        if trainer.step == self.step:
            raise StopRun("pruned", f"stopped at step {trainer.step}")


def test_step_and_epoch_callbacks_see_every_step_and_may_stop_the_run(data_root, tmp_path):
    steps = StopAtStep(step=10**9)
    epochs = []
    result = run_spec(spec(digits(data_root), "mnist-722", epochs=2, batch_size=256), out=tmp_path / "a",
                      callbacks=[steps, epochs.append])  # fmt: skip
    per_epoch = -(-result.run.config()["prepared"]["counts"]["train"] // 256)
    assert steps.calls == 2 * per_epoch and [r.epoch for r in epochs] == [1, 2]

    stopper = StopAtStep(step=per_epoch + 1)  # the first step of epoch 2
    stopped = run_spec(spec(digits(data_root), "mnist-722", epochs=3, batch_size=256), out=tmp_path / "b",
                       callbacks=[stopper])  # fmt: skip
    assert stopped.status == "pruned" and stopped.summary["reason"] == f"stopped at step {per_epoch + 1}"
    assert stopped.run.status() == "pruned" and len(stopped.run.metrics()) == 1


def test_an_epoch_callback_that_stops_runs_after_the_epoch_is_written(data_root, tmp_path):
    def prune_after_first(result):
        raise StopRun("pruned", "trial pruned at epoch 1")

    result = run_spec(spec(digits(data_root), "mnist-722", epochs=3), out=tmp_path, callbacks=[prune_after_first])
    assert result.status == "pruned"
    assert len(result.run.metrics()) == 1 and result.run.checkpoint_path("last").is_file()


def test_many_runs_in_one_process_prepare_and_probe_once(data_root, tmp_path, monkeypatch):
    """On the CPU, where the format is probed (a GPU takes bf16 and channels_last without measuring)."""
    from cnnbench.engine import autotune
    from cnnbench.runs import resources
    from cnnbench.data import prepare

    resources.forget()
    loads, probes = [], []
    real_load, real_probe = prepare.load_or_prepare, autotune.choose_cpu_format
    monkeypatch.setattr(resources, "load_or_prepare", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    monkeypatch.setattr(autotune, "choose_cpu_format", lambda *a, **k: probes.append(1) or real_probe(*a, **k))
    for seed in (0, 1, 2):
        one = spec(digits(data_root), "mnist-722", epochs=1, seed=seed, device="cpu")
        assert run_spec(one, out=tmp_path).status == "completed"
    assert len(loads) == 1 and len(probes) == 1


def test_a_stopped_or_deterministic_run_leaves_the_next_run_unaffected(data_root, tmp_path):
    normal = spec(digits(data_root), "mnist-7498", epochs=2, seed=5, precision="fp32", channels_last=False, threads=2,
                  device="cpu")  # deterministic algorithms and bit-equal losses: the CPU's promise
    first = run_spec(normal, out=tmp_path / "a")
    diverged = run_spec(replace(normal, train=replace(normal.train, lr=1e12, deterministic=True, threads=1)),
                        out=tmp_path / "b")  # fmt: skip
    assert diverged.status == "diverged"
    assert torch.are_deterministic_algorithms_enabled()  # what that run asked for ...
    again = run_spec(normal, out=tmp_path / "c")
    assert not torch.are_deterministic_algorithms_enabled()  # ... is not what the next run gets
    assert torch.get_num_threads() == 2
    assert [r["val_loss"] for r in again.run.metrics()] == [r["val_loss"] for r in first.run.metrics()]


def test_a_study_whose_run_fails_exits_1_not_as_if_interrupted(cli, data_root, tmp_path, monkeypatch):
    from cnnbench.studies import catalog as study

    def diverging(context):
        bad = spec(digits(context.root), "mnist-722", epochs=3, lr=1e12)
        study.train_and_evaluate(context, [bad])

    monkeypatch.setitem(study.STUDIES._entries, "diverging", study.Study(name="diverging", description="",
                                                                         run=diverging))  # fmt: skip
    result = cli("study", "diverging", "--root", data_root, "--out", tmp_path, "--quiet")
    assert result.code == 1 and "diverged" in result.err and "interrupted" not in result.err
    with pytest.raises(CheckFailed):
        diverging(study.StudyContext(out=tmp_path / "again", root=data_root, epochs=None,
                                     progress=lambda label: __import__("contextlib").nullcontext()))


def test_a_finetune_run_records_the_model_it_fine_tuned(cli, data_root, trained_run, tmp_path):
    parent = trained_run(**MNIST7498)  # shared: fine-tuning only reads it
    result = cli("finetune", "--weights", f"run:{parent}", *DIGITS28, "--root", data_root, "--epochs", "1",
                 "--out", tmp_path / "child", "--quiet", "--json")  # fmt: skip
    assert result.code == 0, result.err
    config = RunDir(result.json()["run_dir"]).config()
    assert config["spec"]["model"]["name"] == "mnist-7498" and config["kind"] == "finetune"
    assert "model" not in config["train"]
    assert config["spec"]["model"]["weights"] == f"run:{parent}"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_get_the_umask_mode_not_private_0600(data_root, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run = run_spec(spec(digits(data_root), "mnist-722", epochs=1), out=tmp_path).run
    finally:
        os.umask(old)
    for name in ("config.json", "summary.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == mode, name


def test_a_run_directory_from_before_specs_still_resumes_evaluates_and_reports(cli, data_root, tmp_path):
    """Schema 1: no "spec"; "train" held model, dropout and init; "model" had no family."""
    run = run_spec(spec(digits(data_root), "mnist-722", epochs=1, seed=2), out=tmp_path).run
    config = run.config()
    for key in ("spec", "schema"):
        config.pop(key)
    config["train"].update(model="mnist-722", dropout=None, init="default")
    config["model"].pop("family")
    (run.path / "config.json").write_text(json.dumps(config))
    resumed = resume_run(run.path, epochs=2)
    assert resumed.status == "completed" and resumed.summary["epochs_completed"] == 2
    assert cli("evaluate", run.path, "--quiet").code == 0
    report = cli("report", tmp_path, "--out", tmp_path / "report", "--json")
    assert report.code == 0 and report.json()["rows"][0]["model"] == "mnist-722"
