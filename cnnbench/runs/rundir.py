"""The run directory: everything needed to rebuild, evaluate, fine-tune, prune or tabulate one training run.

    <parent>/<YYYYmmdd-HHMMSS>-<model>-<dataset>-s<seed>/
        config.json        fully resolved: data options, training config, model spec, device, versions, git revision
        metrics.csv        one row per epoch, flushed at the end of every epoch
        checkpoints/last.pt  full training state (model, optimizer, schedule, RNG, epoch): what --resume reads
        checkpoints/best.pt  model weights at the best epoch on the monitored metric
        eval/<split>.json  written by `evaluate` (plus per-class and confusion CSVs)
        summary.json       written last: status completed | interrupted | failed, best epoch, counts, timings

Every file but metrics.csv is written atomically (a temporary `.<name>.<random>.tmp` beside it, then a rename), so a
reader sees the old file or the new one; metrics.csv is appended once per epoch, so a reader may catch its last row
half-written and reads only complete lines. A folder without summary.json is a run that is still going or was killed
without a chance to say so; `report` shows it as "incomplete". Checkpoints hold only tensors and plain values, so they
load with `torch.load(weights_only=True)`.

All reading of a run's files goes through `RunDir`: a file that is truncated, not what it should hold or unreadable
raises `DamagedRun`, one line naming the file, what is wrong with it and what to do, never a traceback from deep inside
json, csv or torch. A place that cannot be written (read-only, a file where a folder should be, a full disk) raises a
`UsageError` naming the path and the reason (`unwritable`).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.runs.record import RunConfig, RunSummary
from cnnbench.core.storage import unwritable_as_usage_error, write_atomic, write_json_atomic, write_text_atomic

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s")

# config.json's sections and the JSON type each holds. Every run directory since cnnbench's first version has all of
# them but "normalization" (recorded since fine-tuning came); a reader that can do without one passes its own `require`.
CONFIG_SECTIONS: dict[str, type] = {"kind": str, "data": dict, "prepared": dict, "train": dict, "model": dict,
                                    "device": dict, "normalization": dict}  # fmt: skip
IN_EVERY_CONFIG = ("kind", "data", "prepared", "train", "model", "device")
# What --resume and finetune --weights run: index without a fallback: the default of `RunDir.config`.
NEEDED_TO_REBUILD = (*IN_EVERY_CONFIG, "normalization")
SUMMARY_FIELDS: dict[str, type] = {"status": str, "best": dict, "params": dict}
# What a checkpoint must hold for its readers: --resume restores the whole trainer from last.pt, the rest take weights.
CHECKPOINT_ENTRIES = {"last": ("model", "optimizer", "epoch")}

# The OS's ways of refusing a write that a user can do something about; others (EIO, ...) keep their traceback.
# storage.write_atomic's temporary files: "." + target name + "." + mkstemp's random letters + ".tmp".
TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")
RUN_WRITES_ELSEWHERE = "make the folder writable, or train into another --out"


class DamagedRun(UsageError):
    """A file of a run directory is truncated, corrupt or not what it should hold. Exit code 2."""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[:40] or "x"


def is_temp_file(path: Path) -> bool:
    """A write in progress (or left by a killed process): never a run's file, whatever name it starts with."""
    return TEMP_FILE.match(Path(path).name) is not None


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # --- creation and lookup ---

    @classmethod
    def create(cls, parent: Path, *, model: str, dataset: str, seed: int) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{slug(model)}-{slug(dataset)}-s{seed}"
        parent = Path(parent)
        with unwritable_as_usage_error(parent, elsewhere="give another --out"):
            parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(1000):  # two runs started in the same second get -2, -3, ...
                path = parent / (base if attempt == 0 else f"{base}-{attempt + 1}")
                try:
                    path.mkdir()
                    return cls(path)
                except FileExistsError:
                    continue
        raise RuntimeError(f"could not create a run directory under {parent}")

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(Path(path))
        if not (run.path / "config.json").is_file():
            raise UsageError(f"{str(path)!r} is not a run directory (no config.json); give a folder under results/runs")
        return run

    @property
    def name(self) -> str:
        return self.path.name

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files a killed writer left in the run folder and checkpoints/.

        Only the process that owns the run (the one training or resuming it) may call this: another one's temporary
        file is a write in progress. eval/ is left alone, since `evaluate` may write there while a run trains.
        """
        stale = [p for folder in (self.path, self.path / "checkpoints") if folder.is_dir()
                 for p in folder.iterdir() if is_temp_file(p) and p.is_file()]  # fmt: skip
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    # --- config and summary ---

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def write_config(self, config: RunConfig) -> None:
        with unwritable_as_usage_error(self.config_path, elsewhere=RUN_WRITES_ELSEWHERE):
            write_json_atomic(self.config_path, config.to_dict())

    def read_config(self, *, require: Iterable[str] = NEEDED_TO_REBUILD) -> RunConfig:
        """config.json as a record, after the checks of `config` (sections in `require` present, types right)."""
        return RunConfig.from_dict(self.config(require=require))

    def config(self, *, require: Iterable[str] = NEEDED_TO_REBUILD) -> dict[str, Any]:
        """config.json as checked JSON: the sections in `require` present, every known section of its JSON type. Code
        reads it as a record (`read_config`); this is the document the record is made from."""
        advice = "restore it from a copy, or delete the run folder and train again"
        config = _read_json_object(self.config_path, advice)
        missing = [key for key in require if key not in config]
        if missing:
            raise DamagedRun(f"{self.config_path} lacks the key {missing[0]!r}; {advice}")
        _check_types(self.config_path, config, CONFIG_SECTIONS, advice)
        return config

    def write_summary(self, summary: RunSummary) -> None:
        with unwritable_as_usage_error(self.summary_path, elsewhere=RUN_WRITES_ELSEWHERE):
            write_json_atomic(self.summary_path, summary.to_dict())

    def read_summary(self) -> RunSummary | None:
        """summary.json as a record, or None while the run has none (see `summary`)."""
        summary = self.summary()
        return None if summary is None else RunSummary.from_dict(summary)

    def summary(self) -> dict[str, Any] | None:
        """summary.json as checked JSON, or None while the run has none (still going, or killed without a chance to
        write it). Code reads it as a record (`read_summary`)."""
        if not self.summary_path.is_file():
            return None
        advice = f"delete it (the run then reads as incomplete; `cnnbench train --resume {self.path}` writes a new one)"
        summary = _read_json_object(self.summary_path, advice)
        if "status" not in summary:
            raise DamagedRun(f"{self.summary_path} lacks the key 'status'; {advice}")
        _check_types(self.summary_path, summary, SUMMARY_FIELDS, advice)
        return summary

    def clear_summary(self) -> None:
        self.summary_path.unlink(missing_ok=True)

    def status(self) -> str:
        try:
            summary = self.summary()
        except DamagedRun:
            return "damaged"
        return summary["status"] if summary else "incomplete"

    # --- per-epoch metrics ---

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def append_metrics(self, row: dict[str, Any]) -> None:
        new = not self.metrics_path.exists()
        with unwritable_as_usage_error(self.metrics_path, elsewhere=RUN_WRITES_ELSEWHERE):
            with self.metrics_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow({k: row[k] for k in METRIC_COLUMNS})
                handle.flush()

    def metrics(self) -> list[dict[str, float]]:
        """One dict per complete row of metrics.csv; a last row still being appended (no newline yet) is left out."""
        path = self.metrics_path
        advice = "delete or mend that line (one row per epoch), or train the run again"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise DamagedRun(f"{path} cannot be read ({error.strerror or error}); {advice}") from None
        # The training process appends a row at the end of each epoch: a reader that catches it mid-write sees a line
        # without its newline, which is the next snapshot's business, not damage.
        complete = data[: data.rfind(b"\n") + 1]
        try:
            lines = list(csv.reader(io.StringIO(complete.decode(), newline="")))
        except (UnicodeDecodeError, csv.Error) as error:
            raise DamagedRun(f"{path} is not a readable CSV file ({_brief(error)}); {advice}") from None
        if not lines:
            return []
        header, rows = lines[0], []
        absent = [column for column in METRIC_COLUMNS if column not in header]
        if absent:
            raise DamagedRun(f"{path}: its header line lacks the column {absent[0]!r}; train the run again, or delete "
                             f"metrics.csv (the run then has no per-epoch curves)")  # fmt: skip
        for number, values in enumerate(lines[1:], start=2):
            if not values:  # a blank line carries nothing
                continue
            if len(values) != len(header):
                raise DamagedRun(f"{path}: line {number} has {len(values)} fields where the header has "
                                 f"{len(header)}; {advice}")  # fmt: skip
            row = {}
            for column, value in zip(header, values):
                try:
                    row[column] = float(value) if value != "" else math.nan
                except ValueError:
                    raise DamagedRun(f"{path}: line {number} holds {value[:20]!r} in column {column!r}, not a number; "
                                     f"{advice}") from None  # fmt: skip
            rows.append(row)
        return rows

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first `epochs` epochs (a resumed run redoes any epoch after its last checkpoint)."""
        rows = [r for r in self.metrics() if r["epoch"] <= epochs]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: int(v) if k == "epoch" else v for k, v in row.items()})
        with unwritable_as_usage_error(self.metrics_path, elsewhere=RUN_WRITES_ELSEWHERE):
            write_text_atomic(self.metrics_path, buffer.getvalue())

    # --- checkpoints ---

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def checkpoint_names(self) -> list[str]:
        folder = self.path / "checkpoints"
        return sorted(p.stem for p in folder.glob("*.pt") if not is_temp_file(p)) if folder.is_dir() else []

    def save_checkpoint(self, name: str, payload: dict[str, Any]) -> None:
        import torch

        path = self.checkpoint_path(name)
        with unwritable_as_usage_error(path, elsewhere=RUN_WRITES_ELSEWHERE):
            try:
                write_atomic(path, lambda handle: torch.save(payload, handle))
            except RuntimeError as error:
                # torch reports a failed write as "unexpected pos N vs M", which does not say why; write_atomic has
                # removed the partial file by now, so the disk was full if it cannot take the whole checkpoint.
                if _free_bytes(path.parent) < _tensor_bytes(payload):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
                raise

    def load_checkpoint(self, name: str, map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        path = self.checkpoint_path(name)
        if not path.is_file():
            have = self.checkpoint_names()
            raise UsageError(f"{self.name} has no {name!r} checkpoint; it has: {', '.join(have) or 'none'}"
                             + ("" if have else " (a run writes its first checkpoint after its first epoch)"))
        if name == "last":
            advice = "the run cannot resume from it: train it again (evaluate can still use --checkpoint best)"
        else:
            advice = "evaluate its last checkpoint instead (--checkpoint last), or train the run again"
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # torch.load fails in a dozen ways (zip, pickle, EOF, OSError) on a damaged file
            raise DamagedRun(f"{path} cannot be read as a checkpoint (truncated or damaged: {_brief(error)}); "
                             f"{advice}") from None  # fmt: skip
        if not isinstance(state, dict):
            raise DamagedRun(f"{path} holds a {type(state).__name__}, not a cnnbench checkpoint; {advice}")
        absent = [key for key in CHECKPOINT_ENTRIES.get(name, ("model",)) if key not in state]
        if absent:
            raise DamagedRun(f"{path} is not a cnnbench {name} checkpoint (it lacks {absent[0]!r}); {advice}")
        return state

    def load_model(self, checkpoint: str = "best", *, map_location: Any = "cpu"):
        """The run's model rebuilt from config.json's model spec, with the weights of `checkpoint` (best or last):
        the one way every later step (evaluate, prune, measure, export) gets a trained model back."""
        from cnnbench.models import build  # here: models imports torch, which `report` never needs

        config = self.read_config(require=("model",))
        try:
            model = build(config.model_spec())
        except (KeyError, TypeError, ValueError) as error:  # a damaged section; an unknown model is build's UsageError
            raise DamagedRun(f"{self.config_path}: its 'model' section does not describe a model "
                             f"({type(error).__name__}: {error}); restore config.json from a copy, or train the run "
                             f"again") from None  # fmt: skip
        state = self.load_checkpoint(checkpoint, map_location=map_location)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, TypeError):  # torch lists every mismatched tensor, over many lines
            raise DamagedRun(f"{self.checkpoint_path(checkpoint)} does not hold weights for the "
                             f"{config.model.get('name')} model config.json describes (copied from another run?); "
                             f"train the run again") from None  # fmt: skip
        return model

    # --- evaluations ---

    def eval_dir(self) -> Path:
        return self.path / "eval"

    def evaluations(self) -> dict[str, dict[str, Any]]:
        folder = self.eval_dir()
        if not folder.is_dir():
            return {}
        return {path.stem: _read_json_object(path, f"evaluate again: cnnbench evaluate {self.path} --split {path.stem}")
                for path in sorted(folder.glob("*.json")) if not is_temp_file(path)}  # fmt: skip


