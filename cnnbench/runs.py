"""The run directory: everything needed to rebuild, evaluate, fine-tune, prune or tabulate one training run.

    <parent>/<YYYYmmdd-HHMMSS>-<model>-<dataset>-s<seed>/
        config.json        fully resolved: data options, training config, model spec, device, versions, git revision
        metrics.csv        one row per epoch, flushed at the end of every epoch
        checkpoints/last.pt  full training state (model, optimizer, schedule, RNG, epoch): what --resume reads
        checkpoints/best.pt  model weights at the best epoch on the monitored metric
        eval/<split>.json  written by `evaluate` (plus per-class and confusion CSVs)
        summary.json       written last: status completed | interrupted | failed, best epoch, counts, timings

Every file is written atomically. A folder without summary.json is a run that is still going or was killed without a
chance to say so; `report` shows it as "incomplete". Checkpoints hold only tensors and plain values, so they load
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from cnnbench.errors import UsageError
from cnnbench.storage import write_atomic, write_json_atomic, write_text_atomic

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s")
STATUSES = ("completed", "interrupted", "failed", "incomplete")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[:40] or "x"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # --- creation and lookup ---

    @classmethod
    def create(cls, parent: Path, *, model: str, dataset: str, seed: int) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{slug(model)}-{slug(dataset)}-s{seed}"
        parent = Path(parent)
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

    # --- config and summary ---

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.path / "config.json", config)

    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", summary)

    def summary(self) -> dict[str, Any] | None:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def clear_summary(self) -> None:
        (self.path / "summary.json").unlink(missing_ok=True)

    def status(self) -> str:
        summary = self.summary()
        return summary.get("status", "incomplete") if summary else "incomplete"

    # --- per-epoch metrics ---

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def append_metrics(self, row: dict[str, Any]) -> None:
        new = not self.metrics_path.exists()
        with self.metrics_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})
            handle.flush()

    def metrics(self) -> list[dict[str, float]]:
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open(newline="") as handle:
            return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                    for row in csv.DictReader(handle)]  # fmt: skip

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first `epochs` epochs (a resumed run redoes any epoch after its last checkpoint)."""
        rows = [r for r in self.metrics() if r["epoch"] <= epochs]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: int(v) if k == "epoch" else v for k, v in row.items()})
        write_text_atomic(self.metrics_path, buffer.getvalue())

    # --- checkpoints ---

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, name: str, payload: dict[str, Any]) -> None:
        import torch

        write_atomic(self.checkpoint_path(name), lambda handle: torch.save(payload, handle))

    def load_checkpoint(self, name: str, map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        path = self.checkpoint_path(name)
        if not path.is_file():
            have = sorted(p.stem for p in (self.path / "checkpoints").glob("*.pt"))
            raise UsageError(f"{self.name} has no {name!r} checkpoint; it has: {', '.join(have) or 'none'}")
        return torch.load(path, map_location=map_location, weights_only=True)

    # --- evaluations ---

    def eval_dir(self) -> Path:
        return self.path / "eval"

    def evaluations(self) -> dict[str, dict[str, Any]]:
        folder = self.eval_dir()
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


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
