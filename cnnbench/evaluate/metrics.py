"""Classification metrics over saved predictions: numpy in, plain Python out.

Evaluation splits in CNN studies are often small (few-shot subsets, per-fold test sets), so some classes may have no
samples or never be predicted. Instead of raising or silently reporting 0, such per-class values are NaN, are left
out of the macro averages, and are explained in `notes`. Values stay float NaN so pandas and numpy treat them as
missing; `to_jsonable` turns them into None for strict JSON output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from cnnbench.core.errors import UsageError

TOP5_MIN_CLASSES = 10
"""Top-5 accuracy is only informative when there are clearly more than five classes to choose from."""

_PROB_FLOOR = 1e-15
"""Floor for probabilities before log loss, so one confident mistake gives a large finite loss instead of inf."""


def classification_report(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Score class probabilities against integer labels; the result is plain Python (floats may be NaN).

    `probs` is (N, K) with K == len(class_names); binary tasks use K=2 and `roc_auc` is then the AUC of class 1.
    Per-class values that are undefined on this split are NaN and excluded from the macro averages (see module doc);
    every such case adds a one-line entry to `notes`. Raises `UsageError` only for malformed input.
    """
    y_true, probs = _validated(y_true, probs, class_names)
    k = len(class_names)
    labels = np.arange(k)
    y_pred = probs.argmax(axis=1)
    notes: list[str] = []

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=np.nan
    )
    predicted = np.bincount(y_pred, minlength=k)
    # sklearn gives F1 = 0 for a class that is predicted but has no samples; without samples F1 is undefined here.
    f1 = np.where(support == 0, np.nan, f1)
    weighted = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=np.nan
    )
    auc = np.array([_one_vs_rest_auc(y_true == c, probs[:, c]) for c in labels])

    for c, name in enumerate(class_names):
        if support[c] == 0:
            notes.append(
                f"class '{name}' has no samples in this split: its recall, F1 and AUC are NaN"
                " and left out of the macro averages"
            )
        if predicted[c] == 0:
            notes.append(
                f"class '{name}' is never predicted in this split: its precision is NaN"
                " and left out of the macro precision"
            )
    present = np.flatnonzero(support)
    if len(present) == 1:
        notes.append(
            f"only class '{class_names[present[0]]}' occurs in this split: ROC AUC is undefined (NaN)"
        )

    report: dict[str, Any] = {
        "n": int(len(y_true)),
        "num_classes": k,
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
    if k >= TOP5_MIN_CLASSES:
        report["top5_accuracy"] = float(top_k_accuracy_score(y_true, probs, k=5, labels=labels))
    report.update(
        precision_macro=_nanmean(precision),
        recall_macro=_nanmean(recall),
        f1_macro=_nanmean(f1),
        precision_weighted=float(weighted[0]),
        recall_weighted=float(weighted[1]),
        f1_weighted=float(weighted[2]),
        roc_auc=float(auc[1]) if k == 2 else _nanmean(auc),
        log_loss=float(log_loss(y_true, _clipped(probs), labels=labels)),
        per_class=[
            {
                "class": name,
                "support": int(support[c]),
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "roc_auc": float(auc[c]),
            }
            for c, name in enumerate(class_names)
        ],
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        notes=notes,
    )
    return report


def _validated(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and label range up front, so a mix-up is reported in one line rather than deep inside sklearn."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if k < 2:
        raise UsageError(f"need at least 2 class names, got {k}")
    if y_true.ndim != 1 or len(y_true) == 0:
        raise UsageError(f"y_true must be a non-empty 1-D array of labels, got shape {y_true.shape}")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise UsageError(f"y_true must hold integer labels, got dtype {y_true.dtype}")
    if probs.shape != (len(y_true), k):
        raise UsageError(f"probs must have shape (N, K) = ({len(y_true)}, {k}), got {probs.shape}")
    if y_true.min() < 0 or y_true.max() >= k:
        raise UsageError(f"labels must lie in 0..{k - 1}, got values from {y_true.min()} to {y_true.max()}")
    return y_true, probs


def _one_vs_rest_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """AUC of one class against the rest; NaN when the split lacks positives or negatives, where AUC is undefined."""
    if is_positive.all() or not is_positive.any():
        return math.nan
    return float(roc_auc_score(is_positive, scores))


def _nanmean(values: np.ndarray) -> float:
    """Mean of the defined values; NaN (without numpy's empty-slice warning) when none are defined."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else math.nan


def _clipped(probs: np.ndarray) -> np.ndarray:
    """Floor and renormalise rows: sklearn's log loss rejects rows that do not sum to one (e.g. float32 softmax)."""
    floored = np.clip(probs, _PROB_FLOOR, 1.0)
    return floored / floored.sum(axis=1, keepdims=True)


# --- error analysis: which predictions to look at -------------------------------------------------------------------

LOOK_AT_ROWS = 10
"""S4 tabulated its ten least confident predictions; the top losses get as many rows."""


def least_confident(probs: np.ndarray, y_true: np.ndarray, class_names: list[str], *, count: int = LOOK_AT_ROWS,
                    ids: list[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The `count` predictions the model was least sure of, least sure first (ties: earlier images first).

    For two classes that is S4's order, |p - 0.5| smallest, p being the probability of the second class; for more, the
    lowest top-1 probability (the same order for two classes, computed from p itself so that rounding in 1 - p cannot
    reorder near-ties)."""
    y_true, probs = _validated(y_true, probs, class_names)
    doubt = np.abs(probs[:, 1] - 0.5) if len(class_names) == 2 else probs.max(axis=1)
    return _prediction_rows(probs, y_true, class_names, np.argsort(doubt, kind="stable")[:count], ids)


def top_losses(probs: np.ndarray, y_true: np.ndarray, class_names: list[str], *, count: int = LOOK_AT_ROWS,
               ids: list[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The `count` images with the largest cross-entropy -log p(true class), largest first (ties: earlier first):
    confident mistakes, and often mislabelled images."""
    y_true, probs = _validated(y_true, probs, class_names)
    loss = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], _PROB_FLOOR, 1.0))
    return _prediction_rows(probs, y_true, class_names, np.argsort(-loss, kind="stable")[:count], ids)


def _prediction_rows(probs: np.ndarray, y_true: np.ndarray, class_names: list[str], order: np.ndarray,
                     ids: list[str] | None) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for rank, index in enumerate(order, start=1):
        predicted = int(probs[index].argmax())
        p_true = float(probs[index, y_true[index]])
        row = {
            "rank": rank,
            "index": int(index),  # position in the split, the order `evaluate` scores it in
            **({"image": ids[index]} if ids is not None else {}),  # its file, for image files read in place
            "true": class_names[y_true[index]],
            "predicted": class_names[predicted],
            "correct": bool(predicted == y_true[index]),
            "confidence": float(probs[index, predicted]),
            "p_true": p_true,
            "loss": float(-math.log(max(p_true, _PROB_FLOOR))),
        }
        if len(class_names) == 2:
            row["p_positive"] = float(probs[index, 1])  # the probability of class_names[1], S4's p
            row["margin"] = abs(row["p_positive"] - 0.5)
        rows.append(row)
    return rows


def most_confused_pairs(confusion: list[list[int]] | np.ndarray, class_names: list[str], *,
                        count: int = 20) -> list[dict[str, Any]]:  # fmt: skip
    """The off-diagonal cells of a confusion matrix with the most images, most first (ties: by true, then predicted
    class): what a matrix over many classes shows too small to read. `share` is the fraction of the true class's
    images that went to the predicted one."""
    matrix = np.asarray(confusion, dtype=np.int64)
    totals = matrix.sum(axis=1)
    k = len(matrix)
    cells = sorted((-int(matrix[t, p]), t, p) for t in range(k) for p in range(k) if t != p and matrix[t, p])
    return [{"true": class_names[t], "predicted": class_names[p], "count": -negative,
             "share": float(-negative / totals[t])} for negative, t, p in cells[:count]]  # fmt: skip
