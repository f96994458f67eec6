"""`evaluate_run`: score a run's checkpoint on one split and write the results into the run's eval/ folder.

Besides the metrics, an evaluation writes what a careful reader of the seeds looked at (S4: confusion matrices, every
misclassified image, the ten least confident predictions): a confusion-matrix picture (or, over many classes, the most
confused pairs), a gallery of misclassified images, the least confident predictions and the top losses, and
calibration (ECE, MCE, Brier score, a reliability diagram) before and after temperature scaling fitted on the
validation split. `<split>_analysis.md` gathers them on one page that reads on a code-hosting site.
"""

from __future__ import annotations

import csv
import io
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.core import plots
from cnnbench.core.errors import UsageError
from cnnbench.core.plots import CURVES_FILE, GALLERY_LIMIT
from cnnbench.core.storage import write_json_atomic, write_text_atomic
from cnnbench.core.tables import csv_text, markdown_table
from cnnbench.data.augment import AugmentSpec
from cnnbench.data.images import decode_many
from cnnbench.data.prepare import SPLITS, Prepared, PrepareOptions, prepared_dir
from cnnbench.engine import Preprocess, make_batches, predict, resolve_precision, select_device
from cnnbench.evaluate.calibration import (
    CALIBRATION_BINS,
    TEMPERATURE_BOUNDS,
    at_temperature_bound,
    calibration_figures,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)
from cnnbench.evaluate.metrics import classification_report, least_confident, most_confused_pairs, top_losses
from cnnbench.models.accounting import size_mb
from cnnbench.runs import resources
from cnnbench.runs.pipeline import dataset_normalization, run_curves
from cnnbench.runs.record import RunConfig
from cnnbench.runs.rundir import DamagedRun, RunDir, unwritable_as_usage_error

CHECKPOINTS = ("best", "last")
CONFUSION_PICTURE_MAX_CLASSES = 20  # beyond this a matrix's cells and labels are too small to read: pairs instead
CONFUSED_PAIRS_ROWS = 20
# Files an evaluation of a split may write besides <split>.json, by their suffix (a re-evaluation that writes fewer
# removes the rest, so a picture never describes another checkpoint's predictions).
PICTURES = ("_confusion.png", "_misclassified.png", "_reliability.png")


@dataclass
class Scored:
    """One split's predictions: what the model output, the probabilities metrics use, and the true labels."""

    logits: np.ndarray  # float32 (N, K), or (N, 1) for a single sigmoid output
    probs: np.ndarray  # float64 (N, K)
    labels: np.ndarray  # int64 (N,)
    seconds: float  # time spent in forward passes


