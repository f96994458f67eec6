"""`report` over several runs: the seeds' columns, grouping over seeds, statuses, and that runs stay untouched."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import INTERRUPTED722, MNIST722, MNIST7498, copy_run, tree_digest


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_run) -> Path:
    """Two seeds of mnist-722 and one of mnist-7498 (evaluated on test), plus one interrupted run, in a folder of their
    own: copies of the session's shared runs."""
    out = tmp_path_factory.mktemp("runs")
    for settings in ({**MNIST722, "seed": 0}, {**MNIST722, "seed": 1}, MNIST7498):
        copy_run(trained_run(**settings, evaluate=["test"]), out)
    copy_run(trained_run(**INTERRUPTED722), out)
    return out


def test_report_has_one_row_per_run_with_the_seed_columns(cli, runs, tmp_path):
    before = tree_digest(runs)
    result = cli("report", runs, "--out", tmp_path)
    assert result.code == 0, result.err
    assert tree_digest(runs) == before, "report must never modify a run directory"
    table = pd.read_csv(tmp_path / "report.csv")
    assert len(table) == 4
    for column in ("epochs", "batch_size", "model", "dropout", "lr", "loss", "accuracy", "val_loss", "val_accuracy",
                   "test_accuracy", "params", "seconds_per_epoch", "size_mb"):  # fmt: skip
        assert column in table.columns
    assert sorted(table["status"]) == ["completed", "completed", "completed", "interrupted"]
    evaluated = table[table["status"] == "completed"]
    assert evaluated["test_accuracy"].between(0.0, 1.0).all()
    assert (tmp_path / "report.md").read_text().startswith("| run")
    assert "| mnist-7498" in result.out


def test_group_by_model_gives_mean_std_and_n_over_seeds(cli, runs, tmp_path):
    result = cli("report", runs, "--out", tmp_path, "--group-by", "model,status", "--columns",
                 "model,status,test_accuracy,params", "--json")  # fmt: skip
    assert result.code == 0, result.err
    rows = {(r["model"], r["status"]): r for r in result.json()["rows"]}
    seeds = rows[("mnist-722", "completed")]
    assert seeds["n"] == 2 and seeds["params_mean"] == 722
    frame = pd.read_csv(tmp_path / "report.csv")
    singles = frame[(frame["model"] == "mnist-722") & (frame["status"] == "completed")]
    per_run = pd.DataFrame([evaluate_json(p) for p in sorted(runs.iterdir()) if "mnist-722" in p.name])
    assert singles["test_accuracy_mean"].iloc[0] == pytest.approx(per_run["accuracy"].mean())
    assert "±" in (tmp_path / "report.md").read_text()


def evaluate_json(run: Path) -> dict:
    import json

    path = run / "eval" / "test.json"
    return json.loads(path.read_text()) if path.exists() else {"accuracy": float("nan")}


def test_sort_descending_and_unknown_columns(cli, runs, tmp_path):
    result = cli("report", runs, "--out", tmp_path, "--sort", "-params", "--json")
    assert result.code == 0
    params = [r["params"] for r in result.json()["rows"]]
    assert params == sorted(params, reverse=True)
    bad = cli("report", runs, "--out", tmp_path, "--columns", "model,speed")
    assert bad.code == 2 and "unknown --columns speed" in bad.err


def test_report_with_plots_draws_the_comparisons_and_one_curve_png_per_run(cli, runs, tmp_path):
    before = tree_digest(runs)
    result = cli("report", runs, "--out", tmp_path, "--plots", "--json")
    assert result.code == 0, result.err
    answer = result.json()
    curves, comparisons = [Path(p) for p in answer["plots"]], [Path(p) for p in answer["comparisons"]]
    assert len(curves) == 4, "one curve picture per run"
    assert sorted(p.name for p in comparisons) == ["accuracy_vs_params.png", "accuracy_vs_seconds.png"]
    plots = curves + comparisons
    names = {p.name for p in plots}
    for path in plots:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    # The markdown embeds every plot by a link relative to itself, so it reads on a code-hosting site.
    markdown = (tmp_path / "report.md").read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown)
    assert "![accuracy against parameters](plots/accuracy_vs_params.png)" in markdown
    assert sorted(links) == sorted(f"plots/{name}" for name in names)
    assert all((tmp_path / link).is_file() for link in links)
    assert tree_digest(runs) == before, "report --plots must never modify a run directory"


def test_grouped_comparisons_draw_means_with_error_bars(cli, runs, tmp_path):
    from cnnbench.report import collect, comparison_points

    result = cli("report", runs, "--out", tmp_path, "--plots", "--group-by", "model", "--json")
    assert result.code == 0, result.err
    assert (tmp_path / "plots" / "accuracy_vs_params.png").stat().st_size > 10_000
    points = {p["label"]: p for p in comparison_points(collect([runs]), "params", "test_accuracy", ["model"])}
    seeds = points["mnist-722"]
    assert seeds["n"] == 2 and seeds["x"] == 722 and seeds["y_std"] >= 0  # the interrupted run has no test accuracy
    assert points["mnist-7498"]["n"] == 1 and math.isnan(points["mnist-7498"]["y_std"])


def test_pareto_front_keeps_the_points_nothing_beats_on_both_counts():
    from cnnbench.report import pareto_front

    params = [100, 200, 300, 150, 300]
    accuracy = [0.50, 0.70, 0.90, 0.45, 0.80]
    assert pareto_front(params, accuracy) == [True, True, True, False, False]
    assert pareto_front([5, 5], [0.5, 0.5]) == [True, True], "equal points do not beat each other"


def test_damaged_runs_are_left_out_of_the_plots(cli, runs, tmp_path):
    from cnnbench.report import collect, comparison_points

    mixed = tmp_path / "mixed"
    # two runs whose labels differ: mnist-722 seed 1 (evaluated) and mnist-7498, the one to damage
    good = next(r for r in sorted(runs.iterdir()) if r.name.endswith("mnist-722-digits-s1"))
    bad = next(r for r in sorted(runs.iterdir()) if "mnist-7498" in r.name)
    for run in (good, bad):
        shutil.copytree(run, mixed / run.name)
    damaged = mixed / bad.name
    (damaged / "summary.json").write_text('{"status": "completed", "best":')  # truncated
    result = cli("report", mixed, "--out", tmp_path / "out", "--plots", "--json")
    assert result.code == 0, result.err
    assert "1 damaged run" in result.err
    answer = result.json()
    assert f"{damaged.name}.png" not in {Path(p).name for p in answer["plots"]}
    assert "accuracy_vs_params.png" in {Path(p).name for p in answer["comparisons"]}
    points = comparison_points(collect([mixed]), "params", "test_accuracy")
    assert len(points) == 1 and damaged.name[len("YYYYmmdd-HHMMSS-"):] not in points[0]["label"]
