"""`tune`: hyper-parameter and architecture search over run specifications, on Optuna (the only module importing it).

A search space names fields of the run specification by their dotted names (`train.lr`, `model.head.units`,
`model.arch.width`) with typed ranges. Each trial is one or more ordinary run directories (`--repeats K` trains K
seeds and scores their mean), so `evaluate` and `report` work on trials as on any run; the trial's number and
parameters are in each run's config.json.

Nothing is lost and nothing is counted twice:
- The study lives in a journal file under the study's folder (or any database URL Optuna takes, with `--storage`);
  running the same command again continues it.
- Trials are started with Optuna's ask/tell under a study-wide lock that counts the trials finished and in flight
  first, so `--n-trials` is the study's total however many processes (or machines) share it.
- A trial cut short by Ctrl-C, SIGTERM or an exception is told as FAIL and its parameters are queued again; one cut
  short with no chance to say so (SIGKILL, a dead machine) is found by the next process from its recorded host, pid and
  heartbeat, failed and queued again. A failed trial never counts towards the total.
- An architecture over `--max-params` or `--max-macs` is rejected from its closed-form count before anything is
  built; a rejected or repeated configuration does not use up the trial count either.

Trial pruning (stopping a hopeless trial early: median, hyperband) is fed each epoch's validation accuracy by an
engine callback; it is not weight pruning (`cnnbench prune`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cnnbench.errors import CheckFailed, UsageError
from cnnbench.spec import NAMES, RunSpec, coerce, field_type
from cnnbench.storage import write_json_atomic, write_text_atomic

Log = Callable[[str], None]
SAMPLERS = ("random", "tpe", "grid")
PRUNERS = ("none", "median", "hyperband")
STALE_AFTER_S = 600  # a RUNNING trial whose heartbeat is older than this, on another machine, is taken as dead
MAX_REJECTED_IN_A_ROW = 2000  # samples over budget (or repeated) before the space is declared (nearly) empty


# --- search spaces ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str  # a dotted name of the run specification
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value, for the grid sampler (a float range needs a step)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise UsageError(f"--sampler grid needs a step for the range {self.name}; give step = ... in the space")
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [float(v) for v in values]


def parse_space(data: dict[str, Any], origin: str) -> list[Param]:
    """A space from a file's object: {"train.lr": {"float": [1e-5, 1e-2], "log": true}, "model.head.units": {"int":
    [128, 1024], "step": 128}, "train.optimizer": {"choices": ["adam", "sgd"]}}; TOML tables or dotted keys alike.
    Every entry is checked (name, type, range) before any trial runs."""
    entries = _entries(data)
    if not entries:
        raise UsageError(f"{origin} has no entries; give dotted names with ranges, e.g. \"train.lr\" = "
                         f"{{float = [1e-5, 1e-2], log = true}}")  # fmt: skip
    params = []
    for name, entry in entries.items():
        where = f"{origin}: {name}"
        if name not in NAMES:
            import difflib

            close = difflib.get_close_matches(name, NAMES, n=3)
            raise UsageError(f"{where}: unknown option{' (did you mean ' + ', '.join(close) + '?)' if close else ''}; "
                             f"use the run specification's dotted names (train.lr, model.head.units, ...)")  # fmt: skip
        params.append(_param(name, entry, where))
    return params


def _entries(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + str(key)
        if isinstance(value, dict) and not ({"float", "int", "choices"} & set(value)):
            out.update(_entries(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param(name: str, entry: Any, where: str) -> Param:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a range such as {{float = [low, high]}}, {{int = [low, high]}} or "
                         f"{{choices = [...]}}, not {entry!r}")  # fmt: skip
    kinds = [k for k in ("float", "int", "choices") if k in entry]
    unknown = set(entry) - {"float", "int", "choices", "log", "step"}
    if len(kinds) != 1 or unknown:
        raise UsageError(f"{where}: give exactly one of float, int or choices (and optionally log, step)"
                         + (f"; unknown key(s) {', '.join(sorted(unknown))}" if unknown else ""))  # fmt: skip
    kind = kinds[0]
    if kind == "choices":
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: choices must be a non-empty list")
        for choice in choices:
            coerce(name, choice, where)  # each value must suit the option's type
        return Param(name, "categorical", choices=tuple(choices))
    bounds = entry[kind]
    numeric = (int,) if kind == "int" else (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, numeric) and not isinstance(b, bool)
                                                                  for b in bounds)):  # fmt: skip
        raise UsageError(f"{where}: {kind} takes [low, high] with {'whole ' if kind == 'int' else ''}numbers")
    low, high = bounds
    if not low < high:
        raise UsageError(f"{where}: empty range [{low}, {high}]; low must be below high")
    log, step = bool(entry.get("log", False)), entry.get("step")
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs low > 0")
    if step is not None and (not isinstance(step, numeric) or step <= 0 or log):
        raise UsageError(f"{where}: step must be a positive number (and cannot go with log)")
    accepted = [a for a in _arms(field_type(name)) if a in (int, float)]
    if not accepted or (kind == "float" and float not in accepted):
        raise UsageError(f"{where}: {name} takes {field_type(name)}, not a {kind} range")
    for bound in (low, high):
        coerce(name, bound, where)
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _arms(kind: Any) -> tuple[Any, ...]:
    import typing

    args = typing.get_args(kind)
    return args if args else (kind,)


def load_space(text: str) -> tuple[str, list[Param]]:
    """A built-in space by name, or a TOML/JSON file."""
    if text in BUILTIN_SPACES:
        return text, parse_space(BUILTIN_SPACES[text], f"the built-in space {text}")
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--space {text!r}: no such built-in space or file; built-in: {', '.join(BUILTIN_SPACES)}")
    try:
        raw = path.read_text(encoding="utf-8")
        import tomllib

        data = tomllib.loads(raw) if path.suffix.lower() == ".toml" else json.loads(raw)
    except UnicodeDecodeError:
        raise UsageError(f"--space {text!r} is not UTF-8 text") from None
    except (ValueError, OSError) as error:
        raise UsageError(f"--space {text!r} cannot be read: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--space {text!r} must hold an object of dotted names and ranges")
    return path.stem, parse_space(data, f"--space {text}")


BUILTIN_SPACES: dict[str, dict[str, Any]] = {
    # S3, experiment 5: a random search over the extended head and Adam (dropout, lr, units, beta1, beta2).
    "s3": {
        "model.dropout": {"float": [0.2, 0.7]},
        "train.lr": {"float": [1e-5, 1e-3], "log": True},
        "model.head.units": {"int": [128, 1024], "step": 128},
        "train.beta1": {"float": [0.85, 0.95]},
        "train.beta2": {"float": [0.99, 0.9999]},
    },
    # S4's KerasTuner search on the arch family: first block's filters 32-64 doubling per block (the seed's
    # 32-64 / 64-128 / 128-256), dropout, dense units 128-256, optimizer adam or sgd; 3x3 'same' convs with pooling.
    "s4": {
        "model.arch.width": {"int": [32, 64], "step": 16},
        "model.dropout": {"float": [0.2, 0.5], "step": 0.1},
        "model.arch.dense": {"int": [128, 256], "step": 64},
        "train.optimizer": {"choices": ["adam", "sgd"]},
    },
    # Architectures under a budget (--max-params): rich enough to hold both S1 models (see spec.ArchChoice).
    "arch": {
        "model.arch.stages": {"int": [1, 4]},
        "model.arch.width": {"choices": [2, 3, 4, 6, 8, 12, 16, 24, 32]},
        "model.arch.growth": {"choices": [1.0, 1.5, 2.0]},
        "model.arch.kernel": {"choices": [3, 5]},
        "model.arch.padding": {"choices": ["valid", "same"]},
        "model.arch.downsample": {"choices": ["pool", "stride"]},
        "model.arch.batchnorm": {"choices": [True, False]},
        "model.arch.dense": {"choices": [0, 16, 32, 64]},
        "model.arch.dense_activation": {"choices": ["linear", "relu"]},
        "model.arch.features": {"choices": ["flatten", "avg"]},
        "model.dropout": {"float": [0.0, 0.5], "step": 0.1},
    },
}
# What each built-in space sets besides its ranges (the arch spaces train the `arch` model; s4 its seed's shape).
BUILTIN_BASE: dict[str, dict[str, Any]] = {
    "s4": {"model.name": "arch", "model.arch.stages": 3, "model.arch.padding": "same", "model.arch.downsample": "pool",
           "model.arch.batchnorm": False, "model.arch.dense_activation": "relu", "model.arch.growth": 2.0},
    "arch": {"model.name": "arch"},
}


# --- the study --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    study: str
    folder: Path  # results/tune/<study>: the journal, trial runs, tables, plots
    storage: str | None = None  # a database URL; None: the journal file in `folder`
    n_trials: int = 20
    sampler: str = "random"
    pruner: str = "none"
    repeats: int = 1
    seed: int = 0
    max_params: int | None = None
    max_macs: int | None = None
    retrain_best: bool = False


def validate_options(options: TuneOptions) -> None:
    if options.sampler not in SAMPLERS:
        raise UsageError(f"bad --sampler {options.sampler!r}: choose from {', '.join(SAMPLERS)}")
    if options.pruner not in PRUNERS:
        raise UsageError(f"bad --pruner {options.pruner!r}: choose from {', '.join(PRUNERS)}")
    for name in ("n_trials", "repeats"):
        if getattr(options, name) < 1:
            raise UsageError(f"bad --{name.replace('_', '-')} {getattr(options, name)}: expected 1 or more")
    for name in ("max_params", "max_macs"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UsageError(f"bad --{name.replace('_', '-')} {value}: expected a positive number")
    if not options.study or any(c in options.study for c in "/\\\0") or options.study.startswith("."):
        raise UsageError(f"bad --study {options.study!r}: use a plain name (letters, digits, - and _)")


def open_study(options: TuneOptions, space: list[Param]):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options.folder.mkdir(parents=True, exist_ok=True)
    if options.storage:
        try:
            storage = optuna.storages.RDBStorage(options.storage)
        except Exception as error:  # a bad URL, a missing driver, a server that does not answer
            raise UsageError(f"--storage {options.storage!r}: cannot open it ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:200]})") from None  # fmt: skip
    else:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(options.folder / "study.journal")
        storage = optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    # Median: a trial is stopped at an epoch where it is below the median of the trials before it at that epoch,
    # once 3 trials have finished (Optuna's default 5 wastes most of a short study) and after its first epoch.
    pruner = {"none": optuna.pruners.NopPruner(), "median": optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                                         n_warmup_steps=1),
              "hyperband": optuna.pruners.HyperbandPruner()}[options.pruner]  # fmt: skip
    study = optuna.create_study(study_name=options.study, storage=storage, pruner=pruner, direction="maximize",
                                load_if_exists=True)  # fmt: skip
    # Seeded, and seeded afresh by how far the study has got: a continued study (or a second worker) must not replay
    # the first process's samples, which would all be rejected as repeats; a new study with a seed is reproducible.
    study.sampler = make_sampler(options, space, options.seed + len(study.trials))
    return study


def make_sampler(options: TuneOptions, space: list[Param], seed: int):
    import optuna

    if options.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in space}, seed=seed)
    if options.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


@contextlib.contextmanager
def study_lock(options: TuneOptions, study) -> Iterator[None]:
    """Held while counting trials and starting one, so concurrent workers never overshoot --n-trials: a file lock
    for workers on this machine, and a PostgreSQL advisory lock for workers on many."""
    import fcntl

    storage = study._storage
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        import sqlalchemy

        key = int.from_bytes(options.study.encode()[:8].ljust(8, b"\0"), "big") % 2**62
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    with open(options.folder / ".ask.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(trial) -> bool:
    """Whether a RUNNING trial's worker still runs: same machine, check the pid; elsewhere, its heartbeat's age."""
    attrs = trial.user_attrs
    if attrs.get("host") == socket.gethostname() and "pid" in attrs:
        try:
            os.kill(int(attrs["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _process_started(int(attrs["pid"])) <= float(attrs.get("started", math.inf)) + 1
    return time.time() - float(attrs.get("heartbeat", attrs.get("started", 0))) < STALE_AFTER_S


def _process_started(pid: int) -> float:
    """When a process started (wall clock), so a recycled pid is not taken for the trial's dead worker."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def recover_dead_trials(study, log: Log) -> int:
    """Fail every RUNNING trial whose worker is gone (SIGKILL, a dead machine) and queue its parameters again."""
    from optuna.trial import TrialState

    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(trial):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "failure", "worker died (no chance to say so)")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        log(f"trial {trial.number}: its worker died; its configuration is queued again")
        recovered += 1
    return recovered