def evaluate_run(path: Path, *, split: str = "test", checkpoint: str = "best", root: Path | None = None,
                 device: str = "auto", batch_size: int = 1024) -> dict[str, Any]:  # fmt: skip
    if split not in SPLITS:
        raise UsageError(f"bad --split {split!r}: choose from {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"bad --checkpoint {checkpoint!r}: choose from {', '.join(CHECKPOINTS)}")
    if batch_size <= 0:
        raise UsageError(f"bad --batch-size {batch_size}: expected a number greater than zero")
    run = RunDir.open(path)
    # not "normalization": runs from before fine-tuning have none (see below)
    config = run.read_config(require=("data", "prepared", "model"))
    data, prepared = checked_split(run, config, split, root=root)
    expected = config.prepared["split_hashes"][split]
    if len(prepared.splits[split]) == 0:
        raise UsageError(f"the {split} split of {run.name}'s data is empty; choose another --split")

    torch_device = select_device(device)
    precision = resolve_precision("auto", torch_device)
    channels_last = torch_device.type == "cuda"
    model = run.load_model(checkpoint)
    model.to(torch_device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    normalization = run_normalization(config, prepared)
    preprocess = Preprocess(normalization["mean"], normalization["std"], torch_device, augment=AugmentSpec(),
                            channels_last=channels_last)  # fmt: skip

    def score(name: str) -> Scored:
        batches = make_batches(prepared, name, batch_size, torch_device)
        with _outputs_of(model) as outputs:
            probs, labels, seconds = predict(model, batches, preprocess, precision, torch_device)
        logits = torch.cat(outputs).float().cpu().numpy()
        return Scored(logits=logits, probs=probs.double().numpy(), labels=labels.numpy(), seconds=seconds)

    scored = score(split)
    report = classification_report(scored.labels, scored.probs, prepared.classes)
    calibration, calibration_notes = _calibration(run, config, prepared, split, scored, score)
    ids = prepared.splits[split].paths  # image files for a file index; in memory, the tables give positions
    result = {
        "run": run.name,
        "split": split,
        "checkpoint": checkpoint,
        "loss": report["log_loss"],
        **{k: v for k, v in report.items() if k not in ("per_class", "confusion", "notes")},
        **_headline(calibration),
        "images_per_s": len(scored.labels) / max(scored.seconds, 1e-9),
        "size_mb": round(size_mb(model), 4),
        "device": torch_device.type,
        "precision": precision,
        "data": {"dataset": data.dataset, "split_hash": expected, "synthetic": prepared.manifest.get("synthetic", False)},
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notes": report["notes"] + calibration_notes,
        "calibration": calibration,
        "error_analysis": _error_analysis(scored, report["confusion"], prepared.classes, ids),
        "per_class": report["per_class"],
        "confusion": report["confusion"],
    }
    with unwritable_as_usage_error(run.eval_dir(), elsewhere="copy the run folder somewhere writable and evaluate "
                                   "the copy"):  # fmt: skip
        result["files"] = _write(run, split, result, prepared, scored)
        if not (run.path / CURVES_FILE).is_file():  # runs trained before curves were drawn at the end of training
            if run_curves(run.path) is not None:
                result["files"].append(CURVES_FILE)
    return result


@contextmanager
def _outputs_of(model):
    """Collect the model's outputs (the logits) while `predict` runs, which returns probabilities only: temperature
    scaling needs the logits themselves, since 1 - sigmoid(z) in float32 is exactly 0 from z = 17 on. Outputs stay on
    the device until the split is done, so collecting them costs the timed forward passes nothing."""
    outputs: list = []
    handle = model.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    try:
        yield outputs
    finally:
        handle.remove()


def _calibration(run: RunDir, config: RunConfig, prepared: Prepared, split: str, scored: Scored,
                 score) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Calibration as trained, and after temperature scaling fitted on the validation split (when the run has one)."""
    as_trained = softmax(scored.logits)
    calibration: dict[str, Any] = {"bins": CALIBRATION_BINS,
                                   "as_trained": calibration_figures(as_trained, scored.labels)}
    notes: list[str] = []
    recorded = config.prepared.get("split_hashes") or {}
    if len(prepared.splits["val"]) == 0:
        reason = "the run's data has no validation split to fit a temperature on"
    elif isinstance(recorded.get("val"), str) and recorded["val"] != prepared.manifest["split_hashes"]["val"]:
        reason = "the validation split differs from the one the run trained with (split hash mismatch)"
    else:
        reason = None
    if reason is not None:
        calibration["temperature_scaling"] = {"skipped": reason}
        notes.append(f"no temperature scaling: {reason}")
        return calibration, notes
    validation = scored if split == "val" else score("val")
    temperature = fit_temperature(validation.logits, validation.labels)
    scaled_probs = softmax(scored.logits, temperature)
    scaled = calibration_figures(scaled_probs, scored.labels)
    calibration["temperature_scaling"] = {
        "temperature": temperature,
        "fitted_on": "val",
        "val_nll_before": negative_log_likelihood(validation.logits, validation.labels),
        "val_nll_after": negative_log_likelihood(validation.logits, validation.labels, temperature),
        "accuracy_unchanged": bool((scaled_probs.argmax(1) == as_trained.argmax(1)).all()),
        "scaled": scaled,
    }
    if split == "val":
        notes.append("the temperature was fitted on this same validation split: its after-scaling figures are "
                     "optimistic; evaluate --split test for an honest measure")  # fmt: skip
    if at_temperature_bound(temperature):
        low, high = TEMPERATURE_BOUNDS
        notes.append(f"the fitted temperature {temperature:.3g} is at its search bound ({low:g} to {high:g}): the "
                     f"validation split barely constrains it (e.g. every image right with room to spare)")  # fmt: skip
    return calibration, notes


def _headline(calibration: dict[str, Any]) -> dict[str, Any]:
    """The calibration figures as top-level entries of <split>.json, where `report` finds them as columns."""
    before = calibration["as_trained"]
    headline = {"ece": before["ece"], "mce": before["mce"], "brier": before["brier"]}
    scaling = calibration["temperature_scaling"]
    if "temperature" in scaling:
        after = scaling["scaled"]
        headline.update(temperature=scaling["temperature"], ece_scaled=after["ece"], mce_scaled=after["mce"],
                        brier_scaled=after["brier"], loss_scaled=after["nll"])  # fmt: skip
    return headline


def _error_analysis(scored: Scored, confusion: list[list[int]], classes: list[str],
                    ids: list[str] | None) -> dict[str, Any]:  # fmt: skip
    wrong = scored.probs.argmax(axis=1) != scored.labels
    return {
        "misclassified": int(wrong.sum()),
        "least_confident": least_confident(scored.probs, scored.labels, classes, ids=ids),
        "top_losses": top_losses(scored.probs, scored.labels, classes, ids=ids),
        "confused_pairs": most_confused_pairs(confusion, classes, count=CONFUSED_PAIRS_ROWS),
    }


def checked_split(run: RunDir, config: RunConfig, split: str, *, root: Path | None = None
                  ) -> tuple[PrepareOptions, Prepared]:  # fmt: skip
    """The run's prepared data (under `root`, default the recorded one), its `split` checked against the hash recorded
    when the run trained: what evaluate, export and predict score is what the run was trained and tested on."""
    expected = _recorded_split_hash(run, config, split)
    data = _data_options(run, config.data if root is None else {**config.data, "root": str(root)})
    prepared = _prepared_data(run, data)
    if prepared.manifest["split_hashes"][split] != expected:
        raise UsageError(f"the {split} split prepared under {data.root} differs from the one {run.name} was trained "
                         f"with (split hash mismatch); the dataset files changed")  # fmt: skip
    return data, prepared


def run_normalization(config: RunConfig, prepared: Prepared) -> dict[str, Any]:
    """The mean and std the run's inputs were normalised with (recorded; for runs from before it was recorded, the
    train split's, as they were then)."""
    return config.normalization or dataset_normalization(prepared)


def _recorded_split_hash(run: RunDir, config: RunConfig, split: str) -> str:
    """The hash of `split` recorded when the run trained: what the data scored now must match."""
    hashes = config.prepared.get("split_hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get(split), str):
        recorded = sorted(hashes) if isinstance(hashes, dict) else []
        others = [name for name in SPLITS if name in recorded and name != split]
        choice = f"evaluate --split {' or '.join(others)}, or" if others else "restore config.json from a copy, or"
        raise DamagedRun(f"{run.config_path} records no hash for the {split} split (prepared.split_hashes has "
                         f"{', '.join(recorded) or 'none'}), so its data cannot be checked; {choice} train the run "
                         f"again")  # fmt: skip
    return hashes[split]


def _prepared_data(run: RunDir, data: PrepareOptions) -> Prepared:
    """The run's prepared data; a cache that was deleted is prepared again from the dataset's files."""
    cached = False
    try:
        cached = (prepared_dir(data) / "manifest.json").is_file()
        return resources.prepared(data)  # the process's cache: a study evaluates what it just trained on
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


def _write(run: RunDir, split: str, result: dict[str, Any], prepared: Prepared, scored: Scored) -> list[str]:
    """Write the evaluation's files into eval/, <split>.json last (its presence marks a complete evaluation); returns
    their paths relative to the run folder."""
    classes = prepared.classes
    folder = run.eval_dir()
    written: list[str] = []

    def text(name: str, content: str) -> None:
        write_text_atomic(folder / name, content)
        written.append(f"{folder.name}/{name}")

    text(f"{split}_per_class.csv", csv_text(["class", "support", "precision", "recall", "f1", "roc_auc"],
                                        result["per_class"]))  # fmt: skip
    confusion = io.StringIO()
    rows = csv.writer(confusion, lineterminator="\n")
    rows.writerow(["true \\ predicted", *classes])
    rows.writerows([name, *counts] for name, counts in zip(classes, result["confusion"]))
    text(f"{split}_confusion.csv", confusion.getvalue())
    analysis = result["error_analysis"]
    for table in ("least_confident", "top_losses", "confused_pairs"):
        if analysis[table]:
            text(f"{split}_{table}.csv", csv_text(list(analysis[table][0]), analysis[table]))
        else:  # nothing confused: and no table left from an earlier evaluation either
            (folder / f"{split}_{table}.csv").unlink(missing_ok=True)
    pictures = _draw(run, split, result, prepared, scored)
    for suffix in PICTURES:  # a picture this evaluation does not draw must not stay from an earlier one
        if suffix not in pictures:
            (folder / f"{split}{suffix}").unlink(missing_ok=True)
    written += [f"{folder.name}/{path.name}" for path in pictures.values()]
    analysis["pictures"] = {suffix.strip("_").removesuffix(".png"): path.name for suffix, path in pictures.items()}
    text(f"{split}_analysis.md", _analysis_markdown(result, pictures))
    written.append(f"{folder.name}/{split}.json")
    write_json_atomic(folder / f"{split}.json", {**result, "files": written})
    return written


def _draw(run: RunDir, split: str, result: dict[str, Any], prepared: Prepared, scored: Scored) -> dict[str, Path]:
    """The evaluation's pictures, by their file suffix: confusion matrix (over few enough classes to read), gallery of
    misclassified images (when there are any) and reliability diagram."""
    folder = run.eval_dir()
    classes = prepared.classes
    heading = f"{run.name}: {split} split, {result['checkpoint']} checkpoint"
    pictures: dict[str, Path] = {}
    if len(classes) <= CONFUSION_PICTURE_MAX_CLASSES:
        pictures["_confusion.png"] = plots.confusion_matrix(result["confusion"], classes,
                                                            folder / f"{split}_confusion.png", heading)  # fmt: skip
    wrong = np.flatnonzero(scored.probs.argmax(axis=1) != scored.labels)
    if len(wrong):
        # The most confident mistakes first: they say the most about what the model learned wrongly (or a bad label).
        shown = wrong[np.argsort(-scored.probs[wrong].max(axis=1), kind="stable")][:GALLERY_LIMIT]
        images, shown = split_images(prepared, split, shown)
        if len(shown):
            captions = [f"#{i} true: {_short(classes[scored.labels[i]])}\npredicted: "
                        f"{_short(classes[scored.probs[i].argmax()])} ({scored.probs[i].max():.2f})" for i in shown]
            title = (f"{heading}\n{len(shown)} of {len(wrong)} misclassified images, most confident mistakes first"
                     if len(wrong) > len(shown) else f"{heading}\nall {len(wrong)} misclassified images")
            pictures["_misclassified.png"] = plots.gallery(images, captions, folder / f"{split}_misclassified.png",
                                                           title)  # fmt: skip
    calibration = result["calibration"]
    panels = [("as trained", calibration["as_trained"])]
    scaling = calibration["temperature_scaling"]
    if "temperature" in scaling:
        panels.append((f"temperature T = {scaling['temperature']:.3f} (fitted on val)", scaling["scaled"]))
    pictures["_reliability.png"] = plots.reliability_diagram(panels, folder / f"{split}_reliability.png",
                                                             f"{heading}: reliability, "
                                                             f"{calibration['bins']} equal-width bins")  # fmt: skip
    return pictures


def split_images(prepared: Prepared, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, C, H, W) images of a split by position, as the model saw them (resized, before normalisation); a
    file that no longer decodes is left out of the gallery with its index."""
    data = prepared.splits[split]
    if data.images is not None:
        return data.images[indices].numpy(), indices
    spec = prepared.input_spec
    images, kept, _ = decode_many([data.paths[i] for i in indices], spec.height, spec.channels)
    return images.numpy(), indices[kept]


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _analysis_markdown(result: dict[str, Any], pictures: dict[str, Path]) -> str:
    """One page with the evaluation's pictures (relative links: it sits beside them) and tables."""
    analysis, calibration = result["error_analysis"], result["calibration"]
    split = result["split"]
    lines = [f"# {result['run']}: {split} split, {result['checkpoint']} checkpoint", "",
             f"Accuracy {result['accuracy']:.4f} on {result['n']:,} images; {analysis['misclassified']:,} "
             f"misclassified.", ""]  # fmt: skip
    lines += [f"## Calibration ({calibration['bins']} equal-width confidence bins)", ""]
    rows = [("as trained", calibration["as_trained"])]
    scaling = calibration["temperature_scaling"]
    if "temperature" in scaling:
        rows.append((f"temperature T = {scaling['temperature']:.4f} (fitted on val)", scaling["scaled"]))
    figures = ("ece", "mce", "brier", "nll", "accuracy")
    lines += markdown_table(["probabilities", "ECE", "MCE", "Brier", "NLL", "accuracy"],
                            [[name, *(f"{values[key]:.4f}" for key in figures)] for name, values in rows])
    lines.append("")
    if "temperature" in scaling:
        lines += ["Temperature scaling divides the logits by T, which never changes the most probable class: accuracy "
                  "is unchanged, only the confidence moves (validation NLL "
                  f"{scaling['val_nll_before']:.4f} before, {scaling['val_nll_after']:.4f} after).", ""]  # fmt: skip
    else:
        lines += [f"No temperature scaling: {scaling['skipped']}.", ""]
    lines += [f"![reliability diagram]({pictures['_reliability.png'].name})", "", "## Confusion", ""]
    if "_confusion.png" in pictures:
        lines += [f"![confusion matrix]({pictures['_confusion.png'].name})", ""]
    else:
        lines += [f"{result['num_classes']} classes are too many to draw legibly; the full matrix is in "
                  f"{split}_confusion.csv. The most confused pairs:", ""]  # fmt: skip
    if analysis["confused_pairs"]:
        lines += markdown_table(["true", "predicted", "images", "share of the true class"],
                                [[_cell(p["true"]), _cell(p["predicted"]), f"{p['count']:,}", f"{p['share']:.3f}"]
                                 for p in analysis["confused_pairs"]], left=2) + [""]  # fmt: skip
    lines += ["## Misclassified images", ""]
    if "_misclassified.png" in pictures:
        shown = min(analysis["misclassified"], GALLERY_LIMIT)
        lines += [f"{shown} of {analysis['misclassified']:,} shown, most confident mistakes first (at most "
                  f"{GALLERY_LIMIT} are drawn).", "",
                  f"![misclassified images]({pictures['_misclassified.png'].name})", ""]  # fmt: skip
    else:
        lines += ["None: every image of the split is classified correctly, so there is no gallery.", ""]
    positive = result["per_class"][1]["class"] if result["num_classes"] == 2 else None
    lines += ["## Least confident predictions", "",
              f"Smallest |p - 0.5| first (p: the probability of {positive}), as S4 tabulated them." if positive else
              "Lowest top-1 probability first.", ""]  # fmt: skip
    lines += _prediction_table(analysis["least_confident"], positive) + [""]
    lines += ["## Top losses", "", "Largest cross-entropy -log p(true class) first.", ""]
    lines += _prediction_table(analysis["top_losses"], positive)
    return "\n".join(lines) + "\n"


def _prediction_table(rows: list[dict[str, Any]], positive: str | None) -> list[str]:
    """A markdown table of prediction rows; `positive` names the second class of a binary task (S4's p)."""
    image = any("image" in row for row in rows)
    header = ["rank", "index", *(["image"] if image else []), "true", "predicted", "confidence", "p(true)", "loss",
              *([f"p({positive})", "\\|p - 0.5\\|"] if positive else [])]  # fmt: skip
    numbers = ["confidence", "p_true", "loss", *(["p_positive", "margin"] if positive else [])]
    cells = [[str(row["rank"]), str(row["index"]), *([_cell(Path(row["image"]).name)] if image else []),
              _cell(row["true"]), _cell(row["predicted"]), *(f"{row[key]:.4f}" for key in numbers)] for row in rows]
    return markdown_table(header, cells, left=("image", "true", "predicted"))


def _cell(text: str) -> str:
    """A table cell: a class or file name holding "|" would otherwise split the markdown table's row."""
    return str(text).replace("|", "\\|")
