"""The command line as a user meets it: listings, budgets, JSON output and clear one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom cnnbench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'cnnbench --help imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "evaluate" in done.stdout


def test_datasets_lists_every_dataset_with_where_its_files_go(cli, tmp_path):
    result = cli("datasets", "--root", tmp_path, "--json")
    assert result.code == 0
    rows = {row["name"]: row for row in result.json()["datasets"]}
    assert set(rows) == {"digits", "mnist", "cifar10", "cifar100", "flowers102", "catsdogs", "pets", "shapes", "shapes-small", "shapes-other"}
    assert rows["mnist"]["files"] == str(tmp_path / "MNIST/raw/")
    assert rows["mnist"]["present"] is False and rows["digits"]["present"] is True
    assert rows["cifar100"]["classes"] == 100 and rows["cifar100"]["shape"] == [3, 32, 32]


def test_models_lists_the_zoo_with_keras_totals(cli):
    result = cli("models", "--json")
    assert result.code == 0
    rows = {row["name"]: row for row in result.json()["models"]}
    assert rows["mnist-7498"]["trainable"] == 7386 and rows["mnist-7498"]["keras_total"] == 7498
    assert rows["cifar-basic"]["keras_total"] == 1_490_628


def test_budget_within_and_over_exit_codes(cli):
    ok = cli("budget", "mnist-7498", "--dataset", "mnist", "--max-params", "7500", "--json")
    assert ok.code == 0
    assert ok.json()["budget"] == {"max_params": 7500, "count": "trainable", "value": 7386, "within": True}
    over = cli("budget", "mnist-7498", "--dataset", "mnist", "--max-params", "7400", "--count", "keras_total")
    assert over.code == 1
    assert "OVER budget: keras_total = 7,498 vs max 7,400" in over.out


def test_budget_fits_a_model_to_a_dataset_without_its_files(cli):
    result = cli("budget", "fit:7500", "--dataset", "cifar10", "--max-params", "7500", "--json")
    assert result.code == 0
    data = result.json()
    assert data["input"] == "3x32x32, 10 classes"
    assert 6000 < data["trainable"] <= 7500


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--model", "resnet9000", "--epochs", "1"], "unknown model 'resnet9000'"),
        (["train", "--dataset", "imagenet", "--epochs", "1"], "unknown dataset 'imagenet'"),
        (["train", "--split", "0.5,0.5", "--epochs", "1"], "bad --split '0.5,0.5'"),
        (["train", "--epochs", "-3"], "bad --epochs -3"),
        (["train", "--optimizer", "adamax"], "choose from adam, adamw, sgd, rmsprop"),
        (["train", "--augment", "spin=3"], "bad augmentation 'spin=3'"),
        (["train", "--frobnicate"], "No such option: --frobnicate"),
        (["train", "--epochs", "ten"], "'--epochs'"),
        (["evaluate", "/no/such/run"], "'/no/such/run' is not a run directory"),
        (["report", "/no/such/folder"], "'/no/such/folder' does not exist"),
        (["prepare", "folder:/no/such/tree"], "does not exist"),
        (["budget", "mnist-7498", "--dataset", "mnist", "--count", "all"], "bad --count 'all'"),
        (["study", "s9"], "unknown study 's9'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(cli, tmp_path, args, expected):
    result = cli(*args, *(["--root", tmp_path] if args[0] in ("train", "prepare") else []))
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert expected in lines[0]
    assert "Traceback" not in result.err


def test_missing_dataset_files_say_where_to_put_them(cli, tmp_path):
    result = cli("prepare", "mnist", "--root", tmp_path)
    assert result.code == 2
    assert str(tmp_path / "MNIST" / "raw") in result.err and "--download" in result.err


def test_the_console_script_runs_outside_python(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cnnbench", "budget", "mnist-722", "--json"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"trainable": 722' in done.stdout


def test_version(cli):
    from cnnbench import __version__

    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"cnnbench {__version__}"


def test_an_option_reads_the_same_in_every_command_that_takes_it():
    """One table (spec/run.py OPTIONS) gives every command its run, data and model options: the same flag has the
    same help, type and default wherever it appears, and a user learns it once."""
    import typer.main

    from cnnbench.cli import app

    group = typer.main.get_command(app)
    seen: dict[str, dict[str, tuple]] = {}
    for name in ("train", "finetune", "tune", "prepare", "budget", "models", "datasets", "study"):
        for param in group.commands[name].params:
            for flag in param.opts:
                if flag in ("--root", "--size", "--classes", "--grayscale", "--split", "--val-fraction", "--storage",
                            "--source", "--download", "--lr", "--batch-size"):
                    seen.setdefault(flag, {})[name] = (param.help, param.is_flag, param.rich_help_panel)
    assert set(seen["--root"]) == {"train", "finetune", "tune", "prepare", "datasets", "study"}
    assert set(seen["--size"]) == {"train", "finetune", "tune", "prepare", "budget", "models"}
    for flag in ("--root", "--size", "--classes", "--grayscale", "--split", "--val-fraction", "--source", "--download"):
        assert len(set(seen[flag].values())) == 1, (flag, seen[flag])
    assert seen["--storage"]["tune"] != seen["--storage"]["train"]  # tune's: its study's database
