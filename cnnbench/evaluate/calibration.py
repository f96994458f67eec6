"""How far a model's confidence can be trusted: reliability bins, ECE, MCE, Brier score, and temperature scaling.

Numpy in, plain Python out, like metrics.py. Definitions follow Guo et al. 2017 ("On Calibration of Modern Neural
Networks"): the top-1 confidence is binned into M = 15 equal-width bins I_m = ((m-1)/M, m/M]; ECE is the bin-size
weighted mean of |accuracy - confidence| over the bins, MCE the largest gap over the non-empty ones. The Brier score is
the mean squared distance between the probability vector and the one-hot label, summed over the classes (Brier 1950);
for two classes that is twice the (p - y)^2 of scikit-learn's `brier_score_loss`.

Temperature scaling divides the logits by one T > 0 fitted to minimise the negative log-likelihood on the validation
split. Dividing by a positive number never changes which logit is largest, so accuracy is unchanged: only the
confidence moves (T > 1 softens an over-confident model, T < 1 sharpens an under-confident one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CALIBRATION_BINS = 15
# The temperature is searched in log space between these bounds: far wider than any trained network needs (Guo et al.
# report 1 to 3), narrow enough that a split the model separates perfectly (NLL falling towards T = 0) stops somewhere.
TEMPERATURE_BOUNDS = (0.01, 100.0)
_PROB_FLOOR = 1e-15  # as metrics.py: one confident mistake gives a large finite loss, not inf


def class_logits(logits: np.ndarray) -> np.ndarray:
    """(N, K) logits as float64; a binary model's single sigmoid logit z becomes the pair (0, z), whose softmax is
    (1 - sigmoid(z), sigmoid(z)), so one code path scales both."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {logits.shape}")
    return np.concatenate([np.zeros_like(logits), logits], axis=1) if logits.shape[1] == 1 else logits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = class_logits(logits) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)  # exp of the largest is 1: no overflow however confident
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(z / T)[label], computed as log-sum-exp so a confident mistake stays finite and exact."""
    scaled = class_logits(logits) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normaliser = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_normaliser - scaled[np.arange(len(labels)), labels]))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Per equal-width bin of the top-1 confidence ((m-1)/M, m/M]: its edges, count, accuracy and mean confidence
    (NaN for an empty bin)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Right-closed bins: the first upper edge m/M at or above the confidence. Comparing with the edges themselves, not
    # ceil(confidence * M), keeps a confidence a rounding error away from an edge on the edge's side.
    upper_edges = np.arange(1, n_bins + 1) / n_bins
    index = np.minimum(np.searchsorted(upper_edges, confidence, side="left"), n_bins - 1)
    bins = []
    for m in range(n_bins):
        members = index == m
        count = int(members.sum())
        bins.append({
            "lower": m / n_bins,
            "upper": (m + 1) / n_bins,
            "count": count,
            "accuracy": float(correct[members].mean()) if count else math.nan,
            "confidence": float(confidence[members].mean()) if count else math.nan,
        })  # fmt: skip
    return bins


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    return _ece(reliability_bins(probs, labels, n_bins))


def maximum_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    return _mce(reliability_bins(probs, labels, n_bins))


def _ece(bins: list[dict[str, Any]]) -> float:
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def _mce(bins: list[dict[str, Any]]) -> float:
    return float(max(abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    probs = np.asarray(probs, dtype=np.float64)
    one_hot = np.zeros_like(probs)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


def calibration_figures(probs: np.ndarray, labels: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """ECE, MCE, Brier score, NLL and accuracy of a set of probabilities, with the bins a reliability diagram draws."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    bins = reliability_bins(probs, labels, n_bins)
    p_true = np.clip(probs[np.arange(len(labels)), labels], _PROB_FLOOR, 1.0)
    return {
        "ece": _ece(bins),
        "mce": _mce(bins),
        "brier": brier_score(probs, labels),
        "nll": float(-np.log(p_true).mean()),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "bins": bins,
    }


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(z / T) on (logits, labels).

    The NLL is convex in 1/T, hence unimodal in log T, so a bounded one-dimensional search finds the optimum (scipy's
    Brent method on log T, to a relative precision of about 1e-6)."""
    from scipy.optimize import minimize_scalar

    logits = class_logits(logits)
    labels = np.asarray(labels)
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-6})  # fmt: skip
    return float(math.exp(found.x))


def at_temperature_bound(temperature: float) -> bool:
    low, high = TEMPERATURE_BOUNDS
    return temperature <= low * 1.001 or temperature >= high / 1.001
