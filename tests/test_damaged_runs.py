"""Run directories that are damaged, being written, or cannot be written: every command that reads one answers with
one line naming the file, what is wrong and what to do (exit 2), and `report` still tabulates the other runs."""

from __future__ import annotations

import errno
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest
import torch

from cnnbench.core import storage
from cnnbench.data.prepare import load_or_prepare
from cnnbench.core.errors import UsageError
from cnnbench.runs.rundir import DamagedRun, RunDir
from tests.helpers import DIGITS28, INTERRUPTED722, digits


@pytest.fixture
def template(trained_run) -> Path:
    """An interrupted run after epoch 1 of 2 (both checkpoints, one metrics row, a summary, a test evaluation): every
    command can read it, and --resume has an epoch left to train. The session's shared run (`trained_run`): tests
    damage copies of it."""
    return trained_run(**INTERRUPTED722, evaluate=["test"])


@pytest.fixture
def copy_run(template, tmp_path):
    def copy(name: str = "run", parent: Path | None = None) -> Path:
        return Path(shutil.copytree(template, (parent or tmp_path) / name))

    return copy


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_config(run: Path, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


Damage = namedtuple("Damage", "name apply says")
CONFIG_DAMAGES = [
    Damage("config-truncated", lambda run: truncate(run / "config.json"), "config.json is not valid JSON ("),
    Damage("config-not-json", lambda run: (run / "config.json").write_text("model = mnist-722\n"),
           "config.json is not valid JSON"),
    Damage("config-empty", lambda run: (run / "config.json").write_bytes(b""), "config.json is empty"),
    Damage("config-not-an-object", lambda run: (run / "config.json").write_text("[1, 2]"),
           "config.json holds a JSON array, not an object"),
    Damage("config-lacks-model", lambda run: edit_config(run, lambda c: c.pop("model")),
           "config.json lacks the key 'model'"),
    Damage("config-lacks-data", lambda run: edit_config(run, lambda c: c.pop("data")),
           "config.json lacks the key 'data'"),
    Damage("config-model-is-null", lambda run: edit_config(run, lambda c: c.update(model=None)),
           "config.json: its 'model' is a JSON null, not an object"),
]  # fmt: skip


def checkpoint_damages(name: str) -> list[Damage]:
    path = f"checkpoints/{name}.pt"
    says = f"{name}.pt cannot be read as a checkpoint (truncated or damaged"
    return [
        Damage(f"{name}-truncated", lambda run: truncate(run / path), says),
        Damage(f"{name}-empty", lambda run: (run / path).write_bytes(b""), says),
        Damage(f"{name}-garbage", lambda run: (run / path).write_bytes(bytes(range(256)) * 40), says),
        Damage(f"{name}-not-a-checkpoint", lambda run: torch.save({"weights": torch.zeros(3)}, run / path),
               f"{name}.pt is not a cnnbench {name} checkpoint (it lacks 'model'"),
    ]  # fmt: skip


def damaged_metrics_row(run: Path) -> None:
    with (run / "metrics.csv").open("a") as handle:
        handle.write("2,0.001,oops,0.5\n")


METRICS_DAMAGE = Damage("metrics-damaged-row", damaged_metrics_row, "metrics.csv: line 3 has 4 fields")


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnbench: error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("damage", CONFIG_DAMAGES + checkpoint_damages("best"), ids=lambda d: d.name)
def test_evaluate_a_damaged_run_is_one_line(cli, copy_run, damage):
    run = copy_run()
    damage.apply(run)
    assert_one_line_error(cli("evaluate", run, "--quiet"), damage.says, str(run))


@pytest.mark.parametrize("damage", checkpoint_damages("last")[:1], ids=lambda d: d.name)
def test_evaluate_a_damaged_last_checkpoint_points_at_the_best_one(cli, copy_run, damage):
    run = copy_run()
    damage.apply(run)
    assert_one_line_error(cli("evaluate", run, "--checkpoint", "last", "--quiet"), damage.says, "--checkpoint best")


@pytest.mark.parametrize("damage", CONFIG_DAMAGES + checkpoint_damages("last") + [METRICS_DAMAGE],
                         ids=lambda d: d.name)  # fmt: skip
def test_resume_a_damaged_run_is_one_line(cli, copy_run, damage):
    run = copy_run()
    damage.apply(run)
    assert_one_line_error(cli("train", "--resume", run, "--quiet"), damage.says)


@pytest.mark.parametrize("damage", CONFIG_DAMAGES[:5] + checkpoint_damages("best")[:2], ids=lambda d: d.name)
def test_finetune_from_a_damaged_run_is_one_line(cli, copy_run, data_root, tmp_path, damage):
    run = copy_run()
    damage.apply(run)
    result = cli("finetune", "--weights", f"run:{run}", *DIGITS28, "--root", data_root, "--epochs", "1",
                 "--out", tmp_path / "out", "--quiet")  # fmt: skip
    assert_one_line_error(result, damage.says)


def test_a_damaged_summary_reads_as_damaged_and_does_not_stop_evaluate(cli, copy_run):
    run = copy_run()
    truncate(run / "summary.json")
    assert RunDir(run).status() == "damaged"
    with pytest.raises(DamagedRun, match=r"summary.json is not valid JSON \(.*truncated\?\); delete it"):
        RunDir(run).summary()
    assert cli("evaluate", run, "--quiet", "--json").code == 0  # evaluate needs no summary


def test_a_summary_without_a_status_is_damaged(copy_run):
    run = copy_run()
    (run / "summary.json").write_text('{"epochs_completed": 1}')
    assert RunDir(run).status() == "damaged"


def test_report_tabulates_good_runs_beside_one_of_each_damage(cli, copy_run, tmp_path):
    runs = tmp_path / "runs"
    for index in range(3):
        copy_run(f"good-{index}", runs)
    damages = {
        "config-truncated": lambda run: truncate(run / "config.json"),
        "config-not-an-object": lambda run: (run / "config.json").write_text('"a string"'),
        "config-lacks-train": lambda run: edit_config(run, lambda c: c.pop("train")),
        "summary-truncated": lambda run: truncate(run / "summary.json"),
        "metrics-damaged-row": damaged_metrics_row,
        "eval-truncated": lambda run: truncate(run / "eval" / "test.json"),
        "summary-best-is-a-list": lambda run: (run / "summary.json").write_text('{"status": "completed", "best": []}'),
    }  # fmt: skip
    for name, damage in damages.items():
        damage(copy_run(name, runs))

    result = cli("report", runs, "--out", tmp_path / "report", "--plots", "--json")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and "7 damaged run(s)" in result.err
    rows = {row["run"]: row for row in result.json()["rows"]}
    assert len(rows) == 10 and "reason" in next(iter(rows.values()))
    assert {name for name, row in rows.items() if row["status"] == "damaged"} == set(damages)
    assert all(rows[f"good-{i}"]["status"] == "interrupted" and 0 <= rows[f"good-{i}"]["test_accuracy"] <= 1
               for i in range(3))  # fmt: skip
    assert "config.json is not valid JSON" in rows["config-truncated"]["reason"]
    assert "lacks the key 'train'" in rows["config-lacks-train"]["reason"]
    assert "summary.json is not valid JSON" in rows["summary-truncated"]["reason"]
    assert rows["summary-truncated"]["model"] == "mnist-722", "a damaged row keeps what could be read"
    assert "metrics.csv: line 3" in rows["metrics-damaged-row"]["reason"]
    assert "test.json is not valid JSON" in rows["eval-truncated"]["reason"]
    assert all("\n" not in row["reason"] for row in rows.values() if row["status"] == "damaged")
    plots = sorted(Path(p).stem for p in result.json()["plots"])
    assert plots == ["good-0", "good-1", "good-2"], "a damaged run's curves are skipped"
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert len(table) == 10 and "reason" in table.columns


def test_metrics_leave_out_a_row_still_being_appended(cli, copy_run, tmp_path):
    run = copy_run()
    with (run / "metrics.csv").open("a") as handle:
        handle.write("2,0.001,0.53")  # a training process caught mid-row: no newline yet
    rows = RunDir(run).metrics()
    assert [row["epoch"] for row in rows] == [1.0]
    (run / "summary.json").unlink()  # still training, as far as a reader can tell
    result = cli("report", run, "--out", tmp_path / "report", "--columns", "run,status,epochs", "--json")
    assert result.code == 0 and result.json()["rows"][0]["status"] == "incomplete"
    assert result.json()["rows"][0]["epochs"] == 1


def test_temporary_files_of_a_killed_writer_are_ignored_and_removed_by_the_owner(cli, copy_run, tmp_path):
    run = copy_run()
    leftovers = [run / ".config.json.k3x9_a1b.tmp", run / ".summary.json.zz1q2w3e.tmp",
                 run / "checkpoints" / ".last.pt.ab12cd34.tmp", run / "checkpoints" / ".best.pt.q9w8e7r6.tmp"]
    in_eval = run / "eval" / ".test.json.m1n2b3v4.tmp"  # evaluate may be writing it while the run trains
    for path in [*leftovers, in_eval]:
        path.write_bytes(b"half a file")
    assert RunDir(run).checkpoint_names() == ["best", "last"]
    assert set(RunDir(run).evaluations()) == {"test"}
    assert cli("report", run, "--out", tmp_path / "report", "--json").json()["rows"][0]["status"] == "interrupted"
    assert cli("evaluate", run, "--quiet", "--json").code == 0

    assert sorted(RunDir(run).remove_stale_temp_files()) == sorted(leftovers)
    assert not any(path.exists() for path in leftovers) and in_eval.exists()
    assert (run / "config.json").is_file() and (run / "checkpoints" / "last.pt").is_file()


def test_a_deleted_prepared_cache_is_prepared_again_and_a_moved_dataset_is_one_line(cli, tmp_path):
    from tests.fixtures_formats import write_image_folder

    tree = tmp_path / "tree"
    write_image_folder(tree, {"a": 6, "b": 6}, size=12)
    trained = cli("train", "--model", "fit:1000", "--dataset", f"folder:{tree}", "--size", "12", "--root",
                  tmp_path / "data", "--epochs", "1", "--out", tmp_path / "runs", "--quiet", "--json")  # fmt: skip
    run = Path(trained.json()["run_dir"])
    cache = Path(json.loads((run / "config.json").read_text())["prepared"]["directory"])
    shutil.rmtree(cache)
    assert cli("evaluate", run, "--quiet", "--json").code == 0 and (cache / "manifest.json").is_file()
    shutil.rmtree(cache)
    tree.rename(tmp_path / "moved")
    assert_one_line_error(cli("evaluate", run, "--quiet"), "cannot load", "prepared cache", "nor prepare it again",
                          f"{tree}' does not exist")  # fmt: skip


def test_a_split_without_a_recorded_hash_is_one_line(cli, copy_run):
    run = copy_run()
    edit_config(run, lambda c: c["prepared"]["split_hashes"].pop("val"))
    assert_one_line_error(cli("evaluate", run, "--split", "val", "--quiet"), "records no hash for the val split",
                          "evaluate --split train or test")  # fmt: skip


def refuse_writes(monkeypatch, code: int) -> None:
    def refuse(path, write):
        raise OSError(code, __import__("os").strerror(code), str(path))

    monkeypatch.setattr(storage, "write_atomic", refuse)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "free space on /"), (errno.EROFS, "is mounted read-only"),
                                        (errno.EACCES, "Permission denied"), (errno.EDQUOT, "within your quota")])
