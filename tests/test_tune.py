"""`tune`: exact trial counts, nothing lost after a kill, workers that share a study, trial pruning, budgets, spaces."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnbench.core.errors import UsageError
from cnnbench.spec.run import resolve
from cnnbench.search import TuneOptions, load_space, open_study, parse_space, tune
from tests.helpers import DIGITS28

CLI = [sys.executable, "-c", "from cnnbench.cli import run; run()"]
LR_SPACE = {"train.lr": {"float": [1e-3, 3e-2], "log": True}, "train.batch_size": {"choices": [64, 128]}}


def base(data_root: Path, **values):
    return resolve({"model.name": "mnist-722", "data.size": 28, "data.root": data_root, "train.epochs": 2, **values})


def states(folder: Path, study: str) -> list[tuple[str, dict]]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return [(t.state.name, t.params) for t in optuna.load_study(study_name=study, storage=storage).trials]


def test_a_small_study_runs_exactly_the_trials_asked_and_writes_its_tables(data_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cnnbench")
    space = parse_space(LR_SPACE, "test")
    options = TuneOptions(study="small", folder=tmp_path / "small", n_trials=3, seed=1)
    summary = tune(base(data_root), "small", space, options)
    # one line per trial; the trials' own runs keep their info lines ("run directory: ...") to themselves
    assert sum(line.startswith("trial ") for line in caplog.messages) == 3, caplog.messages
    assert not any(line.startswith("run directory:") for line in caplog.messages)
    assert [s for s, _ in states(options.folder, "small")] == ["COMPLETE"] * 3
    assert summary["complete"] == 3 and 0 < summary["best"]["value"] <= 1
    trials = (options.folder / "trials.csv").read_text().splitlines()
    assert len(trials) == 4 and "train.lr" in trials[0]
    runs = sorted((options.folder / "trials").iterdir())
    assert len(runs) == 3
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["trial"]["study"] == "small" and set(config["trial"]["params"]) == {"train.lr", "train.batch_size"}
    best = json.loads((options.folder / "best.json").read_text())
    assert resolve({}, options.folder / "best.json").train.lr == best["train"]["lr"]  # train --config takes it
    assert (options.folder / "history.png").stat().st_size > 1000
    again = tune(base(data_root), "small", space, options)  # the same command: nothing to add
    assert again["complete"] == 3 and len(list((options.folder / "trials").iterdir())) == 3


def test_repeats_train_each_configuration_with_several_seeds(data_root, tmp_path):
    options = TuneOptions(study="rep", folder=tmp_path / "rep", n_trials=1, repeats=2)
    summary = tune(base(data_root, **{"train.epochs": 1}), "rep", parse_space(LR_SPACE, "t"), options)
    seeds = sorted(json.loads((r / "config.json").read_text())["spec"]["train"]["seed"]
                   for r in (options.folder / "trials").iterdir())  # fmt: skip
    assert seeds == [0, 1] and summary["complete"] == 1


def test_over_budget_architectures_are_rejected_without_training(data_root, tmp_path):
    _, space = load_space("arch")
    options = TuneOptions(study="tiny", folder=tmp_path / "tiny", n_trials=3, max_params=722, seed=3)
    summary = tune(base(data_root, **{"model.name": "arch", "train.epochs": 1}), "arch", space, options)
    trials = states(options.folder, "tiny")
    assert sum(s == "COMPLETE" for s, _ in trials) == 3 and summary["complete"] == 3
    runs = list((options.folder / "trials").iterdir())
    assert len(runs) == 3, "a rejected architecture is never trained"
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["params"]["trainable"] <= 722


def test_the_median_pruner_stops_a_hopeless_trial_after_its_warm_up(data_root, tmp_path):
    lrs = (3e-2, 2e-2, 1.5e-2, 1e-2, 5e-3, 1e-9)
    space = parse_space({"train.lr": {"choices": list(lrs)}}, "t")
    options = TuneOptions(study="prune", folder=tmp_path / "prune", n_trials=6, pruner="median", sampler="random")
    study = open_study(options, space)
    for lr in lrs:  # the hopeless one last, once five trials have completed (no pruning before)
        study.enqueue_trial({"train.lr": lr})
    tune(base(data_root, **{"train.epochs": 8}), "prune", space, options)
    trials = states(options.folder, "prune")
    assert [s for s, _ in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    pruned = [r for r in (options.folder / "trials").iterdir()
              if json.loads((r / "summary.json").read_text())["status"] == "pruned"]  # fmt: skip
    ran = json.loads((pruned[0] / "summary.json").read_text())["epochs_completed"]
    assert len(pruned) == 1 and 2 <= ran < 8  # its first quarter (2 of 8 epochs) always runs
    import pandas as pd

    table = pd.read_csv(options.folder / "trials.csv")  # the epochs a pruned trial cost are on record too
    assert list(table.loc[table["state"] == "pruned", "epochs"]) == [ran]


def test_trial_pruning_waits_a_quarter_of_the_epochs_and_hyperband_brackets_span_them(tmp_path):
    from cnnbench.search.storage import make_pruner, pruner_warmup

    def options(**more):
        return TuneOptions(study="p", folder=tmp_path, **more)

    assert [pruner_warmup(options(), epochs) for epochs in (1, 6, 8, 30, 100)] == [2, 2, 2, 8, 25]
    assert pruner_warmup(options(pruner_warmup=0), 100) == 0  # asked for: no warm-up
    median = make_pruner(options(pruner="median"), 100)
    assert (median._n_startup_trials, median._n_warmup_steps) == (5, 25)
    hyperband = make_pruner(options(pruner="hyperband"), 100)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (25, 100, 3)


@pytest.mark.parametrize("content, named", [
    ('"train.lrate" = {float = [0.1, 0.2]}', "train.lrate"),
    ('"train.lr" = {float = [0.2, 0.1]}', "empty range"),
    ('"train.lr" = {float = [0.0, 0.1], log = true}', "log range"),
    ('"train.epochs" = {float = [1.5, 3.0]}', "train.epochs"),
    ('"train.optimizer" = {choices = []}', "non-empty"),
    ('"train.lr" = 0.1', "expected a range"),
    ("[[[", "cannot be read"),
])  # fmt: skip
def test_a_bad_space_file_exits_2_naming_the_entry(cli, tmp_path, content, named):
    path = tmp_path / "space.toml"
    path.write_text(content + "\n")
    with pytest.raises(UsageError, match=named):
        load_space(str(path))
    result = cli("tune", "--space", path, "--folder", tmp_path / "study")
    assert result.code == 2 and named in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists(), "nothing runs before the space is checked"


def tune_process(data_root: Path, folder: Path, n_trials: int, epochs: int, *extra: str) -> subprocess.Popen:
    space = folder.parent / "space.json"
    space.write_text(json.dumps(LR_SPACE))
    return subprocess.Popen([*CLI, "tune", "--space", str(space), "--study", "s", "--folder", str(folder),
                             "--n-trials", str(n_trials), "--model", "mnist-722", *DIGITS28, "--root", str(data_root),
                             "--epochs", str(epochs), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(condition, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_sigkilled_study_continues_with_no_trial_lost_or_counted_twice(data_root, tmp_path):
    folder = tmp_path / "study"
    process = tune_process(data_root, folder, 3, 60)
    wait_for(lambda: (folder / "study.journal").exists() and [s for s, _ in states(folder, "s")][-1:] == ["RUNNING"]
             and any(folder.glob("trials/*/metrics.csv")), process)  # fmt: skip
    process.kill()
    process.communicate()
    killed = [p for s, p in states(folder, "s") if s == "RUNNING"]
    assert len(killed) == 1
    again = tune_process(data_root, folder, 3, 60)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    trials = states(folder, "s")
    assert sum(s == "COMPLETE" for s, _ in trials) == 3 and not any(s == "RUNNING" for s, _ in trials)
    assert [s for s, _ in trials].count("FAIL") == 1
    assert killed[0] in [p for s, p in trials if s == "COMPLETE"], "the killed trial's configuration ran again"


def test_two_processes_share_one_study_and_its_total(data_root, tmp_path):
    folder = tmp_path / "study"
    first = tune_process(data_root, folder, 4, 3)
    second = tune_process(data_root, folder, 4, 3)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    trials = states(folder, "s")
    complete = [params for state, params in trials if state == "COMPLETE"]
    assert len(complete) == 4 and not any(state == "RUNNING" for state, _ in trials)
    assert len({json.dumps(p, sort_keys=True) for p in complete}) == 4, "a configuration drawn twice is run once"
    workers = {json.loads((r / "config.json").read_text())["trial"]["number"] for r in (folder / "trials").iterdir()}
    assert len(workers) == 4  # four trial numbers, each with its run directory


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own on a local socket (Debian's postgresql package; .ci/run installs it)."""
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'; the dev extra has it)")
    if initdb is None:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql; .ci/run does)")
    import tempfile

    bin_dir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="cnnbench-pg-"))  # not under pytest's 0700 tree: postgres must reach it
    data, socket_dir = folder / "data", folder / "sock"
    socket_dir.mkdir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
        shutil.chown(socket_dir, "postgres")
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                    f"-k {socket_dir} -c listen_addresses=''", "start"], check=True, capture_output=True)  # fmt: skip
    yield f"postgresql://postgres@/postgres?host={socket_dir}"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_on_a_postgresql_study_share_it_and_a_killed_one_is_retried(data_root, tmp_path, postgres):
    import optuna

    folder = tmp_path / "study"
    first = tune_process(data_root, folder, 4, 60, "--storage", postgres)
    second = tune_process(data_root, tmp_path / "other", 4, 3, "--storage", postgres)
    storage = optuna.storages.RDBStorage(postgres)

    def running() -> bool:
        try:
            trials = optuna.load_study(study_name="s", storage=storage).trials
        except KeyError:
            return False
        return any(t.state.name == "RUNNING" and t.user_attrs.get("pid") == first.pid for t in trials)

    wait_for(running, first)
    first.kill()
    first.communicate()
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    again = tune_process(data_root, folder, 4, 3, "--storage", postgres)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 4
    assert not any(t.state.name == "RUNNING" for t in trials)


