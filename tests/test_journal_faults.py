"""A search study's journal, damaged every way a kill, a full disk or a stray write leaves it, and lost: the study
loses no finished trial, says exactly what happened, and offers the way out (`tune --rebuild`)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench.core.errors import UsageError
from cnnbench.search import TuneOptions, parse_space, tune
from cnnbench.search.journal import scan
from cnnbench.spec.run import resolve

SPACE = {"train.lr": {"float": [1e-3, 3e-2], "log": True}}


def base(data_root: Path):
    return resolve({"model.name": "mnist-722", "data.size": 28, "data.root": data_root, "train.epochs": 1})


def options(folder: Path, n_trials: int, **more) -> TuneOptions:
    return TuneOptions(study="j", folder=folder, n_trials=n_trials, seed=1, **more)


def trial_states(folder: Path) -> list[str]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return [t.state.name for t in optuna.load_study(study_name="j", storage=storage).trials]


@pytest.fixture(scope="module")
def finished_study(data_root, tmp_path_factory) -> Path:
    """A study of two completed trials; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("study") / "j"
    tune(base(data_root), "j", parse_space(SPACE, "t"), options(folder, 2))
    assert trial_states(folder) == ["COMPLETE", "COMPLETE"]
    return folder


@pytest.fixture
def study_copy(finished_study, tmp_path) -> Path:
    return Path(shutil.copytree(finished_study, tmp_path / "j"))


def test_scan_finds_the_first_bad_record_and_where_it_starts():
    good = b'{"a": 1}\n{"b": 2}\n'
    assert scan(good) == (2, len(good), None)
    records, sound, bad = scan(good + b'{"c": ')
    assert (records, sound, bad.offset, bad.number, bad.problem) == (2, len(good), len(good), 3,
                                                                     "cut off: no newline at its end")  # fmt: skip
    assert scan(good + b"\xff\xfe\n")[2].problem == "not UTF-8 text"
    assert scan(good + b"[1]\n")[2].problem == "not a JSON object"
    assert scan(b'{"a": 1}\ngarbage\n{"b": 2}\n')[2].number == 2


@pytest.mark.parametrize("damage", ["cut 37 bytes off", "garbage line appended", "not UTF-8 appended",
                                    "cut inside the last record"])  # fmt: skip
def test_a_damaged_last_record_is_set_aside_and_the_study_goes_on(data_root, study_copy, caplog, monkeypatch, damage):
    journal = study_copy / "study.journal"
    original = journal.read_bytes()
    damaged = {"cut 37 bytes off": original[:-37], "garbage line appended": original + b"garbage\n",
               "not UTF-8 appended": original + b"\xff\xfe\xfa",
               "cut inside the last record": original[:-1][: original[:-1].rfind(b"\n") + 20]}[damage]  # fmt: skip
    journal.write_bytes(damaged)
    # The process that wrote the study is this one; the damage stands for its death mid-append, so it must look dead.
    monkeypatch.setattr("cnnbench.search.storage.pid_alive", lambda pid: pid != os.getpid())
    caplog.set_level(logging.WARNING, logger="cnnbench")
    summary = tune(base(data_root), "j", parse_space(SPACE, "t"), options(study_copy, 3))
    warning = next(r.getMessage() for r in caplog.records if "study.journal" in r.getMessage())
    assert "its last record" in warning and "dropped" in warning and ".damaged-" in warning
    kept = list(study_copy.glob("study.journal.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # the file as it was, byte for byte
    # Every trial finished before the damage is still there; the one whose result was lost runs again.
    assert summary["complete"] == 3 and trial_states(study_copy).count("COMPLETE") == 3
    again = tune(base(data_root), "j", parse_space(SPACE, "t"), options(study_copy, 4))  # and the next run too
    assert again["complete"] == 4 and scan(journal.read_bytes())[2] is None


def test_damage_in_the_middle_is_one_line_and_rebuild_recovers_every_finished_trial(cli, data_root, study_copy,
                                                                                     finished_study):
    journal = study_copy / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3] + [b"\x00\x00garbage\n"] + lines[3:]))
    args = ("tune", "--space", _space_file(study_copy.parent), "--study", "j", "--folder", study_copy, "--n-trials",
            "3", "--model", "mnist-722", "--size", "28", "--root", data_root, "--epochs", "1", "--seed", "1")
    refused = cli(*args)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert f"{journal} is damaged at byte" in refused.err and "record 4" in refused.err and "--rebuild" in refused.err
    assert not list(study_copy.glob("study.journal.damaged-*"))  # refusing changes nothing
    rebuilt = cli(*args, "--rebuild", "--json")
    assert rebuilt.code == 0, rebuilt.err
    assert "rebuilt study 'j'" in rebuilt.err and "from 2 trial(s)" in rebuilt.err
    assert rebuilt.json()["complete"] == 3
    kept = list(study_copy.glob("study.journal.damaged-*"))
    assert len(kept) == 1 and b"garbage" in kept[0].read_bytes()
    scores, old = _completed_scores(study_copy), _completed_scores(finished_study)
    assert len(scores) == 3 and scores[:2] == old  # the two old scores came back, then one new trial