def test_evaluate_into_a_run_that_cannot_be_written_is_one_line(cli, copy_run, monkeypatch, code, says):
    run = copy_run()
    refuse_writes(monkeypatch, code)
    assert_one_line_error(cli("evaluate", run, "--quiet"), f"cannot write {run / 'eval'}", says)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "free space on /"), (errno.EROFS, "give another --out")])
def test_report_into_a_place_that_cannot_be_written_is_one_line(cli, copy_run, tmp_path, monkeypatch, code, says):
    run = copy_run()
    refuse_writes(monkeypatch, code)
    assert_one_line_error(cli("report", run, "--out", tmp_path / "report"), "cannot write", "report.csv", says)


@pytest.mark.parametrize("plots", [False, True])
def test_report_out_that_is_a_file_is_one_line(cli, copy_run, tmp_path, plots):
    run = copy_run()
    blocking = tmp_path / "a-file"
    blocking.write_text("not a folder")
    args = ["--plots"] if plots else []
    assert_one_line_error(cli("report", run, "--out", blocking, *args), f"{blocking} is a file, not a folder",
                          "give another --out")  # fmt: skip


def test_a_checkpoint_on_a_full_disk_says_so(cli, data_root, tmp_path, monkeypatch):
    load_or_prepare(digits(data_root))  # the data cache before torch.save stops working

    def full_disk(payload, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(10**9, 10**9, 100))
    result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--epochs", "1",
                 "--out", tmp_path / "runs", "--quiet")  # fmt: skip
    assert_one_line_error(result, "checkpoints/", "No space left on device", "free space on /")


def test_a_failed_checkpoint_write_is_called_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def failed_write(payload, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(torch, "save", failed_write)
    run, payload = RunDir(tmp_path), {"model": {"w": torch.zeros(1000)}}  # 4,000 bytes of tensors
    with pytest.raises(RuntimeError, match="unexpected pos"):  # room enough on the disk: not a full disk
        run.save_checkpoint("last", payload)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(10**9, 10**9, 3999))
    with pytest.raises(UsageError, match=r"cannot write .*last\.pt: No space left on device; free space on /"):
        run.save_checkpoint("last", payload)
    assert not list((tmp_path / "checkpoints").iterdir()), "no partial file is left behind"
