"""What a pruned run records is what was done, measured from its saved weights (issue 25, 3): its summary's sparsity
after a polynomial schedule or a resume, and a --target-macs run's target and the share of channels it removed."""

from __future__ import annotations

import csv
import json
import logging

import torch

from cnnbench.models.accounting import count_parameters
from cnnbench.runs.prune import PruneOptions, prepare_prune
from cnnbench.runs.rundir import RunDir
from tests.helpers import copy_run


NO_PROBE = ("--precision", "fp32", "--no-channels-last", "--threads", "2")  # the format given: no probe to time


def _measured_sparsity(run) -> float:
    return count_parameters(RunDir(run).load_model("best"))["sparsity"]


def test_a_polynomial_child_records_the_sparsity_its_weights_have(cli, trained_run, tmp_path, caplog):
    parent = copy_run(trained_run("mnist-722", epochs=2), tmp_path / "parent")  # prune evaluates it: a copy
    result = cli("prune", parent, "--amount", "0.6", "--schedule", "polynomial", "--frequency", "5",
                 "--finetune-epochs", "2", "--repeats", "1", *NO_PROBE, "--out", tmp_path / "out", "-q", "--json")  # fmt: skip
    assert result.code == 0, result.err
    child = next(p for p in (tmp_path / "out").iterdir() if (p / "summary.json").is_file())
    summary = json.loads((child / "summary.json").read_text())
    measured = _measured_sparsity(child)
    assert measured > 0.3  # the schedule reached well past zero: a dense start recorded as 0.0 would fail below
    assert abs(summary["params"]["sparsity"] - measured) < 1e-9
    assert summary["params"]["nonzero"] == int(sum(torch.count_nonzero(p) for p in
                                                   RunDir(child).load_model("best").parameters()))  # fmt: skip
    caplog.set_level(logging.WARNING, logger="cnnbench")
    prepare_prune(child, PruneOptions(amounts=(0.8,)))  # pruning it again: said before anything trains
    assert any(f"{child.name} is itself a pruned run (magnitude, amount 0.6, {measured:.0%} of its weights zero)"
               in line for line in caplog.messages), caplog.messages


def test_a_target_macs_child_records_its_target_and_the_channels_it_removed(cli, trained_run, tmp_path):
    parent = copy_run(trained_run("mnist-722", epochs=2), tmp_path / "parent")
    macs = json.loads((parent / "config.json").read_text())["params"]["macs"]
    target = macs // 2
    result = cli("prune", parent, "--method", "structured", "--target-macs", str(target), "--finetune-epochs", "1",
                 "--repeats", "1", *NO_PROBE, "--out", tmp_path / "out", "-q")  # fmt: skip
    assert result.code == 0, result.err
    child = next(p for p in (tmp_path / "out").iterdir() if (p / "prune.json").is_file())
    pruning = json.loads((child / "config.json").read_text())["pruning"]
    row = json.loads((child / "prune.json").read_text())
    assert pruning["target_macs"] == row["target_macs"] == target and row["macs"] <= target
    before = json.loads((parent / "config.json").read_text())["model"]
    after = json.loads((child / "config.json").read_text())["model"]
    assert after != before and 0 < row["channel_ratio"] < 1  # measured from the narrowed widths, not the 1% step


def test_a_resumed_sweep_writes_the_report_of_every_run_it_completed(cli, trained_run, tmp_path, monkeypatch):
    """A sweep stopped in its second run leaves no report; `prune --resume` of that run writes the sweep's report with
    both runs beside the parent, where the sweep would have written it."""
    from cnnbench.engine import Callback
    from cnnbench.runs import kinds

    class CtrlCInSecondRun(Callback):
        runs = 0

        def on_fit_start(self, trainer):
            CtrlCInSecondRun.runs += 1

        def on_epoch_end(self, trainer, result):
            if CtrlCInSecondRun.runs == 2:
                raise KeyboardInterrupt

    real_run = kinds.run
    monkeypatch.setattr(kinds, "run", lambda spec, **o: real_run(spec, **{**o, "callbacks": [CtrlCInSecondRun()]}))
    parent = copy_run(trained_run("mnist-722", epochs=2), tmp_path / "parent")
    out = tmp_path / "out"
    args = ("prune", parent, "--amount", "0.5,0.7", "--finetune-epochs", "2", "--repeats", "1", *NO_PROBE, "--out", out,
            "-q")  # fmt: skip
    assert cli(*args).code == 130
    monkeypatch.setattr(kinds, "run", real_run)
    stopped = next(p for p in out.iterdir() if RunDir(p).status() == "interrupted")
    report = out / f"prune-{parent.name}-magnitude"
    assert not report.exists()  # a stopped sweep writes no report
    result = cli("prune", stopped, "--resume", "--repeats", "1", "--json", "-q")
    assert result.code == 0, result.err
    assert result.json()["report_dir"] == str(report)
    with open(report / "prune_report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["role"], float(r["amount"])) for r in rows] == [("parent", 0.0), ("pruned", 0.5), ("pruned", 0.7)]
    assert rows[2]["path"] == str(stopped) and (report / "prune_report.md").is_file()