def test_a_trial_whose_worker_has_not_named_itself_yet_is_not_taken_for_dead():
    """Between ask() and its first user attributes a trial has no host, pid or heartbeat; a worker of the same
    PostgreSQL study in another folder (no shared lock) took it for dead, and its owner then failed with
    UpdateFinishedTrialError (seen in the suite under load)."""
    import optuna

    from cnnbench.search.storage import _worker_alive

    study = optuna.create_study()
    study.ask()
    (fresh,) = study.get_trials(deepcopy=False)
    assert fresh.user_attrs == {} and _worker_alive(fresh)


def test_dead_trials_are_recovered_only_under_the_study_lock(data_root, tmp_path, monkeypatch):
    """Another worker holds the lock from ask() until its trial names its host and pid; a recovery outside the lock
    took such a trial for a dead worker's and failed it under its owner (UpdateFinishedTrialError, seen on PostgreSQL)."""
    import fcntl

    import cnnbench.search.loop as loop

    options = TuneOptions(study="locked", folder=tmp_path / "locked", n_trials=1)
    held = []
    real = loop.recover_dead_trials

    def recover_checking_the_lock(study):
        with open(options.folder / ".ask.lock", "a+") as handle:  # a second open file: flock conflicts if held
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
                fcntl.flock(handle, fcntl.LOCK_UN)
            except BlockingIOError:
                held.append(True)
        return real(study)

    monkeypatch.setattr(loop, "recover_dead_trials", recover_checking_the_lock)  # where the loop looks it up
    tune(base(data_root, **{"train.epochs": 1}), "locked", parse_space(LR_SPACE, "t"), options)
    assert held == [True]