def find_runs(paths: list[Path]) -> list[RunDir]:
    """Every run directory at or below the given paths, in name order (names start with their start time)."""
    found: dict[Path, RunDir] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UsageError(f"{str(path)!r} does not exist; give run directories or folders that contain them")
        if (path / "config.json").is_file():
            found[path.resolve()] = RunDir(path)
            continue
        for config in path.rglob("config.json"):
            found[config.parent.resolve()] = RunDir(config.parent)
    return sorted(found.values(), key=lambda r: r.name)


# --- reading ---


def _read_json_object(path: Path, advice: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise DamagedRun(f"{path} is not text (damaged); {advice}") from None
    except OSError as error:
        raise DamagedRun(f"{path} cannot be read ({error.strerror or error}); {advice}") from None
    if not text.strip():
        raise DamagedRun(f"{path} is empty (truncated?); {advice}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DamagedRun(f"{path} is not valid JSON ({error.msg[:1].lower()}{error.msg[1:]} at line {error.lineno} "
                         f"column {error.colno}: truncated?); {advice}") from None  # fmt: skip
    if not isinstance(value, dict):
        raise DamagedRun(f"{path} holds a JSON {_json_type(value)}, not an object; {advice}")
    return value


def _check_types(path: Path, document: dict[str, Any], fields: dict[str, type], advice: str) -> None:
    for key, expected in fields.items():
        if key in document and not isinstance(document[key], expected):
            raise DamagedRun(f"{path}: its {key!r} is a JSON {_json_type(document[key])}, not "
                             f"{'an object' if expected is dict else 'a string'}; {advice}")  # fmt: skip


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _brief(error: BaseException) -> str:
    """The error's type and the start of its first line: some libraries' messages run to paragraphs."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- writing ---


def _free_bytes(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # the folder vanished: nothing to say about its disk
        return math.inf


def _tensor_bytes(payload: Any) -> int:
    """What the tensors of a checkpoint payload take on disk, about (the zip container adds little)."""
    import torch

    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(_tensor_bytes(value) for value in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(_tensor_bytes(value) for value in payload)
    return 0