def counted(study) -> int:
    """Trials that use up --n-trials: finished (complete or pruned) and those running now."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def trial_reporter(trial, report: bool):
    """The engine callback that feeds trial pruning each epoch's validation accuracy, records a heartbeat, and
    stops a hopeless trial with status `pruned` (made here: the engine imports torch, this module's top does not)."""
    from cnnbench.engine import Callback

    class TrialReporter(Callback):
        last_heartbeat = 0.0

        def on_epoch_end(self, trainer, result) -> None:
            now = time.time()
            if now - self.last_heartbeat > STALE_AFTER_S / 10:  # a write to the study about once a minute, not per epoch
                trial.set_user_attr("heartbeat", now)
                self.last_heartbeat = now
            _report_epoch(trial, report, result)

    return TrialReporter()


def _report_epoch(trial, report: bool, result) -> None:
    from cnnbench.engine import StopRun

    if not report or math.isnan(result.val_acc):
        return
    trial.report(result.val_acc, result.epoch)
    if trial.should_prune():
        raise StopRun("pruned", f"trial pruning: val_acc {result.val_acc:.4f} at epoch {result.epoch} is below "
                                f"the other trials' median")  # fmt: skip


def trial_spec(base: RunSpec, params: dict[str, Any]) -> RunSpec:
    return base.with_values(params, origin="the search space")


def budget_of(spec: RunSpec) -> tuple[int, int] | None:
    """(parameters, MACs) of an `arch` model from its closed form, without building it; None for other models."""
    if spec.model_name != "arch":
        return None
    from cnnbench.budget import dataset_input
    from cnnbench.models.arch import plan

    shape = dataset_input(spec.data.dataset, size=spec.data.size, grayscale=spec.data.grayscale,
                          classes=spec.data.classes)  # fmt: skip
    try:
        result = plan(shape, asdict(spec.model.arch))
    except UsageError:
        return None  # too small an input for this architecture: rejected like an over-budget one
    return result.params, result.macs


def tune(base: RunSpec, space_name: str, space: list[Param], options: TuneOptions, *, log: Log,
         progress: Callable[[str], Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run trials until the study holds --n-trials finished or running ones; returns the study's summary."""
    from optuna.trial import TrialState

    from cnnbench.errors import Terminated
    from cnnbench.training import run

    validate_options(options)
    from cnnbench.models.families import family_of

    family_of(base.model_name)  # an unknown model is a usage error before the study exists, not a failed trial
    for name, value in BUILTIN_BASE.get(space_name, {}).items():
        if base.get(name) == RunSpec().get(name):  # the space's own setting, unless the user chose otherwise
            base = base.with_values({name: value})
    study = open_study(options, space)
    with study_lock(options, study):  # another worker between ask() and naming itself on the trial looks dead
        recover_dead_trials(study, log)
    rejected_in_a_row = 0
    started = time.perf_counter()
    while True:
        with study_lock(options, study):
            if counted(study) >= options.n_trials:
                break
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("started", time.time())
        params = {p.name: p.suggest(trial) for p in space}
        spec = trial_spec(base, params)
        reason = _reject(study, trial, spec, params, options)
        if reason:
            trial.set_user_attr("rejected", reason)
            study.tell(trial, state=TrialState.FAIL)
            rejected_in_a_row += 1
            if reason.startswith("repeats trial"):  # another worker drew the same sequence: move this one off it
                study.sampler = make_sampler(options, space, options.seed + len(study.trials) + os.getpid())
            if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                raise CheckFailed(f"{rejected_in_a_row} sampled configurations in a row were rejected ({reason}); "
                                  f"widen the space or raise the budget")  # fmt: skip
            continue
        rejected_in_a_row = 0
        try:
            value, status, runs = _run_trial(study, trial, spec, params, options, run, progress, log)
        except (KeyboardInterrupt, Terminated):
            _fail_and_requeue(study, trial, "interrupted")
            raise
        except Exception as error:
            _fail_and_requeue(study, trial, f"{type(error).__name__}: {error}")
            raise
        if status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif status == "completed":
            study.tell(trial, value)
        else:  # diverged: a result of the configuration, not an accident; not retried
            trial.set_user_attr("failure", status)
            study.tell(trial, state=TrialState.FAIL)
        log(_trial_line(trial.number, status, value, params, runs))
    summary = write_outputs(study, options, space, log)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if options.retrain_best and summary.get("best"):
        summary["retrained"] = retrain_best(summary["best"], options, log, progress)
    return summary


def _reject(study, trial, spec: RunSpec, params: dict[str, Any], options: TuneOptions) -> str | None:
    from optuna.trial import TrialState

    counts = budget_of(spec)
    if counts is None and spec.model_name == "arch":
        return "the input is too small for this architecture"
    if counts is not None:
        trial.set_user_attr("params", counts[0])
        trial.set_user_attr("macs", counts[1])
        if options.max_params is not None and counts[0] > options.max_params:
            return f"{counts[0]:,} parameters > --max-params {options.max_params:,}"
        if options.max_macs is not None and counts[1] > options.max_macs:
            return f"{counts[1]:,} MACs > --max-macs {options.max_macs:,}"
    if options.sampler == "random":  # a configuration already tried is skipped, as the seeds' random searches did
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.RUNNING)):  # fmt: skip
            if other.number != trial.number and other.params == params:
                return f"repeats trial {other.number}"
    return None


def _run_trial(study, trial, spec: RunSpec, params: dict[str, Any], options: TuneOptions, run, progress, log):
    """Train the configuration --repeats times (seeds seed, seed+1, ...); the score is the mean best val_acc."""
    folder = options.folder / "trials"
    values, runs, status = [], [], "completed"
    for repeat in range(options.repeats):
        seeded = spec.with_values({"train.seed": spec.train.seed + repeat})
        if options.max_params is not None:
            seeded = seeded.with_values({"train.max_params": options.max_params})
        extra = {"trial": {"study": options.study, "number": trial.number, "repeat": repeat, "params": params}}
        label = f"trial {trial.number}" + (f".{repeat}" if options.repeats > 1 else "")
        reporter = trial_reporter(trial, report=repeat == 0)  # trial pruning follows the first seed's curve
        with (progress(label) if progress else contextlib.nullcontext()) as bar:
            result = run(seeded, out=folder, progress=bar, log=lambda message: None, callbacks=[reporter],
                         extra=extra)  # fmt: skip
        runs.append(str(result.run.path))
        trial.set_user_attr("runs", runs)
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if result.status != "completed":
            status = result.status
            break
        values.append(result.summary["best"]["val_acc"])
        trial.set_user_attr("epochs", result.summary["epochs_completed"])
        trial.set_user_attr("seconds_per_epoch", result.summary["seconds_per_epoch_median"])
        trial.set_user_attr("params", result.summary["params"]["trainable"])
        trial.set_user_attr("macs", result.summary["params"]["macs"])
    value = statistics.fmean(values) if values and status == "completed" else None
    if value is not None and math.isnan(value):
        raise UsageError("trials are scored by validation accuracy, but this data has no validation split; "
                         "give --split with a validation part")
    return value, status, runs


def _fail_and_requeue(study, trial, why: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("failure", why[:300])
    study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def _trial_line(number: int, status: str, value: float | None, params: dict[str, Any], runs: list[str]) -> str:
    shown = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
    score = f"val_acc {value:.4f}" if value is not None else status
    return f"trial {number:>3}  {score:<15}  {shown}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- outputs ----------------------------------------------------------------------------------------------------------


def trials_frame(study):
    import pandas as pd

    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     **{name: t.params.get(name) for name in names},
                     "epochs": t.user_attrs.get("epochs"), "params": t.user_attrs.get("params"),
                     "macs": t.user_attrs.get("macs"), "seconds_per_epoch": t.user_attrs.get("seconds_per_epoch"),
                     "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
                     "rejected": "rejected" in t.user_attrs,  # sampled, never trained: over budget or a repeat
                     "note": t.user_attrs.get("rejected") or t.user_attrs.get("failure") or "",
                     "runs": " ".join(t.user_attrs.get("runs", []))})  # fmt: skip
    return pd.DataFrame(rows)


