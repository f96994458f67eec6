"""Every picture cnnbench draws: a run's curves, an evaluation's confusion matrix, gallery and reliability diagram, and
the report's comparisons.

matplotlib runs on its Agg backend (files only: no display or GUI toolkit is needed, so it runs on servers and in
CI), is imported only when something is drawn (so `--help` stays fast), and every PNG is written atomically
(storage.py): a reader, such as a web page served from the results folder, sees the old picture or the new one, never
half of one.
Functions take plain numbers and arrays; what to draw is decided by their callers (evaluation.py, report.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench.core.storage import write_atomic

CURVES_FILE = "curves.png"
GALLERY_LIMIT = 36  # misclassified images drawn at most (6 x 6); the tables and JSON count them all
_DPI = 100
_GALLERY_BOX = 168  # pixels: each gallery image is fitted into a square this size
_GALLERY_MIN_WIDTH = 640  # pixels: room for the title's two lines


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported here, when something is drawn, so `--help` stays fast)."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported anywhere: no display is ever needed
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path, *, dpi: int = _DPI, tight: bool = False) -> Path:
    """Write `figure` as a PNG atomically and free it (pyplot keeps every open figure alive otherwise): the one way
    every picture cnnbench draws reaches the disk."""
    plt = pyplot()
    options = {"bbox_inches": "tight"} if tight else {}
    try:
        write_atomic(Path(path), lambda handle: figure.savefig(handle, format="png", dpi=dpi, **options))
    finally:
        plt.close(figure)
    return Path(path)


# --- a run's curves ------------------------------------------------------------------------------------------------


def curves(rows: list[dict[str, float]], title: str, path: Path) -> Path:
    """Loss and accuracy per epoch, train against validation, from metrics.csv's rows."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in rows]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, label in ((loss_axis, "loss", "loss"), (accuracy_axis, "acc", "accuracy")):
        axis.plot(epochs, [row[f"train_{key}"] for row in rows], marker="." if len(rows) < 30 else None, label="train")
        axis.plot(epochs, [row[f"val_{key}"] for row in rows], marker="." if len(rows) < 30 else None,
                  label="validation")  # fmt: skip
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save(figure, path)


# --- an evaluation's pictures ----------------------------------------------------------------------------------------


def confusion_matrix(confusion: Sequence[Sequence[int]], classes: list[str], path: Path, title: str) -> Path:
    """Counts beside row-normalised shares (each true class's images, where they went): the counts show where the
    images are, the shares show a rare class's errors that counts hide."""
    plt = pyplot()
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    k = len(classes)
    side = min(4.0 + 0.45 * k, 13.0)
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side))
    names = [_short(name, 14) for name in classes]
    panels = ((axes[0], counts, "images", "d", max(int(counts.max()), 1)),
              (axes[1], shares, "share of the true class", ".2f", 1.0))  # shares on their own full scale, 0 to 1
    for axis, values, label, fmt, top in panels:
        shown = axis.imshow(values, cmap="Blues", vmin=0, vmax=top)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label=label)
        axis.set_xticks(range(k), names, rotation=90 if k > 4 else 0, fontsize=8)
        axis.set_yticks(range(k), names, fontsize=8)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        if k <= 12:  # numbers in the cells stay legible up to about a dozen classes
            limit = top / 2  # white text on the darker half of the colour scale
            for t in range(k):
                for p in range(k):
                    axis.text(p, t, format(values[t, p], fmt), ha="center", va="center", fontsize=8,
                              color="white" if values[t, p] > limit else "black")  # fmt: skip
    axes[0].set_title("counts", fontsize=10)
    axes[1].set_title("row-normalised", fontsize=10)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


def gallery(images: np.ndarray, captions: list[str], path: Path, title: str) -> Path:
    """A grid of uint8 (N, C, H, W) images, each with its caption (true and predicted label, confidence).

    Drawn as one mosaic image with the captions placed on it, not as an axes per image: laying out and rendering 36
    axes took matplotlib 2.2 s a picture on a 2-core AMD EPYC (most of `evaluate`'s time on a small split), the
    mosaic 0.45 s."""
    from PIL import Image

    plt = pyplot()
    count = len(images)
    columns = min(6, count)
    rows = math.ceil(count / columns)
    box, caption_band, margin, title_band = _GALLERY_BOX, 34, 8, 48  # pixels at _DPI
    tile_w, tile_h = box + 2 * margin, box + caption_band + margin
    grid_width = columns * tile_w
    indent = max(0, _GALLERY_MIN_WIDTH - grid_width) // 2  # a grid of one or two images stays as wide as its title
    canvas = np.full((title_band + rows * tile_h, grid_width + 2 * indent, 3), 255, dtype=np.uint8)
    figure = plt.figure(figsize=(canvas.shape[1] / _DPI, canvas.shape[0] / _DPI), dpi=_DPI)
    height, width = canvas.shape[:2]
    for i, (image, caption) in enumerate(zip(images, captions)):
        top, left = title_band + (i // columns) * tile_h, indent + (i % columns) * tile_w
        tile = np.transpose(image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, 0), (1, 2, 0))  # RGB
        scale = box / max(tile.shape[:2])
        size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
        # pixels stay visible as squares when enlarged (a 28x28 digit), averaged when shrunk (a 224x224 photo)
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(tile)).resize(
            size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX))
        y = top + caption_band + (box - size[1]) // 2
        x = left + margin + (box - size[0]) // 2
        canvas[y:y + size[1], x:x + size[0]] = resized
        figure.text((left + tile_w / 2) / width, 1 - (top + caption_band - 3) / height, caption, fontsize=7.5,
                    ha="center", va="bottom")  # fmt: skip
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(canvas, interpolation="nearest", aspect="auto")
    axis.set_axis_off()
    axis.set_zorder(-1)  # the captions are figure text, drawn over the mosaic
    figure.text(0.5, 1 - 6 / height, title, fontsize=10, ha="center", va="top")
    return save(figure, path)


