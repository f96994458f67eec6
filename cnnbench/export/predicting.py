"""`cnnbench predict`: labels for image files, from a run directory or from a model `export` wrote.

Images are found in the files and folders given (folders searched recursively for every format the prepare step
reads) and decoded by prepare's own code (data/images.py: 8-bit L or RGB, bilinear resize to the run's size), so a
prediction sees the pixels an evaluation of the same file would. A file that does not decode is listed with its reason
and skipped, never dropped silently. Probabilities are the model's; where `evaluate` fitted a temperature on the
validation split, the temperature-scaled probabilities are given beside them (the same ranking, calibrated
confidence).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.core.errors import UsageError
from cnnbench.core.tables import csv_text
from cnnbench.data.datasets.scan import IMAGE_EXTENSIONS, is_image
from cnnbench.data.images import decode_many
from cnnbench.engine.losses import probabilities as class_probabilities
from cnnbench.export.deployable import open_run_model
from cnnbench.export.exporting import open_exported

logger = logging.getLogger(__name__)

EXPORTED_SUFFIXES = {".onnx": "onnx", ".pt2": "pt2", ".pt": "torchscript"}
DECODE_CHUNK = 512  # images decoded and predicted at a time: memory stays bounded on a folder of any size


@dataclass
class Predictor:
    """Logits for float32 pixels, and what they mean."""

    logits: Callable[[np.ndarray], np.ndarray]
    metadata: dict[str, Any]
    source: str  # what made the predictions: "run <name> (best checkpoint)" or the exported file


@dataclass
class Predictions:
    source: str
    classes: list[str]
    temperature: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per file, in the order found
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


def open_predictor(source: Path, *, checkpoint: str = "best", root: Path | None = None,
                   device: str = "cpu") -> Predictor:  # fmt: skip
    """A run directory (its `checkpoint`) or an exported model file (.onnx, .pt2, .pt)."""
    source = Path(source)
    if source.is_dir():
        from cnnbench.engine import select_device

        opened = open_run_model(source, checkpoint=checkpoint, root=root, with_data=False)
        torch_device = select_device(device)
        model = opened.model.to(torch_device)

        def logits(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(pixels).to(torch_device))[0].float().cpu().numpy()

        return Predictor(logits, opened.metadata, f"run {opened.run.name} ({checkpoint} checkpoint)")
    if not source.is_file():
        raise UsageError(f"{source} does not exist; give a run directory or an exported model (.onnx, .pt2, .pt)")
    fmt = EXPORTED_SUFFIXES.get(source.suffix.lower())
    if fmt is None:
        raise UsageError(f"{source} is neither a run directory nor an exported model; expected a folder or a "
                         f"{' or '.join(EXPORTED_SUFFIXES)} file from `cnnbench export`")  # fmt: skip
    runner, metadata = open_exported(source, fmt)
    return Predictor(runner, metadata, str(source))


def find_images(paths: Iterable[Path]) -> list[Path]:
    """The files given, and every image file below the folders given (sorted), each once, in order."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found.update((p, None) for p in sorted(path.rglob("*")) if p.is_file() and is_image(p.name))
        elif path.is_file():
            found[path] = None  # named on purpose: tried whatever its suffix, and listed if it does not decode
        else:
            raise UsageError(f"{path} does not exist; give image files or folders of them")
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(f"no image files in {shown} (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return list(found)


def predict_images(predictor: Predictor, images: list[Path], *, top_k: int = 3, batch_size: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> Predictions:  # fmt: skip
    """Top-k labels and probabilities for every file of `images` that decodes; the rest listed in `skipped`."""
    metadata = predictor.metadata
    classes = list(metadata["classes"])
    if top_k < 1:
        raise UsageError(f"bad --top-k {top_k}: expected at least 1")
    if batch_size < 1:
        raise UsageError(f"bad --batch-size {batch_size}: expected at least 1")
    top_k = min(top_k, len(classes))
    spec = metadata["input"]
    temperature = metadata.get("temperature")
    result = Predictions(source=predictor.source, classes=classes, temperature=temperature)
    done = 0
    for start in range(0, len(images), DECODE_CHUNK):
        chunk = [str(p) for p in images[start:start + DECODE_CHUNK]]
        decoded, kept, skipped = decode_many(chunk, spec["height"], spec["channels"])
        for entry in skipped:
            logger.warning(f"skipped {entry['path']}: {entry['reason']}")
        result.skipped += [{"path": entry["path"], "reason": entry["reason"]} for entry in skipped]
        pixels = decoded.numpy().astype(np.float32)
        logits = np.concatenate([predictor.logits(np.ascontiguousarray(pixels[i:i + batch_size]))
                                 for i in range(0, len(pixels), batch_size)]) if len(pixels) else np.zeros((0, 1))  # fmt: skip
        probs = probabilities(logits)
        scaled = probabilities(logits / temperature) if temperature else None
        for row, index in enumerate(kept):
            order = np.argsort(-probs[row], kind="stable")[:top_k]
            entry = {"path": chunk[index], "label": classes[order[0]], "probability": float(probs[row, order[0]]),
                     "top": [{"label": classes[c], "probability": float(probs[row, c]),
                              **({"probability_scaled": float(scaled[row, c])} if scaled is not None else {})}
                             for c in order]}  # fmt: skip
            result.rows.append(entry)
        done += len(chunk)
        if progress is not None:
            progress(done, len(images))
    return result


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Class probabilities as training and evaluation compute them (softmax; for one sigmoid logit, 1 - p and p)."""
    return class_probabilities(torch.from_numpy(np.ascontiguousarray(logits))).double().numpy()


def predictions_csv(predictions: Predictions, top_k: int) -> str:
    """One row per file: path, label, probability, the top-k labels and probabilities (and the temperature-scaled
    ones), and an `error`; the skipped files last, with their reason and no labels."""
    scaled = predictions.temperature is not None
    columns = ["path", "label", "probability"]
    for k in range(1, top_k + 1):
        columns += [f"label_{k}", f"probability_{k}"] + ([f"probability_{k}_scaled"] if scaled else [])
    columns.append("error")
    rows = []
    for entry in predictions.rows:
        row = {"path": entry["path"], "label": entry["label"], "probability": f"{entry['probability']:.6f}"}
        for k, top in enumerate(entry["top"], start=1):
            row[f"label_{k}"], row[f"probability_{k}"] = top["label"], f"{top['probability']:.6f}"
            if scaled:
                row[f"probability_{k}_scaled"] = f"{top['probability_scaled']:.6f}"
        rows.append(row)
    rows += [{"path": s["path"], "error": s["reason"]} for s in predictions.skipped]
    return csv_text(columns, rows)