def test_trial_pruning_steps_keep_increasing_across_the_phases_of_a_trial():
    """A fine-tune with head_epochs runs two phases (two fits) through one trial-pruning callback: phase 2's epoch 1
    must not be reported as step 1 again (Optuna ignores a step reported twice, with a warning)."""
    from types import SimpleNamespace

    import optuna

    from cnnbench.search.trial_pruning import TrialPruning

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    callback = TrialPruning(trial, report=True)
    for phase_epochs in (2, 3):  # the head on the frozen backbone, then the fine-tune: two trainers, two fits
        trainer = SimpleNamespace(epoch=0)
        callback.on_fit_start(trainer)
        for epoch in range(1, phase_epochs + 1):
            callback.on_epoch_end(trainer, SimpleNamespace(epoch=epoch, val_acc=0.1 * (len(study.trials) + epoch)))
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4, 5]
    assert callback.earlier_epochs == 2 and callback.epochs == 5  # the loop records earlier_epochs + phase 2's count


def test_a_two_phase_fine_tune_trial_reports_and_records_the_epochs_of_both_phases(data_root, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from cnnbench.runs.kinds import run
    from tests.helpers import digits, finetune_spec, spec

    parent = run(spec(digits(data_root), "mnist-722", epochs=1, batch_size=128), out=tmp_path / "parent").run
    finetune = finetune_spec(digits(data_root), weights=f"run:{parent.path}", freeze="none", epochs=2, head_epochs=1,
                             batch_size=128)  # fmt: skip
    options = TuneOptions(study="phases", folder=tmp_path / "phases", n_trials=1)
    tune(finetune, "phases", parse_space({"train.lr": {"choices": [1e-3]}}, "t"), options)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(options.folder / "study.journal")))
    (trial,) = optuna.load_study(study_name="phases", storage=storage).trials
    assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == [1, 2, 3]
    assert trial.user_attrs["epochs"] == 3  # the head's epoch and the fine-tune's two
    assert len(list((options.folder / "trials").iterdir())) == 2  # one run directory per phase