def reliability_diagram(panels: list[tuple[str, dict[str, Any]]], path: Path, title: str) -> Path:
    """One column per set of calibration figures (before and after temperature scaling): accuracy per confidence bin
    against the diagonal of perfect calibration, the gap shaded, and below it how many images each bin holds."""
    plt = pyplot()
    figure, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 6.2), squeeze=False,
                                gridspec_kw={"height_ratios": [3, 1]}, sharex=True)  # fmt: skip
    for column, (name, figures) in enumerate(panels):
        bins = figures["bins"]
        lower = np.array([b["lower"] for b in bins])
        width = bins[0]["upper"] - bins[0]["lower"]
        filled = np.array([b["count"] > 0 for b in bins])
        accuracy = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
        confidence = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
        top, bottom = axes[0, column], axes[1, column]
        top.bar(lower[filled], accuracy[filled], width=width, align="edge", color="#4c72b0", edgecolor="black",
                linewidth=0.5, label="accuracy")  # fmt: skip
        # Hatched and unfilled: over-confident gaps sit above the accuracy bar, under-confident ones inside it, and
        # both read the same.
        gap_low = np.minimum(accuracy, confidence)[filled]
        top.bar(lower[filled], np.abs(confidence - accuracy)[filled], bottom=gap_low, width=width, align="edge",
                fill=False, edgecolor="#c44e52", hatch="///", linewidth=0.8,
                label="gap to mean confidence")  # fmt: skip
        top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy in the bin")
        top.set_title(f"{name}\nECE {figures['ece']:.4f}, MCE {figures['mce']:.4f}, Brier {figures['brier']:.4f}",
                      fontsize=9)  # fmt: skip
        top.legend(loc="upper left", fontsize=7.5)
        top.grid(alpha=0.3)
        bottom.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="gray", edgecolor="black",
                   linewidth=0.5)  # fmt: skip
        bottom.set_xlabel("confidence (top-1 probability)")
        bottom.set_ylabel("images")
        bottom.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


# --- the report's comparisons --------------------------------------------------------------------------------------


def comparison(points: list[dict[str, Any]], path: Path, *, x_label: str, y_label: str, title: str,
               log_x: bool = True, front_label: str | None = None) -> Path:  # fmt: skip
    """One marker per point (a run, or a group's mean with its standard deviation as error bars in both directions),
    labelled when few enough to read; the points with `front` set are joined as a staircase and ringed.

    A point: {"label", "x", "y", "x_std", "y_std", "n", "front"}; stds may be NaN (one run in the group)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 5))
    xs = np.array([p["x"] for p in points], dtype=float)
    ys = np.array([p["y"] for p in points], dtype=float)
    x_err = np.nan_to_num(np.array([p.get("x_std", math.nan) for p in points], dtype=float))
    y_err = np.nan_to_num(np.array([p.get("y_std", math.nan) for p in points], dtype=float))
    grouped = any(p.get("n", 1) > 1 for p in points)
    if grouped:
        axis.errorbar(xs, ys, xerr=x_err, yerr=y_err, fmt="o", color="#4c72b0", ecolor="#8da0cb", capsize=3,
                      label="mean ± std over runs")  # fmt: skip
    else:
        axis.scatter(xs, ys, color="#4c72b0", zorder=3, label="run")
    front = [p for p in points if p.get("front")]
    if front_label and front:
        front = sorted(front, key=lambda p: p["x"])
        axis.step([p["x"] for p in front], [p["y"] for p in front], where="post", color="#c44e52", linewidth=1.2,
                  zorder=2)  # fmt: skip
        axis.scatter([p["x"] for p in front], [p["y"] for p in front], s=120, facecolors="none", edgecolors="#c44e52",
                     linewidths=1.5, zorder=4, label=front_label)  # fmt: skip
    if len(points) <= 25:  # beyond that, labels overlap into a smear: the report's table names them
        for p in points:
            label = _short(str(p["label"]), 28) + (f" (n={p['n']})" if p.get("n", 1) > 1 else "")
            axis.annotate(label, (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if log_x and (xs > 0).all():
        axis.set_xscale("log")
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return save(figure, path)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- a study's table -------------------------------------------------------------------------------------------------


def study_bars(labels: list[str], means: list[float], stds: list[float], originals: list[Any], path: Path, *,
               y_label: str, title: str) -> Path:  # fmt: skip
    """Ours as bars with the seeds' spread, the original report's figure (where a number) as a marker per row."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 2), 3.6))
    positions = list(range(len(labels)))
    axes.bar(positions, means, yerr=stds, color="#4c78a8", capsize=3, label="cnnbench (this run)")
    marked = [(i, o) for i, o in enumerate(originals) if isinstance(o, (int, float)) and not isinstance(o, bool)]
    if marked:
        axes.scatter([i for i, _ in marked], [o for _, o in marked], color="#e45756", marker="D", zorder=3,
                     label="original report")  # fmt: skip
    axes.set_xticks(positions, [_short(label, 40) for label in labels], rotation=35, ha="right", fontsize=7)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return save(figure, path)