def write_outputs(study, options: TuneOptions, space: list[Param], log: Log) -> dict[str, Any]:
    """trials.csv/md (rejected samples left out of the markdown), best.json (a config file train/finetune accept),
    a parameter-importance table and plots."""
    import optuna
    from optuna.trial import TrialState

    frame = trials_frame(study)
    write_text_atomic(options.folder / "trials.csv", frame.to_csv(index=False))
    shown = frame[~frame["rejected"]].drop(columns=["rejected"])
    lines = [f"Study {options.study}: {len(shown)} trials ({(shown['state'] == 'complete').sum()} complete, "
             f"{(shown['state'] == 'pruned').sum()} pruned by trial pruning, {(shown['state'] == 'fail').sum()} "
             f"failed); score: best validation accuracy (mean over {options.repeats} seed(s)).", "",
             shown.drop(columns=["runs"]).to_markdown(index=False, floatfmt=".4g")]  # fmt: skip
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict[str, Any] = {"study": options.study, "folder": str(options.folder), "trials": len(shown),
                               "complete": len(complete), "files": {}}  # fmt: skip
    if len(complete) >= 2 and len(space) > 1:
        try:
            import warnings

            with warnings.catch_warnings():  # "importances will be equal" on tiny studies: the table shows it
                warnings.simplefilter("ignore")
                importance = optuna.importance.get_param_importances(study)
            lines += ["", "Parameter importance (Optuna's default evaluator):", "", "| parameter | importance |",
                      "|---|---:|", *(f"| {k} | {v:.3f} |" for k, v in importance.items())]  # fmt: skip
            summary["importance"] = importance
        except (RuntimeError, ValueError) as error:  # e.g. every trial had the same value
            lines += ["", f"Parameter importance: not computed ({error})."]
    if complete:
        best = study.best_trial
        run_path = Path(best.user_attrs["runs"][0])
        from cnnbench.runs import RunDir

        spec = RunDir(run_path).config()["spec"]  # the first repeat's: what `train --config best.json` reruns
        write_json_atomic(options.folder / "best.json", spec)
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params, "spec": spec,
                           "run": str(run_path)}  # fmt: skip
        lines += ["", f"Best: trial {best.number}, val_acc {best.value:.4f}: "
                      f"{', '.join(f'{k}={_short(v)}' for k, v in best.params.items())}; "
                      f"`cnnbench train --config {options.folder / 'best.json'}` reruns it."]  # fmt: skip
        summary["files"].update(_plots(study, frame, options))
    write_text_atomic(options.folder / "trials.md", "\n".join(lines) + "\n")
    summary["files"].update({"csv": str(options.folder / "trials.csv"), "markdown": str(options.folder / "trials.md")})
    if complete:
        summary["files"]["best"] = str(options.folder / "best.json")
    return summary


