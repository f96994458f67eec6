"""Run directories written by earlier versions (tests/fixtures/old_runs, made by make_old_runs.sh from the commits
that wrote schemas 1 and 2) still evaluate, report, resume and serve as parents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cnnbench.evaluate.evaluation import evaluate_run
from cnnbench.prune.sweep import PruneOptions, prune_run
from cnnbench.report import collect
from cnnbench.runs.kinds import resume_run, run
from cnnbench.runs.rundir import RunDir
from tests.helpers import digits, spec

FIXTURES = Path(__file__).parent / "fixtures" / "old_runs"
WRITTEN_UNDER = "/tmp/cnnbench-old-runs"  # make_old_runs.sh's prefix, in every path the runs recorded


@pytest.fixture
def old_runs(tmp_path) -> Path:
    """The fixtures copied as if written on this machine: their recorded paths point into tmp_path."""
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    for path in tmp_path.rglob("*.json"):
        path.write_text(path.read_text().replace(WRITTEN_UNDER, str(tmp_path)))
    return tmp_path


def the_run(root: Path, where: str) -> RunDir:
    (found,) = [path.parent for path in (root / where).rglob("config.json")]
    return RunDir(found)


WHERE = ["schema1", "schema2/finished", "schema2/interrupted", "schema2/pruned", "schema2/finetuned", "schema2/search"]


@pytest.mark.parametrize("where", WHERE)
def test_an_old_run_evaluates_on_its_own_data(old_runs, where):
    result = evaluate_run(the_run(old_runs, where).path, split="test")
    assert 0.0 <= result["accuracy"] <= 1.0 and result["data"]["dataset"] == "digits"


def test_old_runs_report_with_their_kind_status_and_model(old_runs):
    frame = collect([old_runs / "schema1", old_runs / "schema2"]).set_index("kind", drop=False)
    assert sorted(frame["status"]) == ["completed"] * 5 + ["interrupted"]
    assert set(frame["kind"]) == {"train", "finetune", "prune"}
    assert set(frame["model"]) == {"mnist-722", "arch"}
    assert not frame["params"].isna().any()
    assert frame.loc["prune", "pruning.amount"] == 0.5


def test_an_interrupted_schema_2_run_resumes_to_its_end(old_runs):
    result = resume_run(the_run(old_runs, "schema2/interrupted").path)
    assert result.status == "completed" and result.summary["epochs_completed"] == 2
    assert result.run.read_config().schema == 2  # the record keeps the schema it was written with


def test_a_schema_1_run_trains_further_and_keeps_its_model(old_runs):
    old = the_run(old_runs, "schema1")
    result = resume_run(old.path, epochs=2)
    assert result.status == "completed" and len(result.run.metrics()) == 2
    assert result.run.read_config().run_spec().model.name == "mnist-722"


def test_an_old_pruned_run_trains_further_with_its_masks(old_runs):
    pruned = the_run(old_runs, "schema2/pruned")
    before = pruned.load_model("best")
    zeros = {name: p == 0 for name, p in before.named_parameters() if p.dim() > 1}
    assert resume_run(pruned.path, epochs=2).status == "completed"
    after = dict(pruned.load_model("last").named_parameters())
    assert all(bool((after[name][mask] == 0).all()) for name, mask in zeros.items())


def test_old_runs_serve_as_parents(old_runs, data_root):
    parent = the_run(old_runs, "schema1")
    child = run(spec(digits(data_root), kind="finetune", model_options={"weights": f"run:{parent.path}",
                                                                         "freeze": "none"}, epochs=1),
                out=old_runs / "children")  # fmt: skip
    assert child.status == "completed" and child.run.read_config().parent == str(parent.path)
    outcome = prune_run(the_run(old_runs, "schema2/finished").path, PruneOptions(amounts=(0.5,), finetune_epochs=1),
                        out=old_runs / "children", measure=False)  # fmt: skip
    state = outcome.runs[0].run.load_checkpoint("best")["model"]
    assert outcome.runs[0].status == "completed" and any(int(torch.count_nonzero(t == 0)) for t in state.values())
