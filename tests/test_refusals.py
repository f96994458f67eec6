"""Requests that cannot do what they say are refused before any work, in one line that names the value and the way
out; a search whose grid runs out ends cleanly; a stopped search exits as documented (issue 25, 3-4)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench.core.errors import UsageError
from cnnbench.prune.sweep import parse_amounts, parse_macs
from cnnbench.search import TuneOptions, parse_space, tune
from cnnbench.search.options import validate_options
from cnnbench.spec.run import resolve


def scratch(data_root: Path):
    return resolve({"model.name": "mnist-722", "data.size": 28, "data.root": data_root, "train.epochs": 1})


def one_line(result) -> str:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_a_transfer_space_without_a_backbone_says_it_needs_one(cli, tmp_path):
    line = one_line(cli("tune", "--space", "s3", "--n-trials", "1", "--folder", tmp_path / "s3"))
    assert "samples fine-tuning options (model.head.units)" in line and "--backbone" in line
    assert not (tmp_path / "s3").exists()  # refused before the study folder exists


@pytest.mark.parametrize(("entry", "expected"), [
    ({"train.lr": {"int": [1, 3]}}, "train.lr takes float, not an int range; give float = [1, 3]"),
    ({"train.epochs": {"float": [1.0, 3.0]}}, "train.epochs takes int, not a float range"),
])  # fmt: skip
def test_a_space_entry_of_the_wrong_type_is_refused(entry, expected):
    with pytest.raises(UsageError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_space(entry, "space.toml")


@pytest.mark.parametrize("name", ["", "tüne", "a b", ".hidden", "x/y"])
def test_a_study_name_must_be_a_plain_folder_name(name, tmp_path):
    with pytest.raises(UsageError, match="bad --study"):
        validate_options(TuneOptions(study=name, folder=tmp_path))


def test_an_empty_study_name_on_the_command_line_is_refused_not_replaced(cli, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"train.lr": {"choices": [1e-3]}}))
    assert "bad --study ''" in one_line(cli("tune", "--space", space, "--study", "", "--folder", tmp_path / "s"))


def test_an_exhausted_grid_ends_the_study_cleanly_and_a_rerun_adds_nothing(data_root, tmp_path, caplog):
    space = parse_space({"train.lr": {"choices": [1e-3, 3e-3]}}, "t")
    options = TuneOptions(study="g", folder=tmp_path / "g", n_trials=5, sampler="grid")
    caplog.set_level(logging.WARNING, logger="cnnbench")
    summary = tune(scratch(data_root), "g", space, options)
    assert summary["complete"] == 2
    assert any("the grid has 2 point(s), all tried" in line for line in caplog.messages)
    again = tune(scratch(data_root), "g", space, options)
    assert again["complete"] == 2 and len(list((options.folder / "trials").iterdir())) == 2


def test_duplicate_amounts_and_targets_are_refused():
    with pytest.raises(UsageError, match="gives 0.5 twice"):
        parse_amounts("0.5,0.7,0.5")
    with pytest.raises(UsageError, match="gives 5k twice"):
        parse_macs("5000,5k")
    assert parse_amounts("0.5,0.7") == (0.5, 0.7)


def test_pruning_that_would_remove_nothing_is_refused_and_leaves_nothing(cli, trained_run, tmp_path, monkeypatch):
    from cnnbench.runs import resources

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the request was refused")

    parent = trained_run("mnist-722", epochs=2)
    monkeypatch.setattr(resources, "prepared", no_data)
    macs = json.loads((parent / "config.json").read_text())["params"]["macs"]
    line = one_line(cli("prune", parent, "--method", "structured", "--target-macs", str(macs), "--out", tmp_path))
    assert f"already needs only {macs:,} MACs per image" in line
    # mnist-722 at 0.9: Torch-Pruning keeps every coupled layer whole, so the "pruned" run would be the parent again.
    # Found when the request is checked, before the data is read and before any run folder.
    line = one_line(cli("prune", parent, "--method", "structured", "--amount", "0.9", "--out", tmp_path, "-q"))
    assert "removes no channel of mnist-722" in line and "--method magnitude" in line
    assert list(tmp_path.iterdir()) == []


def test_a_search_or_study_stopped_by_sigterm_exits_143_like_train():
    """tune and study stop when a run they started was stopped; how it was stopped decides the exit code."""
    from cnnbench.core.errors import Terminated
    from cnnbench.runs.pipeline import RunResult

    with pytest.raises(Terminated):  # main() turns it into exit 143
        RunResult(run=None, status="interrupted", summary={"signal": "SIGTERM"}).raise_if_interrupted()
    with pytest.raises(KeyboardInterrupt):  # exit 130
        RunResult(run=None, status="interrupted", summary={}).raise_if_interrupted()
    RunResult(run=None, status="completed", summary={}).raise_if_interrupted()  # nothing to stop


def test_a_config_folder_is_named_as_a_folder_and_a_byte_order_mark_is_read_past(tmp_path):
    from cnnbench.spec.run import load_file

    with pytest.raises(UsageError, match="is a folder; give a TOML or JSON file"):
        load_file(tmp_path)
    bom = tmp_path / "notepad.toml"
    bom.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 3\n")  # what Windows Notepad saves
    assert load_file(bom) == {"train.epochs": 3}


def test_tune_refuses_out_which_it_would_ignore(cli, tmp_path):
    line = one_line(cli("tune", "--space", "s4", "--out", tmp_path / "x"))
    assert "No such option: --out" in line and not (tmp_path / "x").exists()


def test_a_database_that_refuses_is_one_line_and_leaves_no_folder(cli, tmp_path):
    line = one_line(cli("tune", "--space", "s4", "--storage", "sqlite:////nonexistent/dir/x.db", "--folder",
                        tmp_path / "study"))  # fmt: skip
    assert "--storage 'sqlite:////nonexistent/dir/x.db': cannot open it" in line
    assert not (tmp_path / "study").exists()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to bind-mount a folder")
def test_a_read_only_bind_mount_is_named_not_the_root_of_its_device(trained_run, tmp_path):
    """A read-only bind mount of one folder sits on the same device as its parent: the message must name it, not /."""
    from tests.helpers import copy_run

    run = copy_run(trained_run("mnist-722", epochs=2), tmp_path)
    (run / "eval").mkdir(exist_ok=True)
    script = (f"mount --bind {run / 'eval'} {run / 'eval'} && mount -o remount,ro,bind {run / 'eval'} && "
              f"exec {sys.executable} -m cnnbench evaluate {run} -q")  # fmt: skip
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if "mount" in result.stderr and result.returncode not in (0, 2):
        pytest.skip(f"cannot bind-mount here: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"({run / 'eval'} is mounted read-only)" in lines[0], result.stderr


def test_a_name_too_long_for_the_file_system_says_so_and_what_to_do(cli, tmp_path):
    line = one_line(cli("prepare", "digits", "--root", tmp_path / ("x" * 300), "-q"))
    assert "File name too long (a name of 300 bytes" in line and "use shorter names" in line


def test_a_refused_destination_leaves_none_of_the_folders_it_would_have_made(cli, trained_run, tmp_path):
    long_name = "x" * 300
    train = cli("train", "--model", "mnist-722", "--dataset", "digits", "--size", "28", "--epochs", "1", "--out",
                tmp_path / "runs" / "deep" / long_name, "-q")  # fmt: skip
    assert "File name too long" in one_line(train)
    exported = cli("export", trained_run("mnist-722", epochs=2), "--format", "torchscript", "--out",
                   tmp_path / "exports" / long_name, "-q")  # fmt: skip
    assert "File name too long" in one_line(exported)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither runs/deep nor exports was left behind


def test_an_impossible_place_names_the_option_that_moves_it(cli, tmp_path):
    line = one_line(cli("tune", "--space", "s4", "--folder", "/proc/cnnbench-nowhere"))
    assert line.endswith("/proc/cnnbench-nowhere: No such file or directory; check the path, or choose another place "
                         "(--folder)")  # fmt: skip
