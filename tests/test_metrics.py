"""Tests for cnnbench.evaluate.metrics on small cases whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnnbench.core.errors import UsageError
from cnnbench.evaluate.metrics import classification_report
from cnnbench.core.storage import jsonable as to_jsonable


def soft(pred: list[int], k: int, top: float = 0.8) -> np.ndarray:
    """Probabilities putting `top` on each predicted class and spreading the rest evenly."""
    probs = np.full((len(pred), k), (1.0 - top) / (k - 1))
    probs[np.arange(len(pred)), pred] = top
    return probs


def per_class(report: dict, key: str) -> list[float]:
    return [row[key] for row in report["per_class"]]


def test_perfect_predictions_score_one_everywhere():
    y = np.array([0, 1, 2, 2, 1, 0])
    report = classification_report(y, soft(y.tolist(), 3, top=0.98), ["a", "b", "c"])

    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "roc_auc"):
        assert report[key] == pytest.approx(1.0), key
    assert report["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert report["log_loss"] == pytest.approx(-math.log(0.98))
    assert report["n"] == 6 and report["num_classes"] == 3
    assert "top5_accuracy" not in report
    assert report["notes"] == []


def test_three_class_case_matches_hand_computation():
    # confusion (rows true, cols predicted): [[2,1,0],[0,1,1],[0,0,1]]
    # precision = 2/2, 1/2, 1/2; recall = 2/3, 1/2, 1/1; F1 = 0.8, 0.5, 2/3; support = 3, 2, 1
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = [0, 0, 1, 1, 2, 2]
    report = classification_report(y, soft(pred, 3), ["cat", "dog", "fox"])

    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert per_class(report, "precision") == pytest.approx([1.0, 0.5, 0.5])
    assert per_class(report, "recall") == pytest.approx([2 / 3, 0.5, 1.0])
    assert per_class(report, "f1") == pytest.approx([0.8, 0.5, 2 / 3])
    assert per_class(report, "support") == [3, 2, 1]
    assert per_class(report, "class") == ["cat", "dog", "fox"]
    assert report["precision_macro"] == pytest.approx(2 / 3)
    assert report["recall_macro"] == pytest.approx(13 / 18)
    assert report["f1_macro"] == pytest.approx(59 / 90)
    assert report["precision_weighted"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert report["recall_weighted"] == pytest.approx(4 / 6)
    assert report["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    # true-class probability is 0.8 for the 4 hits and 0.1 for the 2 misses
    assert report["log_loss"] == pytest.approx((4 * -math.log(0.8) + 2 * -math.log(0.1)) / 6)


def test_binary_auc_is_the_positive_class_auc():
    # positive scores 0.35, 0.8 vs negative 0.1, 0.4: 3 of the 4 (pos, neg) pairs are ordered right -> 0.75
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    report = classification_report(y, np.column_stack([1 - p1, p1]), ["neg", "pos"])

    assert report["roc_auc"] == pytest.approx(0.75)
    assert per_class(report, "roc_auc") == pytest.approx([0.75, 0.75])


def test_multiclass_auc_is_the_macro_of_one_vs_rest():
    # class a: positive 0.6 above all four negatives -> 1.0
    # class b: positives 0.2, 0.7 vs negatives 0.2, 0.3, 0.1 -> (0.5 + 0 + 1 + 3) / 6 = 0.75
    # class c: positives 0.6, 0.4 vs negatives 0.2, 0.5, 0.1 -> (3 + 2) / 6 = 5/6
    probs = np.array([
        [0.6, 0.2, 0.2],
        [0.3, 0.2, 0.5],
        [0.2, 0.7, 0.1],
        [0.1, 0.3, 0.6],
        [0.5, 0.1, 0.4],
    ])
    report = classification_report(np.array([0, 1, 1, 2, 2]), probs, ["a", "b", "c"])

    assert per_class(report, "roc_auc") == pytest.approx([1.0, 0.75, 5 / 6])
    assert report["roc_auc"] == pytest.approx(31 / 36)


def ranked(order: list[int], k: int) -> np.ndarray:
    """A probability row whose classes rank in `order` (first = most likely)."""
    row = np.zeros(k)
    row[order] = np.arange(k, 0, -1)
    return row / row.sum()


def test_top5_only_from_ten_classes_and_counts_rank_five_or_better():
    k = 10
    probs = np.array([
        ranked([3, 4, 0, 5, 6, 7, 8, 9, 1, 2], k),  # true 0 ranked 3rd -> top-5 hit
        ranked([0, 1, 2, 3, 4, 9, 5, 6, 7, 8], k),  # true 9 ranked 6th -> miss
        ranked([1, 0, 2, 3, 4, 5, 6, 7, 8, 9], k),  # true 1 ranked 1st -> hit
    ])
    report = classification_report(np.array([0, 9, 1]), probs, [str(c) for c in range(k)])

    assert report["top5_accuracy"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(1 / 3)

    nine = classification_report(np.array([0, 1]), soft([0, 1], 9), [str(c) for c in range(9)])
    assert "top5_accuracy" not in nine


def test_class_missing_from_split_is_nan_and_left_out_of_macro():
    # class 2 has no samples and is never predicted; classes 0/1: precision 1, 2/3; recall 1/2, 1; F1 2/3, 0.8
    y = np.array([0, 0, 1, 1])
    report = classification_report(y, soft([0, 1, 1, 1], 3), ["0", "1", "7"])

    missing = report["per_class"][2]
    assert missing["support"] == 0
    assert all(math.isnan(missing[key]) for key in ("precision", "recall", "f1", "roc_auc"))
    assert report["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert report["recall_macro"] == pytest.approx(0.75)
    assert report["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert report["roc_auc"] == pytest.approx(np.mean(per_class(report, "roc_auc")[:2]))
    assert report["confusion"][2] == [0, 0, 0]
    assert any(note.startswith("class '7' has no samples in this split") for note in report["notes"])
    assert any(note.startswith("class '7' is never predicted") for note in report["notes"])
    assert math.isfinite(report["log_loss"])


def test_predicted_class_without_samples_has_zero_precision_but_no_f1():
    # y = [a, b, b], predicted [c, b, b]: precision a NaN, b 1, c 0; recall a 0, b 1, c NaN.
    # sklearn alone would give c an F1 of 0 and f1_macro 1/3; without samples F1 is undefined, so macro is (0 + 1) / 2.
    report = classification_report(np.array([0, 1, 1]), soft([2, 1, 1], 3), ["a", "b", "c"])

    assert report["precision_macro"] == pytest.approx(0.5)
    assert report["recall_macro"] == pytest.approx(0.5)
    assert report["f1_macro"] == pytest.approx(0.5)
    assert per_class(report, "precision")[2] == 0.0
    assert math.isnan(per_class(report, "f1")[2])
    assert any(note.startswith("class 'a' is never predicted") for note in report["notes"])


def test_single_class_split_gives_nan_auc_and_a_note():
    report = classification_report(np.array([1, 1, 1]), soft([1, 0, 1], 2), ["neg", "pos"])

    assert math.isnan(report["roc_auc"])
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert any("ROC AUC is undefined" in note for note in report["notes"])


def test_log_loss_accepts_float32_rows_that_do_not_sum_exactly_to_one():
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]], dtype=np.float32)
    report = classification_report(np.array([0, 0]), probs, ["a", "b", "c"])

    # a zero probability on the true class gives a large finite loss, not inf
    assert report["log_loss"] == pytest.approx((math.log(3) - math.log(1e-15)) / 2, rel=1e-3)


def test_to_jsonable_allows_strict_json():
    report = classification_report(np.array([0, 0, 1, 1]), soft([0, 1, 1, 1], 3), ["0", "1", "7"])
    with pytest.raises(ValueError):
        json.dumps(report, allow_nan=False)

    loaded = json.loads(json.dumps(to_jsonable(report), allow_nan=False))
    assert loaded["per_class"][2]["recall"] is None
    assert loaded["accuracy"] == pytest.approx(0.75)
    assert to_jsonable({"x": (np.float32(np.inf), np.int64(3)), "y": np.array([np.nan, 1.5])}) == {
        "x": [None, 3],
        "y": [None, 1.5],
    }


@pytest.mark.parametrize(
    ("y", "probs", "names"),
    [
        (np.array([0, 1]), np.full((2, 3), 1 / 3), ["a", "b"]),  # K != len(class_names)
        (np.array([0, 3]), np.full((2, 3), 1 / 3), ["a", "b", "c"]),  # label out of range
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5), ["a", "b"]),  # float labels
        (np.array([], dtype=int), np.zeros((0, 2)), ["a", "b"]),  # nothing to score
    ],
)
def test_malformed_input_is_a_usage_error(y, probs, names):
    with pytest.raises(UsageError):
        classification_report(y, probs, names)