def test_a_pid_is_alive_while_its_process_runs_and_not_once_it_is_reaped():
    """The liveness check dead-trial recovery asks before failing a trial whose worker ran on this machine."""
    from cnnbench.core.processes import pid_alive, process_started

    assert pid_alive(os.getpid()) and not pid_alive(0) and not pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert 0 < process_started(os.getpid()) <= time.time()


def test_every_point_of_the_joint_architecture_and_recipe_space_is_a_run_its_budget_check_counts_right():
    """`--space arch-recipe` samples the model and its training recipe together: every sampled point must be a valid
    run specification, and the closed-form budget that rejects it in microseconds must be the built model's."""
    import optuna

    from cnnbench.models import build_model
    from cnnbench.models.accounting import count_macs, count_parameters
    from cnnbench.models.budget import dataset_input
    from cnnbench.search.space import BUILTIN_BASE, budget_of, trial_spec

    name, space = load_space("arch-recipe")
    sampled = {p.name for p in space}
    assert {"train.lr", "train.schedule", "train.augment", "train.label_smoothing", "train.batch_size",
            "model.arch.conv"} <= sampled  # fmt: skip
    base = resolve({"data.size": 28}).with_values(BUILTIN_BASE[name])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    checked = 0
    for _ in range(40):
        trial = study.ask()
        spec = trial_spec(base, {p.name: p.suggest(trial) for p in space})
        counts = budget_of(spec)
        if counts is None:  # the input too small for the sampled stages: rejected before building, as in a search
            continue
        shape = dataset_input(spec.data.dataset, size=spec.data.size, grayscale=spec.data.grayscale,
                              classes=spec.data.classes)  # fmt: skip
        model = build_model("arch", shape, arch=spec.model.arch.__dict__, dropout=spec.model.dropout or 0.0)[0]
        assert counts == (count_parameters(model)["trainable"], count_macs(model, shape)), spec.model.arch
        checked += 1
    assert checked >= 20
