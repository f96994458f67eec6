"""A study's journal file (`study.journal`, Optuna's JournalFileBackend: one JSON record per line, appended) checked
before the study opens it, and rebuilt from the trial run directories when it is damaged or lost.

What goes wrong, and what is done about it:
- The last record is cut off (a SIGKILL or a full disk during an append) or is not a record at all (garbage appended,
  bytes that are not UTF-8). Optuna skips such a line while reading, but the next append lands after it, and from
  then on every read fails. cnnbench keeps a copy of the whole file beside it (`study.journal.damaged-<time>`), cuts
  the bad tail off and says so: the study continues from its complete records (a trial whose result was in the lost
  record looks like one whose worker died, and is queued again).
- A writer killed mid-append also leaves Optuna's lock file (`study.journal.lock`), which Optuna breaks only after
  30 s of silence: a lock older than a few seconds is removed, with a warning.
- A record in the middle is damaged: nothing after it can be trusted record by record, so the command stops with one
  line naming the file and the place, and offering `--rebuild`.
- The journal is gone but the study folder still holds its trial runs: the command refuses to start the study over
  in silence, and offers `--rebuild` (or a new --study).

`--rebuild` sets the journal aside (if there is one) and writes a new study from the trial run directories: each
holds its trial's study, number, sampled parameters (config.json) and result (summary.json). Finished trials come
back with their scores, stopped ones as pruned, diverged ones as failed; runs that never finished are left out
(their configurations may be sampled again). Trials rejected without training (over budget) had no run and are not
restored; they cost nothing to reject again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.core.storage import write_atomic
from cnnbench.runs.rundir import DamagedRun, RunDir

logger = logging.getLogger(__name__)

JOURNAL = "study.journal"
REBUILD_HINT = "run the same command with --rebuild to rebuild the study from its trial run directories"


@dataclass(frozen=True)
class BadRecord:
    offset: int  # byte offset of the record's first byte
    number: int  # 1-based record (line) number
    size: int  # bytes in the bad record
    problem: str


def journal_path(folder: Path) -> Path:
    return Path(folder) / JOURNAL


def recorded_run(folder: Path, run: Path, *, database: bool = False) -> str:
    """How a trial's run directory is recorded: in a journal study, relative to the study folder, so a moved or copied
    study folder (or a command run from another directory) still finds its own runs. A database study is shared by
    workers with folders of their own (on other machines too): there the absolute path says whose run it is."""
    if database:
        return str(Path(run).resolve())
    return os.path.relpath(Path(run).resolve(), Path(folder).resolve())


def run_of(folder: Path, recorded: str) -> Path:
    """A recorded run directory as a path to open. Studies before cnnbench recorded them relative to the study
    folder stored them as given (absolute, or relative to the working directory): those are taken as they are."""
    path = Path(recorded)
    if path.is_absolute():
        return path
    inside = Path(folder) / path
    return inside if inside.exists() or not path.exists() else path


def scan(data: bytes) -> tuple[int, int, BadRecord | None]:
    """(records read, byte length of the sound prefix, the first bad record or None). A record is one line ending
    in a newline whose text is a JSON object."""
    offset, number = 0, 0
    for line in data.splitlines(keepends=True):
        number += 1
        problem = _problem(line)
        if problem is not None:
            return number - 1, offset, BadRecord(offset=offset, number=number, size=len(line), problem=problem)
        offset += len(line)
    return number, offset, None


def _problem(line: bytes) -> str | None:
    if not line.endswith(b"\n"):
        return "cut off: no newline at its end"
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg} at column {error.colno})"
    if not isinstance(record, dict):
        return "not a JSON object"
    return None


# Optuna's append holds its lock for milliseconds; a lock file this old was left by a writer that died holding it.
DEAD_APPEND_LOCK_S = 5.0


@contextlib.contextmanager
def journal_lock(path: Path) -> Iterator[None]:
    """Optuna's own lock on the journal (its appends take it), so no writer is mid-append while it is checked."""
    from optuna.storages.journal import JournalFileOpenLock

    clear_a_dead_append_lock(path)
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def clear_a_dead_append_lock(path: Path) -> None:
    """Remove the lock file of an append whose process was killed holding it (SIGKILL, a dead machine), with a
    warning. Optuna breaks such a lock only after 30 s of silence, so each run after a kill would hang that long
    without a word. A live append's lock goes within milliseconds: it is waited for, up to DEAD_APPEND_LOCK_S.
    Called under the study folder's lock, so two starting workers never both break it (one could remove the other's
    fresh lock)."""
    lock = Path(f"{path}.lock")  # JournalFileOpenLock's file: the journal's path and ".lock"
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age >= DEAD_APPEND_LOCK_S:
            break
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    logger.warning(f"{lock}: left {age:.0f} s ago by a journal write whose process was killed; removed")