def test_a_lost_journal_is_refused_then_rebuilt_from_the_trial_runs(data_root, study_copy, finished_study):
    (study_copy / "study.journal").unlink()
    with pytest.raises(UsageError, match=r"study.journal is missing, but .* holds 2 run\(s\) of 2 trial\(s\)"):
        tune(base(data_root), "j", parse_space(SPACE, "t"), options(study_copy, 2))
    summary = tune(base(data_root), "j", parse_space(SPACE, "t"), options(study_copy, 2, rebuild=True))
    assert summary["complete"] == 2 and len(list((study_copy / "trials").iterdir())) == 2  # nothing trained again
    assert sorted(_completed_scores(study_copy)) == sorted(_completed_scores(finished_study))


def _completed_scores(folder: Path) -> list[float]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return [t.value for t in optuna.load_study(study_name="j", storage=storage).trials if t.value is not None]


def _space_file(folder: Path) -> Path:
    path = folder / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def test_ctrl_c_leaves_the_tables_and_a_moved_study_folder_finds_its_own_runs(data_root, tmp_path, monkeypatch):
    import pandas as pd

    from cnnbench.runs import kinds

    real, calls = kinds.run, []

    def interrupted_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kinds, "run", interrupted_second_trial)
    folder = tmp_path / "first" / "j"
    with pytest.raises(KeyboardInterrupt):
        tune(base(data_root), "j", parse_space(SPACE, "t"), options(folder, 3))
    table = pd.read_csv(folder / "trials.csv")  # written on the way out
    assert list(table["state"]) == ["complete", "fail", "waiting"]  # the stopped one, failed and queued again
    assert (folder / "trials.csv").read_text().splitlines()[1].split(",")[list(table.columns).index("epochs")] == "1"
    monkeypatch.setattr(kinds, "run", real)

    moved = Path(shutil.move(folder, tmp_path / "moved" / "j"))  # the journal records runs inside its folder
    summary = tune(base(data_root), "j", parse_space(SPACE, "t"), options(moved, 3))
    assert summary["complete"] == 3
    runs = pd.read_csv(moved / "trials.csv")["runs"].dropna()
    assert all(str(moved) in text and Path(text).is_dir() for text in runs)
    shutil.rmtree(Path(runs.iloc[0]))
    tune(base(data_root), "j", parse_space(SPACE, "t"), options(moved, 3))  # nothing to add: the tables again
    assert "run directory missing" in pd.read_csv(moved / "trials.csv")["note"].iloc[0]


def test_retrain_best_checks_its_split_first_and_a_rerun_reuses_the_retrain(data_root, tmp_path):
    mnist = resolve({"data.dataset": "mnist", "data.root": tmp_path / "nothing", "model.name": "mnist-722"})
    with pytest.raises(UsageError, match="--retrain-best needs explicit split ratios for mnist"):
        tune(mnist, "j", parse_space(SPACE, "t"), options(tmp_path / "m", 1, retrain_best=True))
    assert not (tmp_path / "m").exists()  # refused before the study (or any trial) exists
    either = parse_space({**SPACE, "data.dataset": {"choices": ["digits", "mnist"]}}, "t")  # a dataset the space picks
    with pytest.raises(UsageError, match="--retrain-best needs explicit split ratios for mnist"):
        tune(base(data_root), "j", either, options(tmp_path / "m", 1, retrain_best=True))
    assert not (tmp_path / "m").exists()

    folder = tmp_path / "r"
    first = tune(base(data_root), "j", parse_space(SPACE, "t"), options(folder, 1, retrain_best=True))
    again = tune(base(data_root), "j", parse_space(SPACE, "t"), options(folder, 1, retrain_best=True))
    assert again["retrained"] == first["retrained"]  # the same run and test figure, not a second retrain
    assert len(list((folder / "best").iterdir())) == 1


@pytest.mark.slow  # two searches in a private mount namespace
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a tmpfs")
def test_a_disk_that_fills_during_a_trial_stops_the_search_cleanly_and_a_rerun_retries_it(data_root, tmp_path):
    """A real full disk (a 150 KB tmpfs: the first trial fits, a later one does not) in the middle of a trial: one
    line naming the file and the mount, exit 2, a journal that still reads; with space again, the same command retries
    the failed trial's configuration and ends with exactly --n-trials completed."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {mount}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    tune_there = (f"{sys.executable} -m cnnbench tune --space {space} --study s --folder {mount / 'study'} --n-trials 3 "
                  f"--model mnist-722 --dataset digits --size 28 --root {data_root} --epochs 2 --precision fp32 "
                  f"--no-channels-last --threads 2 -q")  # fmt: skip
    script = (f"mount -t tmpfs -o size=150k tmpfs {mount} && "
              f"{{ {tune_there} 2> {tmp_path / 'full.err'}; echo $? > {tmp_path / 'full.rc'}; }} && "
              f"mount -o remount,size=20m {mount} && "
              f"{{ {tune_there} 2> {tmp_path / 'again.err'}; echo $? > {tmp_path / 'again.rc'}; }} && "
              f"cp {mount / 'study' / 'trials.csv'} {tmp_path / 'trials.csv'}")  # fmt: skip
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "2", err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cnnbench: error: cannot write ")
    assert f"No space left on device; free space on {mount} and run again" in err
    assert (tmp_path / "again.rc").read_text().strip() == "0", (tmp_path / "again.err").read_text()
    with open(tmp_path / "trials.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    assert [t["state"] for t in trials].count("complete") == 3
    failed = [t["train.lr"] for t in trials if t["state"] == "fail"]
    assert failed and set(failed) <= {t["train.lr"] for t in trials if t["state"] == "complete"}  # retried


# A worker that is killed (SIGKILL) in the middle of Optuna's append: half of the record that tells a trial's result is
# on disk, the append's lock file is left behind, and the process is gone without a word.
_KILLED_MID_APPEND = """
import json, os, signal, sys
from optuna.storages.journal import _file