def _plots(study, frame, options: TuneOptions) -> dict[str, str]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnbench.storage import write_atomic

    files = {}
    done = frame[frame["state"] == "complete"].sort_values("trial")
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(done["trial"], done["value"], "o", label="trial")
    axis.plot(done["trial"], done["value"].cummax(), "-", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel("validation accuracy")
    axis.legend()
    axis.set_title(f"{options.study}: optimisation history")
    files["history"] = _save(figure, options.folder / "history.png", plt, write_atomic, io)
    if done["params"].notna().any():
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.semilogx(done["params"], done["value"], "o")
        axis.set_xlabel("trainable parameters")
        axis.set_ylabel("validation accuracy")
        axis.set_title(f"{options.study}: accuracy against size")
        files["accuracy_vs_params"] = _save(figure, options.folder / "accuracy_vs_params.png", plt, write_atomic, io)
    return files


def _save(figure, path: Path, plt, write_atomic, io) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_atomic(path, lambda handle: handle.write(buffer.getvalue()))
    return str(path)


def retrain_best(best: dict[str, Any], options: TuneOptions, log: Log, progress) -> dict[str, Any]:
    """The best configuration trained on train + val for the best trial's best epoch count, then evaluated once on
    test: the one test figure the search reports (the trials only ever saw validation)."""
    from cnnbench.evaluation import evaluate_run
    from cnnbench.runs import RunDir
    from cnnbench.training import run

    spec = RunSpec.from_dict(best["spec"])
    split = spec.data.split
    if split is None:
        from cnnbench.data.catalog import get_dataset

        split = get_dataset(spec.data.dataset).default_split
    if split is None:
        raise UsageError("--retrain-best needs explicit split ratios for a dataset with its own test set (the "
                         "validation part is folded into train): give --split train,val,test")  # fmt: skip
    merged = (split[0] + split[1], 0.0, split[2])
    epochs = max(1, int((RunDir(best["run"]).summary() or {}).get("best_epoch") or spec.train.epochs))
    spec = replace(spec, data=replace(spec.data, split=merged), train=replace(spec.train, epochs=epochs, patience=0))
    log(f"retraining the best configuration on train+val ({merged[0]:.2f}) for {epochs} epochs; test once")
    with (progress("retrain best") if progress else contextlib.nullcontext()) as bar:
        result = run(spec, out=options.folder / "best", progress=bar, log=log)
    test = evaluate_run(result.run.path, split="test")
    return {"run": str(result.run.path), "epochs": epochs, "test_accuracy": test["accuracy"]}