def check_journal(path: Path) -> None:
    """Mend a journal whose only damage is its last record (set aside, with a warning); refuse one damaged in the
    middle with one line naming it and the way out. A missing journal is not checked here (`trial_runs` is)."""
    path = Path(path)
    if not path.is_file():
        return
    with journal_lock(path):
        data = path.read_bytes()
        records, sound, bad = scan(data)
        if bad is None:
            return
        if sound + bad.size < len(data):  # more follows the bad record: damage in the middle
            raise UsageError(f"{path} is damaged at byte {bad.offset:,} (record {bad.number}: {bad.problem}) with "
                             f"{len(data) - bad.offset - bad.size:,} bytes after it; {REBUILD_HINT} (the damaged "
                             f"file is kept beside it), or start afresh with a new --study")  # fmt: skip
        kept = set_aside(path, data)
        write_atomic(path, lambda handle: handle.write(data[:sound]))
    logger.warning(f"{path}: its last record (record {bad.number}, bytes {bad.offset:,}-{len(data):,}) was "
                   f"{bad.problem}, as a killed or out-of-space write leaves it; dropped, the study continues from "
                   f"its {records} complete records (the whole file is kept as {kept})")  # fmt: skip


def set_aside(path: Path, data: bytes | None = None) -> Path:
    """Keep the journal beside it as `study.journal.damaged-<time>`: a copy of `data` (the file as read, which is
    then rewritten), or, without it, the file itself moved there (a journal to be replaced); returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while kept.exists():
        counter += 1
        kept = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
    if data is None:
        path.rename(kept)
    else:
        write_atomic(kept, lambda handle: handle.write(data))
    return kept


# --- the study's trial runs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRun:
    path: Path
    number: int
    repeat: int
    params: dict[str, Any]
    status: str | None  # summary.json's status; None: the run never wrote one
    best_val_acc: float | None
    epochs: int | None


def trial_runs(folder: Path, study: str) -> list[TrialRun]:
    """The run directories under FOLDER/trials that belong to `study` (config.json's trial section), oldest first.
    Unreadable ones are skipped: a damaged run directory is `report`'s to show, not a reason to lose a study."""
    found = []
    trials = Path(folder) / "trials"
    if not trials.is_dir():
        return found
    for run_dir in sorted(path for path in trials.iterdir() if path.is_dir()):
        run = RunDir(run_dir)
        try:
            trial = run.read_config(require=()).records.get("trial")
            summary = run.read_summary()
        except DamagedRun:
            continue
        if not isinstance(trial, dict) or trial.get("study") != study:
            continue
        found.append(TrialRun(path=run_dir, number=int(trial.get("number", -1)), repeat=int(trial.get("repeat", 0)),
                              params=dict(trial.get("params") or {}), status=summary.status if summary else None,
                              best_val_acc=(summary.best or {}).get("val_acc") if summary else None,
                              epochs=summary.epochs_completed if summary else None))  # fmt: skip
    return found


def refuse_a_lost_journal(folder: Path, study: str) -> None:
    """A study folder with trial runs of `study` and no journal: never start the study over in silence."""
    if journal_path(folder).is_file():
        return
    runs = trial_runs(folder, study)
    if runs:
        trials = len({run.number for run in runs})
        raise UsageError(f"{journal_path(folder)} is missing, but {folder / 'trials'} holds {len(runs)} run(s) of "
                         f"{trials} trial(s) of study {study!r}; {REBUILD_HINT}, or start afresh with a new --study")


def rebuild(study, folder: Path, study_name: str, space) -> int:
    """Add to the (new, empty) `study` one trial per trial number found in the run directories; returns how many.
    Its score is the mean best val_acc over its repeats, as the search scores it."""
    import optuna
    from optuna.trial import FixedTrial, TrialState

    by_number: dict[int, dict[int, list[TrialRun]]] = {}
    for run in trial_runs(folder, study_name):  # oldest first: a two-phase fine-tune's head phase, then its own
        by_number.setdefault(run.number, {}).setdefault(run.repeat, []).append(run)
    added = 0
    for number in sorted(by_number):
        phases = [by_number[number][repeat] for repeat in sorted(by_number[number])]
        runs = [repeat_phases[-1] for repeat_phases in phases]  # each repeat's result is its last phase's run
        params = runs[0].params
        fixed = FixedTrial(params)
        try:
            for param in space:
                param.suggest(fixed)
        except Exception:  # the space changed since: the trial's values are not points of this space
            logger.warning(f"trial {number} ({runs[0].path.name}): its parameters {params} are not in this space; "
                           f"left out")  # fmt: skip
            continue
        statuses = [run.status for run in runs]
        attrs = {"runs": [recorded_run(folder, run.path) for run in runs], "rebuilt_from_trial": number,
                 "epochs": sum(run.epochs or 0 for run in phases[0])}  # every phase of the first repeat, as scored
        if all(status == "completed" for status in statuses) and all(r.best_val_acc is not None for r in runs):
            state, value = TrialState.COMPLETE, statistics.fmean(run.best_val_acc for run in runs)
        elif "pruned" in statuses:
            state, value = TrialState.PRUNED, None
        elif "diverged" in statuses or "failed" in statuses:
            state, value = TrialState.FAIL, None
            attrs["failure"] = next(s for s in statuses if s in ("diverged", "failed"))
        else:  # never finished (interrupted, killed): nothing to restore; its configuration may be sampled again
            continue
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params=params,
                                                  distributions=fixed.distributions, user_attrs=attrs))  # fmt: skip
        added += 1
    return added