real_append = _file.JournalFileBackend.append_logs

def append_then_die(self, logs):
    finishes = [log for log in logs if log.get("op_code") == 6 and log.get("state") == 1]
    if finishes and finishes[0]["trial_id"] == 1:  # the second trial's result: write half of it, then die
        real_lock = self._lock
        real_lock.acquire()  # as the real append holds it, and a SIGKILL leaves it
        text = (chr(10).join(json.dumps(log) for log in logs) + chr(10)).encode()
        with open(self._file_path, "ab") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_append(self, logs)

_file.JournalFileBackend.append_logs = append_then_die
from cnnbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_worker_killed_in_the_middle_of_a_journal_append_loses_nothing_finished(data_root, tmp_path):
    """A real SIGKILL while the journal record of a trial's result is half written: the next run sets the cut-off
    record aside (naming the file and the place), removes the lock the dead append left (saying so) and ends with exactly --n-trials completed; the first trial's result is kept, the second trained again."""
    folder = tmp_path / "j"
    args = ["tune", "--space", str(_space_file(tmp_path)), "--study", "j", "--folder", str(folder), "--n-trials", "3",
            "--model", "mnist-722", "--size", "28", "--root", str(data_root), "--epochs", "1", "--seed", "1", "-q"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_APPEND, *args], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    journal = folder / "study.journal"
    assert scan(journal.read_bytes())[2].problem == "cut off: no newline at its end"
    assert Path(f"{journal}.lock").exists()  # what the dead append left
    again = subprocess.run([sys.executable, "-m", "cnnbench", *args, "--json"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"{journal}: its last record" in again.stderr and "dropped" in again.stderr
    assert json.loads(again.stdout)["complete"] == 3
    assert scan(journal.read_bytes())[2] is None and len(list(folder.glob("study.journal.damaged-*"))) == 1
    # Optuna would wait 30 s in silence before breaking the dead append's lock; it is removed, and said so
    assert f"{journal}.lock: left" in again.stderr and "process was killed; removed" in again.stderr


def test_a_retried_trial_continues_its_interrupted_run_from_the_last_checkpoint(data_root, tmp_path, monkeypatch):
    """Ctrl-C in the middle of trial 1 (after its second of three epochs): the rerun's retry continues that run from
    epoch 2 (no third run directory, each epoch trained once), the run records the trial it now belongs to, and
    trial pruning sees the whole curve."""
    import pandas as pd

    from cnnbench.runs.rundir import RunDir
    from cnnbench.search.trial_pruning import TrialPruning

    real = TrialPruning.on_epoch_end

    def stopped_in_trial_1(self, trainer, result):
        real(self, trainer, result)
        if self.trial.number == 1 and result.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrialPruning, "on_epoch_end", stopped_in_trial_1)
    three_epochs = base(data_root).with_values({"train.epochs": 3})
    folder = tmp_path / "j"
    with pytest.raises(KeyboardInterrupt):
        tune(three_epochs, "j", parse_space(SPACE, "t"), options(folder, 2))
    monkeypatch.setattr(TrialPruning, "on_epoch_end", real)
    summary = tune(three_epochs, "j", parse_space(SPACE, "t"), options(folder, 2))
    assert summary["complete"] == 2
    runs = sorted((folder / "trials").iterdir())
    assert len(runs) == 2  # the retry trained no run of its own
    continued = RunDir(runs[1])
    assert [row["epoch"] for row in continued.metrics()] == [1, 2, 3]  # epochs 1-2 before, 3 after: none twice
    assert continued.read_summary().status == "completed" and len(continued.read_config().resumed) == 1
    record = continued.read_config().records["trial"]
    assert (record["number"], record["continues_trial"]) == (2, 1)
    table = pd.read_csv(folder / "trials.csv")
    assert list(table["state"]) == ["complete", "fail", "complete"]
    assert table["runs"].iloc[2] == table["runs"].iloc[1] and table["epochs"].iloc[2] == 3
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    retry = optuna.load_study(study_name="j", storage=storage).trials[2]
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # the replayed epochs, then the resumed one
