"""Where a study lives and who may touch it: opening it on its Optuna storage (a journal file in the study's folder,
or a database URL) with its sampler and trial pruner; the study-wide lock under which trials are counted and started;
and the recovery of trials whose worker died without a word (SIGKILL, a dead machine)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from cnnbench.core.errors import UsageError
from cnnbench.core.processes import pid_alive, process_started
from cnnbench.search.journal import check_journal, journal_path, rebuild, refuse_a_lost_journal, set_aside
from cnnbench.search.options import TuneOptions
from cnnbench.search.space import Param

logger = logging.getLogger(__name__)

STALE_AFTER_S = 600  # a RUNNING trial whose heartbeat is older than this, on another machine, is taken as dead


# Trial pruning judges a trial against the trials before it only once it has had time to learn (issue 20: with a
# one-epoch warm-up the median pruner stopped 14 of 20 MNIST trials after their first epoch, most at chance, and
# pruned a configuration that completes at 0.92): no pruning in a trial's first quarter of epochs (at least 2), and
# none before 5 trials have completed.
PRUNER_STARTUP_TRIALS = 5


def pruner_warmup(options: TuneOptions, epochs: int | None) -> int:
    """Epochs a trial runs before it may be stopped: --pruner-warmup, else a quarter of its epochs, at least 2."""
    if options.pruner_warmup is not None:
        return options.pruner_warmup
    return max(2, math.ceil((epochs or 0) / 4))


def make_pruner(options: TuneOptions, epochs: int | None):
    """The trial pruner for trials of `epochs` epochs (the most a trial may run, when the space samples them)."""
    warmup = pruner_warmup(options, epochs)
    if options.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=warmup)
    if options.pruner == "hyperband":  # ASHA brackets from the warm-up up to the full length, thirds kept per rung
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup), max_resource=max(epochs or 1, warmup + 1),
                                              reduction_factor=3)  # fmt: skip
    return optuna.pruners.NopPruner()


def open_study(options: TuneOptions, space: list[Param], epochs: int | None = None):
    """Open (or create) the study; `epochs` is the longest a trial may train, which sets the trial pruner's
    warm-up and brackets."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = None
    if options.storage:  # opened before the folder is made: a database that refuses leaves nothing behind
        try:
            database = optuna.storages.RDBStorage(options.storage)
        except Exception as error:  # a bad URL, a missing driver, a server that does not answer
            raise UsageError(f"--storage {options.storage!r}: cannot open it ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:200]})") from None  # fmt: skip
    options.folder.mkdir(parents=True, exist_ok=True)
    path = journal_path(options.folder)
    rebuilt_from = None if database else _mend_journal(options, path)
    storage = database or optuna.storages.JournalStorage(JournalFileBackend(str(path),
                                                                            lock_obj=JournalFileOpenLock(str(path))))
    pruner = make_pruner(options, epochs)
    study = optuna.create_study(study_name=options.study, storage=storage, pruner=pruner, direction="maximize",
                                load_if_exists=True)  # fmt: skip
    # Seeded, and seeded afresh by how far the study has got: a continued study (or a second worker) must not replay
    # the first process's samples, which would all be rejected as repeats; a new study with a seed is reproducible.
    study.sampler = make_sampler(options, space, options.seed + len(study.trials))
    if options.rebuild:  # a journal study (validate_options refuses --rebuild with --storage)
        with _folder_lock(options):
            added = rebuild(study, options.folder, options.study, space)
        kept = f" (the old journal is kept as {rebuilt_from})" if rebuilt_from else ""
        logger.warning(f"rebuilt study {options.study!r} in {path} from {added} trial(s) in "
                       f"{options.folder / 'trials'}{kept}")  # fmt: skip
    return study


def _mend_journal(options: TuneOptions, path: Path) -> Path | None:
    """Before Optuna reads the journal: mend a cut-off last record, refuse damage in the middle and a lost journal
    (journal.py); with --rebuild, set the old journal aside (returned) for a new one."""
    with _folder_lock(options):
        if options.rebuild:
            return set_aside(path) if path.is_file() else None
        refuse_a_lost_journal(options.folder, options.study)
        check_journal(path)
    return None


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its study.stop() once the grid is used up: stop() works only inside
    study.optimize (elsewhere it raises), and this search asks and tells by itself; `grid_exhausted` ends it."""

    def __init__(self, search_space: dict[str, list], seed: int) -> None:
        super().__init__(search_space, seed=seed)
        self.size = math.prod(len(values) for values in search_space.values())

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_exhausted(study) -> int | None:
    """The grid's size when every point of it has been started (finished, failed or running) and nothing is queued
    to run again; else None. Asking on would only repeat a point."""
    sampler = study.sampler
    if not isinstance(sampler, _GridSampler):
        return None
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return None
    started = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
    return sampler.size if len(started) >= sampler.size else None


def make_sampler(options: TuneOptions, space: list[Param], seed: int):
    if options.sampler == "grid":
        return _GridSampler({p.name: p.grid() for p in space}, seed=seed)
    if options.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


@contextlib.contextmanager
def study_lock(options: TuneOptions, study) -> Iterator[None]:
    """Held while counting trials and starting one, so concurrent workers never overshoot --n-trials: a file lock
    for workers on this machine, and a PostgreSQL advisory lock for workers on many."""
    storage = study._storage
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        import sqlalchemy  # here: only a database study needs it, and it takes a third of a second to import

        key = int.from_bytes(options.study.encode()[:8].ljust(8, b"\0"), "big") % 2**62
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    with _folder_lock(options):
        yield


@contextlib.contextmanager
def _folder_lock(options: TuneOptions) -> Iterator[None]:
    """The study folder's lock file, for workers on this machine."""
    with open(options.folder / ".ask.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _worker_alive(trial) -> bool:
    """Whether a RUNNING trial's worker still runs: same machine, check the pid (and that it was not recycled by a
    process started after the trial); elsewhere, its heartbeat's age."""
    attrs = trial.user_attrs
    if attrs.get("host") == socket.gethostname() and "pid" in attrs:
        pid = int(attrs["pid"])
        return pid_alive(pid) and process_started(pid) <= float(attrs.get("started", math.inf)) + 1
    last_sign = attrs.get("heartbeat", attrs.get("started"))
    if last_sign is None and trial.datetime_start is not None:
        # asked for moments ago by a worker that has not named itself yet (another folder's lock, another machine):
        # Optuna's own start time, not the epoch, says how long it has been silent
        last_sign = trial.datetime_start.timestamp()
    return time.time() - float(last_sign or 0) < STALE_AFTER_S


def recover_dead_trials(study) -> int:
    """Fail every RUNNING trial whose worker is gone (SIGKILL, a dead machine) and queue its parameters again."""
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _worker_alive(trial):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "failure", "worker died (no chance to say so)")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        logger.info(f"trial {trial.number}: its worker died; its configuration is queued again")
        recovered += 1
    return recovered


def counted(study) -> int:
    """Trials that use up --n-trials: finished (complete or pruned) and those running now."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))
