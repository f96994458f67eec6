"""`evaluate_run`: score a run's checkpoint on one split and write the results into the run's eval/ folder."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from cnnbench.data.prepare import SPLITS, Prepared, PrepareOptions, load_or_prepare, prepared_dir
from cnnbench.errors import UsageError
from cnnbench.runs import DamagedRun, RunDir, unwritable_as_usage_error
from cnnbench.storage import write_json_atomic, write_text_atomic
from cnnbench.training import dataset_normalization

CHECKPOINTS = ("best", "last")


def evaluate_run(path: Path, *, split: str = "test", checkpoint: str = "best", root: Path | None = None,
                 device: str = "auto", batch_size: int = 1024, log=None) -> dict[str, Any]:  # fmt: skip
    import torch

    from cnnbench.data.augment import AugmentSpec
    from cnnbench.engine import Preprocess, make_batches, predict, resolve_precision, select_device
    from cnnbench.metrics import classification_report
    from cnnbench.models import ModelSpec, build
    from cnnbench.models.accounting import size_mb

    if split not in SPLITS:
        raise UsageError(f"bad --split {split!r}: choose from {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"bad --checkpoint {checkpoint!r}: choose from {', '.join(CHECKPOINTS)}")
    if batch_size <= 0:
        raise UsageError(f"bad --batch-size {batch_size}: expected a number greater than zero")
    run = RunDir.open(path)
    # not "normalization": runs from before fine-tuning have none (see below)
    config = run.config(require=("data", "prepared", "model"))
    expected = _recorded_split_hash(run, config, split)
    data = _data_options(run, config["data"] if root is None else {**config["data"], "root": str(root)})
    prepared = _prepared_data(run, data, log)
    if prepared.manifest["split_hashes"][split] != expected:
        raise UsageError(f"the {split} split prepared under {data.root} differs from the one {run.name} was trained "
                         f"with (split hash mismatch); the dataset files changed")  # fmt: skip
    if len(prepared.splits[split]) == 0:
        raise UsageError(f"the {split} split of {run.name}'s data is empty; choose another --split")

    torch_device = select_device(device)
    precision = resolve_precision("auto", torch_device)
    channels_last = torch_device.type == "cuda"
    try:
        model = build(ModelSpec.from_dict(config["model"]))
    except (KeyError, TypeError, ValueError) as error:  # a damaged section; an unknown model is build's UsageError
        raise DamagedRun(f"{run.config_path}: its 'model' section does not describe a model "
                         f"({type(error).__name__}: {error}); restore config.json from a copy, or train the run again"
                         ) from None  # fmt: skip
    state = run.load_checkpoint(checkpoint)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError):  # torch lists every mismatched tensor, over many lines
        raise DamagedRun(f"{run.checkpoint_path(checkpoint)} does not hold weights for the {config['model']['name']} "
                         f"model config.json describes (copied from another run?); train the run again") from None
    model.to(torch_device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batches = make_batches(prepared, split, batch_size, torch_device)
    normalization = config.get("normalization") or dataset_normalization(prepared)  # runs from before it was recorded
    preprocess = Preprocess(normalization["mean"], normalization["std"], torch_device, augment=AugmentSpec(),
                            channels_last=channels_last)  # fmt: skip
    probs, labels, seconds = predict(model, batches, preprocess, precision, torch_device)
    report = classification_report(labels.numpy(), probs.double().numpy(), prepared.classes)
    result = {
        "run": run.name,
        "split": split,
        "checkpoint": checkpoint,
        "loss": report["log_loss"],
        **{k: v for k, v in report.items() if k not in ("per_class", "confusion")},
        "images_per_s": len(labels) / max(seconds, 1e-9),
        "size_mb": round(size_mb(model), 4),
        "device": torch_device.type,
        "precision": precision,
        "data": {"dataset": data.dataset, "split_hash": expected, "synthetic": prepared.manifest.get("synthetic", False)},
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "per_class": report["per_class"],
        "confusion": report["confusion"],
    }
    with unwritable_as_usage_error(run.eval_dir(), elsewhere="copy the run folder somewhere writable and evaluate "
                                   "the copy"):  # fmt: skip
        _write(run, split, result, prepared.classes)
    return result


def _recorded_split_hash(run: RunDir, config: dict[str, Any], split: str) -> str:
    """The hash of `split` recorded when the run trained: what the data scored now must match."""
    hashes = config["prepared"].get("split_hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get(split), str):
        recorded = sorted(hashes) if isinstance(hashes, dict) else []
        others = [name for name in SPLITS if name in recorded and name != split]
        choice = f"evaluate --split {' or '.join(others)}, or" if others else "restore config.json from a copy, or"
        raise DamagedRun(f"{run.config_path} records no hash for the {split} split (prepared.split_hashes has "
                         f"{', '.join(recorded) or 'none'}), so its data cannot be checked; {choice} train the run "
                         f"again")  # fmt: skip
    return hashes[split]


def _prepared_data(run: RunDir, data: PrepareOptions, log) -> Prepared:
    """The run's prepared data; a cache that was deleted is prepared again from the dataset's files."""
    cached = False
    try:
        cached = (prepared_dir(data) / "manifest.json").is_file()
        return load_or_prepare(data, log=log)
    except UsageError as error:
        if cached:
            raise
        # Say why a dataset is read at all: the user asked to score a run, not to prepare data.
        raise UsageError(f"cannot load {run.name}'s data from its prepared cache under {Path(data.root) / 'prepared'} "
                         f"(deleted, or another --root) nor prepare it again: {error}") from None  # fmt: skip


def _data_options(run: RunDir, section: dict[str, Any]) -> PrepareOptions:
    try:
        return PrepareOptions.from_dict(section)
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedRun(f"{run.config_path}: its 'data' section does not describe a dataset "
                         f"({type(error).__name__}: {error}); restore config.json from a copy, or train the run again"
                         ) from None  # fmt: skip


def _write(run: RunDir, split: str, result: dict[str, Any], classes: list[str]) -> None:
    folder = run.eval_dir()
    per_class = io.StringIO()
    writer = csv.DictWriter(per_class, fieldnames=["class", "support", "precision", "recall", "f1", "roc_auc"],
                            lineterminator="\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(result["per_class"])
    write_text_atomic(folder / f"{split}_per_class.csv", per_class.getvalue())
    confusion = io.StringIO()
    rows = csv.writer(confusion, lineterminator="\n")
    rows.writerow(["true \\ predicted", *classes])
    rows.writerows([name, *counts] for name, counts in zip(classes, result["confusion"]))
    write_text_atomic(folder / f"{split}_confusion.csv", confusion.getvalue())
    write_json_atomic(folder / f"{split}.json", result)  # last: the json marks a complete evaluation
