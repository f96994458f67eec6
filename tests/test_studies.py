"""The study recipes (cnnbench/studies/s1..s5.toml): they load at both scales, a study's report carries the original
figures beside ours, a second run runs nothing new, an interrupted run is resumed, and a full-scale study with missing
data stops before training anything. Every chain runs end to end with one epoch in CI (`make studies-check`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnbench.studies.recipes import SCALES, aggregate, load_recipe, recipe_names

# One figure per study from ../shared/STUDIES.md that its recipe must carry beside our result.
ORIGINALS = {"s1": ("mnist-722", "test_accuracy", 0.96), "s2": ("cifar-simple", "test_accuracy", 0.59),
             "s3": ("whole network", "test_accuracy", 0.945), "s4": ("catsdogs-deep", "test_accuracy", 0.904),
             "s5": ("all unfrozen (batch_size=500, epochs=300)", "test_accuracy", 0.7612)}  # fmt: skip


def test_the_five_studies_have_recipes_that_load_at_both_scales():
    assert recipe_names() == ["s1", "s2", "s3", "s4", "s5"]
    for name in recipe_names():
        for scale in SCALES:
            recipe = load_recipe(name, scale)  # every dotted name and value checked against the run spec
            rows = {v.label: v for step in recipe.steps for v in step.variants()}
            assert rows and recipe.data_note
            if scale == "smoke":
                datasets = {v.values.get("data.dataset") for v in rows.values()}
                assert datasets <= {"digits", "shapes-small", "shapes-other"}, (name, datasets)  # offline stand-ins only
    for name, (row, column, figure) in ORIGINALS.items():
        rows = {v.label: v for step in load_recipe(name, "full").steps for v in step.variants()}
        assert rows[row].original[column] == figure, name


def test_a_recipe_with_an_unknown_name_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from cnnbench.studies import recipes
    from cnnbench.core.errors import UsageError

    text = (recipes.RECIPES / "s1.toml").read_text().replace('"train.augment" = "none"', '"train.augmnt" = "none"')
    (tmp_path / "s1.toml").write_text(text)
    monkeypatch.setattr(recipes, "RECIPES", tmp_path)
    with pytest.raises(UsageError, match="train.augmnt"):
        load_recipe("s1", "smoke")


def test_seeds_aggregate_as_mean_std_and_n():
    mean, std, n = aggregate([0.9, 0.92, 0.94])
    assert (round(mean, 4), round(std, 4), n) == (0.92, 0.02, 3)
    assert aggregate([0.5]) == (0.5, 0.0, 1)


@pytest.mark.slow  # a whole study chain, twice
def test_s1_runs_end_to_end_reports_the_originals_and_runs_nothing_twice(cli, data_root, tmp_path):
    out = tmp_path / "s1"
    args = ("study", "s1", "--epochs", "1", "--trials", "1", "--seeds", "2", "--root", data_root, "--out", out,
            "--quiet", "--json")  # fmt: skip
    first = cli(*args)
    assert first.code == 0, first.err
    result = first.json()
    # 4 models + 2 searches' best configurations, each over 2 seeds
    assert (result["ran"], result["kept"], len(result["runs"])) == (12, 0, 12)
    report = (out / "report.md").read_text()
    assert "Smoke run on stand-in data" in report and "digits" in report
    assert "| mnist-722 | 2 | 722 | 722 |" in report  # n = 2 seeds; our parameter count beside the seed's
    assert "0.96" in report and "±" in report
    assert "git " in report and "Wall time" in report
    assert (out / "table_budget.png").stat().st_size > 0
    table = result["tables"]["budget"]
    seed_model = next(r for r in table if r["row"] == "mnist-722")
    assert seed_model["test_accuracy"]["n"] == 2 and seed_model["test_accuracy (original)"] == 0.96
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 12  # one line per run

    plan = cli("study", "s1", *args[2:], "--plan").json()  # the same options: every run is there already
    assert {row["state"] for row in plan["rows"] if row["kind"] != "tune"} == {"done"}
    assert plan["estimate_seconds"] == pytest.approx(sum(r["seconds"] or 0 for r in plan["rows"] if r["kind"] == "tune"), abs=0.1)

    again = cli(*args).json()
    assert (again["ran"], again["resumed"], again["kept"]) == (0, 0, 12)
    assert again["runs"] == result["runs"]

    # every run's specification changes: all run again (over one seed: six runs make the point in half the time).
    # A name the searches do not sample (they sample lr, batch, schedule, augmentation: a --set of those is theirs).
    one_seed = tuple("1" if a == "2" and args[i - 1] == "--seeds" else a for i, a in enumerate(args))
    changed = cli(*one_seed, "--set", "train.weight_decay=0.0001").json()
    assert (changed["ran"], changed["kept"]) == (6, 0)
    assert not set(changed["runs"]) & set(result["runs"])



@pytest.mark.slow  # a whole study chain, twice
def test_a_study_stopped_by_ctrl_c_resumes_its_interrupted_run(cli, data_root, tmp_path, monkeypatch):
    from cnnbench.runs import kinds as training
    from cnnbench.engine import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, trainer, result):
            raise KeyboardInterrupt

    real_run, started = training.run, []

    def run_stopping_the_second(spec, **options):
        started.append(spec.model_name)
        if len(started) == 2:  # mnist-7498: Ctrl-C at the end of its first epoch
            options["callbacks"] = [*options.get("callbacks", ()), CtrlC()]
        return real_run(spec, **options)

    monkeypatch.setattr(training, "run", run_stopping_the_second)
    args = ("study", "s1", "--epochs", "2", "--trials", "1", "--seeds", "1", "--root", data_root, "--out", tmp_path,
            "--quiet", "--json")  # fmt: skip
    assert cli(*args).code == 130
    monkeypatch.setattr(training, "run", real_run)
    again = cli(*args).json()
    assert (again["resumed"], again["kept"], again["ran"]) == (1, 1, 4)
    stopped = Path(again["runs"][1])
    assert json.loads((stopped / "summary.json").read_text())["epochs_completed"] == 2
    assert len(list(stopped.parent.iterdir())) == 1  # resumed in place, not run again beside


def test_full_scale_with_missing_data_stops_before_any_run(cli, tmp_path):
    done = cli("study", "s4", "--scale", "full", "--root", tmp_path / "empty", "--out", tmp_path / "s4")
    assert done.code == 2
    error = done.err.strip().splitlines()[-1]  # after the "checking data" line
    assert error.startswith("cnnbench: error: catsdogs") and str(tmp_path / "empty") in error
    assert not (tmp_path / "s4" / "runs").exists()


@pytest.mark.parametrize("flags, named", [(("--scale", "huge"), "--scale"), (("--set", "train.lr"), "--set"),
                                          (("--set", "train.bogus=1"), "train.bogus"), (("--seeds", "0"), "--seeds")])
def test_bad_study_options_are_usage_errors(cli, tmp_path, flags, named):
    done = cli("study", "s1", *flags, "--out", tmp_path)
    assert done.code == 2 and named in done.err
    assert not any(tmp_path.iterdir())


def test_a_command_line_value_never_overrides_what_a_row_is_labelled_by():
    from cnnbench.studies.recipes import _spec_of

    lr_rows = next(s for s in load_recipe("s2", "smoke").steps if s.name == "lr").variants()
    specs = [_spec_of(v, root=Path("data"), overrides={"train.lr": 1e-5, "train.epochs": 1}) for v in lr_rows]
    assert [s.train.lr for s in specs] == [1e-3, 1e-4, 1e-5]  # the sweep point wins
    assert {s.train.epochs for s in specs} == {1}  # what the row does not sweep takes the command line's value


def test_every_sweep_point_has_its_own_folder():
    from cnnbench.studies.runner import _slug

    for name in recipe_names():
        for step in load_recipe(name, "full").steps:
            folders = [_slug(v, step) for v in step.variants()]
            assert len(set(folders)) == len(folders), (name, step.name, folders)


def test_a_plan_lists_every_run_with_an_estimate_and_trains_nothing(cli, tmp_path):
    out = tmp_path / "s4"
    done = cli("study", "s4", "--plan", "--epochs", "1", "--out", out, "--json")
    assert done.code == 0, done.err
    plan = done.json()
    rows = {row["row"]: row for row in plan["rows"]}
    # the smoke chain's own pretraining, the transfer that starts from it, the search, the 2x2x2 data sweep
    assert rows["pretrain vgg16"]["data"] == "shapes-other 32px" and rows["vgg16 frozen"]["state"] == "to run"
    assert sum(r["row"].startswith("base (") for r in plan["rows"]) == 8 and "search best: the search" in rows
    assert all(r["images_per_s"] > 0 and r["seconds"] > 0 for r in plan["rows"]), plan["rows"]
    assert plan["estimate_seconds"] > 0 and not plan["missing"]
    assert rows["catsdogs-base"]["train_images"] == 320  # 400 images of two classes, 80% for training
    assert not out.exists(), "a plan writes nothing"


def test_a_full_scale_plan_names_what_is_missing_before_anything_is_fetched(cli, tmp_path):
    done = cli("study", "s4", "--plan", "--scale", "full", "--root", tmp_path / "empty", "--epochs", "1",
               "--set", "data.size=32", "--out", tmp_path / "s4")  # fmt: skip
    assert done.code == 0, done.err
    assert "catsdogs under" in done.out and "missing (its files go in" in done.out
    assert "vgg16" in done.out and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("flags, named", [(("demo", "--plan"), "--plan"), (("--plan",), "--plan"), (("s1", "--plan", "--scale", "big"), "--scale"),
                                          (("s1", "--plan", "--trials", "0"), "--trials"),
                                          (("s1", "--plan", "--set", "model.nope=1"), "model.nope")])
def test_bad_plan_options_are_usage_errors(cli, tmp_path, flags, named):
    done = cli("study", *flags, "--out", tmp_path / "out")
    assert done.code == 2 and named in done.err and "Traceback" not in done.err
    assert not (tmp_path / "out").exists()


def test_a_pruning_tables_parent_row_gets_what_the_prune_step_measured_it_at(tmp_path):
    from cnnbench.studies.recipes import Row
    from cnnbench.studies.report import _add_parent_measurements

    step = next(s for s in load_recipe("s3", "smoke").steps if s.prune)
    child, parent = tmp_path / "prune" / "child-run", tmp_path / "whole" / "parent-run"
    (child.parent / "report").mkdir(parents=True)
    (child.parent / "report" / "prune_report.csv").write_text(
        "run,role,nonzero_params,sparsity,checkpoint_gzip_bytes,latency_ms_b1,latency_ms_b64,path\n"
        f"parent-run,parent,11181642,0.0,41000000,3.5,60.2,{parent}\n"
        f"child-run,pruned,10800000,0.034,39000000,3.4,59.9,{child}\n")  # fmt: skip
    records = {parent.resolve(): {"nonzero_params": float("nan"), "latency_ms_b1": None},  # pandas' empty cells
               child.resolve(): {"nonzero_params": 10800000, "latency_ms_b1": 3.4}}  # fmt: skip
    _add_parent_measurements([Row(step.variants()[0], 0, child)], records)
    assert records[parent.resolve()]["nonzero_params"] == 11181642 and records[parent.resolve()]["latency_ms_b1"] == 3.5
    assert records[parent.resolve()]["checkpoint_gzip_bytes"] == 41000000
    assert records[child.resolve()]["nonzero_params"] == 10800000, "a child keeps its own prune.json figures"


@pytest.mark.parametrize("best, holds", [({"frozen": 0.4, "last two Fire modules": 0.5, "all unfrozen": 0.7}, True),
                                         ({"frozen": 0.4, "last two Fire modules": 0.7, "all unfrozen": 0.5}, False)])
def test_the_report_says_whether_the_seeds_ordering_holds_in_ours(best, holds):
    from cnnbench.studies.report import _findings

    recipe = load_recipe("s5", "smoke")
    table = next(t for t in recipe.tables if t["name"] == "grid")
    variants = [v for s in recipe.steps if "grid" in s.tables for v in s.variants()]
    # each regime's best row carries the figure; its other rows are lower
    rows = [{"test_accuracy": {"mean": best[v.step.name] - (0 if v.values["train.epochs"] == 6 else 0.3)}}
            for v in variants]  # fmt: skip
    (finding,) = _findings(table, variants, rows)
    assert finding["holds"] is holds
    assert "frozen < last two Fire modules < all unfrozen (each at its best row)" in finding["text"]
    expected = "**the same order**" if holds else "all unfrozen (0.5) is below last two Fire modules (0.7)"
    assert expected in finding["text"], finding["text"]
