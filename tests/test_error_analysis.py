"""`evaluate`'s error analysis and calibration: ECE, MCE and Brier against hand-made cases and an independent
computation, temperature scaling, the least-confident and top-loss tables, and every picture it draws."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cnnbench.evaluate.calibration import (brier_score, calibration_figures, expected_calibration_error, fit_temperature,
                                  maximum_calibration_error, negative_log_likelihood, softmax)  # fmt: skip
from cnnbench.evaluate.metrics import least_confident, most_confused_pairs, top_losses
from tests.helpers import MNIST722, copy_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, *, min_bytes: int = 5_000) -> None:
    """A real picture: the PNG signature, a plausible size, and a width and height Pillow can read."""
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} holds only {len(data)} bytes"
    with Image.open(path) as image:
        assert image.width >= 300 and image.height >= 200


def _probabilities_with_top(confidence: float, predicted: int, classes: int) -> np.ndarray:
    row = np.full(classes, (1.0 - confidence) / (classes - 1))
    row[predicted] = confidence
    return row


def _calibrated_by_construction(levels: list[float], per_level: int, classes: int = 4):
    """For each confidence level c, `per_level` predictions of top-1 probability c of which exactly c are right."""
    probs, labels = [], []
    for c in levels:
        right = round(c * per_level)
        for i in range(per_level):
            predicted = i % classes
            probs.append(_probabilities_with_top(c, predicted, classes))
            labels.append(predicted if i < right else (predicted + 1) % classes)
    return np.array(probs), np.array(labels)


# --- calibration figures --------------------------------------------------------------------------------------------


def test_ece_is_zero_when_confidence_matches_accuracy_in_every_bin():
    probs, labels = _calibrated_by_construction([0.3, 0.5, 0.7, 0.9, 1.0], per_level=200)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert maximum_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_large_for_an_over_confident_model():
    # Sure of every answer (0.99) and right on 60% of them: the whole gap, 0.39, is the calibration error.
    probs, labels = _calibrated_by_construction([0.6], per_level=500)
    confident = np.array([_probabilities_with_top(0.99, int(row.argmax()), 4) for row in probs])
    assert expected_calibration_error(confident, labels) == pytest.approx(0.39, abs=1e-9)
    assert maximum_calibration_error(confident, labels) == pytest.approx(0.39, abs=1e-9)


def _independent_ece_mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> tuple[float, float]:
    """Guo et al.'s definition written out with loops: bin m holds confidences in ((m-1)/M, m/M]."""
    confidence = [max(row) for row in probs.tolist()]
    correct = [int(np.argmax(row)) == label for row, label in zip(probs.tolist(), labels.tolist())]
    ece, mce = 0.0, 0.0
    for m in range(1, n_bins + 1):
        low, high = (m - 1) / n_bins, m / n_bins
        members = [i for i, c in enumerate(confidence) if low < c <= high]
        if not members:
            continue
        accuracy = sum(correct[i] for i in members) / len(members)
        mean_confidence = sum(confidence[i] for i in members) / len(members)
        ece += len(members) / len(confidence) * abs(accuracy - mean_confidence)
        mce = max(mce, abs(accuracy - mean_confidence))
    return ece, mce


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_ece_and_mce_match_an_independent_computation_on_random_inputs(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(0.0, 3.0, (2_000, classes))
    probs = softmax(logits)
    labels = rng.integers(0, classes, 2_000)
    # Some confidences exactly on bin edges, where right-closed binning matters.
    if classes == 2:
        probs[:15] = [[k / 15, 1 - k / 15] for k in range(8, 16)] + [[1 - k / 15, k / 15] for k in range(8, 15)]
    ece, mce = _independent_ece_mce(probs, labels)
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)
    assert maximum_calibration_error(probs, labels) == pytest.approx(mce, abs=1e-12)


def test_brier_score_is_the_summed_squared_error_against_one_hot_labels():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 500)
    labels = rng.integers(0, 2, 500)
    # For two classes the summed form is twice scikit-learn's (p - y)^2 on the positive class.
    assert brier_score(np.stack([1 - p, p], axis=1), labels) == pytest.approx(2 * brier_score_loss(labels, p))
    assert brier_score(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0
    assert brier_score(np.eye(3)[[1]], np.array([0])) == pytest.approx(2.0)


def test_temperature_scaling_lowers_an_over_confident_models_nll_and_keeps_its_accuracy():
    rng = np.random.default_rng(7)
    calibrated_logits = rng.normal(0.0, 1.5, (6_000, 5))
    # Labels drawn from softmax(z): z is calibrated, so 3z is over-confident and T = 3 undoes it.
    cumulative = softmax(calibrated_logits).cumsum(axis=1)
    labels = (rng.uniform(size=(6_000, 1)) > cumulative).sum(axis=1)
    over_confident = 3.0 * calibrated_logits
    val, test = slice(0, 3_000), slice(3_000, None)
    temperature = fit_temperature(over_confident[val], labels[val])
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = calibration_figures(softmax(over_confident[test]), labels[test])
    after = calibration_figures(softmax(over_confident[test], temperature), labels[test])
    assert negative_log_likelihood(over_confident[test], labels[test], temperature) < \
        negative_log_likelihood(over_confident[test], labels[test])  # fmt: skip
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] / 2
    assert after["accuracy"] == before["accuracy"]
    assert (softmax(over_confident, temperature).argmax(1) == over_confident.argmax(1)).all()


def test_temperature_scaling_handles_a_single_sigmoid_logit_like_its_two_class_softmax():
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 4.0, (2_000, 1))
    labels = (rng.uniform(size=2_000) < 1 / (1 + np.exp(-z[:, 0] / 2.0))).astype(int)  # calibrated at T = 2
    temperature = fit_temperature(z, labels)
    assert temperature == pytest.approx(2.0, rel=0.15)
    assert softmax(z)[:, 1] == pytest.approx(1 / (1 + np.exp(-z[:, 0])))
    assert fit_temperature(np.concatenate([np.zeros_like(z), z], axis=1), labels) == pytest.approx(temperature)


# --- which predictions to look at -----------------------------------------------------------------------------------

HAND_PROBS = np.array([
    [0.70, 0.20, 0.10],  # 0: right, confident
    [0.40, 0.35, 0.25],  # 1: right, unsure
    [0.10, 0.85, 0.05],  # 2: wrong (true 0), confident: the largest loss
    [0.34, 0.33, 0.33],  # 3: wrong (true 2), least sure of all
    [0.20, 0.20, 0.60],  # 4: right
])  # fmt: skip
HAND_LABELS = np.array([0, 0, 0, 2, 2])
CLASSES = ["cat", "dog", "bird"]


def test_least_confident_predictions_match_a_hand_built_example():
    rows = least_confident(HAND_PROBS, HAND_LABELS, CLASSES, count=3)
    assert [row["index"] for row in rows] == [3, 1, 4]  # top-1 probabilities 0.34, 0.40, 0.60
    assert [row["rank"] for row in rows] == [1, 2, 3]
    first = rows[0]
    assert (first["true"], first["predicted"], first["correct"]) == ("bird", "cat", False)
    assert first["confidence"] == pytest.approx(0.34) and first["p_true"] == pytest.approx(0.33)
    assert first["loss"] == pytest.approx(-math.log(0.33))


def test_top_losses_match_a_hand_built_example():
    rows = top_losses(HAND_PROBS, HAND_LABELS, CLASSES, count=5)
    # -log p(true): 2: -log 0.10, 3: -log 0.33, 1: -log 0.40, 4: -log 0.60, 0: -log 0.70
    assert [row["index"] for row in rows] == [2, 3, 1, 4, 0]
    assert rows[0]["loss"] == pytest.approx(-math.log(0.10))
    assert (rows[0]["true"], rows[0]["predicted"]) == ("cat", "dog")


def test_binary_least_confident_is_s4s_smallest_distance_from_one_half():
    p = np.array([0.9, 0.52, 0.45, 0.1, 0.6, 0.5])
    rows = least_confident(np.stack([1 - p, p], axis=1), np.array([1, 0, 0, 0, 1, 1]), ["cat", "dog"], count=4)
    assert [row["index"] for row in rows] == [5, 1, 2, 4]  # |p - 0.5| = 0, 0.02, 0.05, 0.1
    assert [row["margin"] for row in rows] == pytest.approx([0.0, 0.02, 0.05, 0.1])
    assert rows[1]["p_positive"] == pytest.approx(0.52) and rows[1]["predicted"] == "dog"
    assert least_confident(np.stack([1 - p, p], axis=1), np.zeros(6, dtype=int), ["cat", "dog"],
                           ids=[f"img{i}.jpg" for i in range(6)])[0]["image"] == "img5.jpg"  # fmt: skip


def test_most_confused_pairs_count_the_off_diagonal_cells():
    confusion = [[5, 3, 0], [1, 8, 1], [0, 3, 2]]
    pairs = most_confused_pairs(confusion, CLASSES)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("cat", "dog", 3), ("bird", "dog", 3), ("dog", "cat", 1), ("dog", "bird", 1)]  # fmt: skip
    assert pairs[1]["share"] == pytest.approx(3 / 5)
    assert most_confused_pairs([[4, 0], [0, 4]], ["a", "b"]) == []


# --- evaluate on a run ----------------------------------------------------------------------------------------------


@pytest.fixture
def trained(trained_run) -> Path:
    """The session's shared mnist-722 run (not evaluated); shared, so tests read it or work on a copy."""
    return trained_run(**MNIST722)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy per test: evaluations write into the run folder."""
    return copy_run(trained, tmp_path)


def test_evaluate_writes_every_picture_table_and_calibration_figure(cli, run_copy):
    (run_copy / "curves.png").unlink(missing_ok=True)  # as a run trained before curves were drawn
    result = cli("evaluate", run_copy, "--split", "test")
    assert result.code == 0, result.err
    folder = run_copy / "eval"
    for picture in ("test_confusion.png", "test_misclassified.png", "test_reliability.png"):
        assert_png(folder / picture)
    assert_png(run_copy / "curves.png")
    saved = json.loads((folder / "test.json").read_text())
    for key in ("ece", "mce", "brier", "temperature", "ece_scaled", "brier_scaled", "loss_scaled"):
        assert isinstance(saved[key], float) and saved[key] >= 0, key
    scaling = saved["calibration"]["temperature_scaling"]
    assert scaling["fitted_on"] == "val" and scaling["accuracy_unchanged"] is True
    assert scaling["scaled"]["accuracy"] == saved["accuracy"] == saved["calibration"]["as_trained"]["accuracy"]
    assert scaling["val_nll_after"] <= scaling["val_nll_before"] + 1e-12  # T minimises it; T = 1 was a candidate
    assert len(saved["calibration"]["as_trained"]["bins"]) == 15
    analysis = saved["error_analysis"]
    assert analysis["misclassified"] == round((1 - saved["accuracy"]) * saved["n"])
    assert len(analysis["least_confident"]) == len(analysis["top_losses"]) == 10
    table = (folder / "test_least_confident.csv").read_text().splitlines()
    assert table[0] == "rank,index,true,predicted,correct,confidence,p_true,loss" and len(table) == 11
    page = (folder / "test_analysis.md").read_text()
    for link in ("test_reliability.png", "test_confusion.png", "test_misclassified.png"):
        assert f"]({link})" in page and (folder / link).is_file()
    assert "## Least confident predictions" in page and "## Top losses" in page
    for line in ("ECE (15 bins)", "temperature T (fitted on val)", "ECE after scaling", "accuracy is unchanged"):
        assert line in result.out
    as_json = cli("evaluate", run_copy, "--split", "test", "--json").json()
    assert as_json["ece"] == pytest.approx(saved["ece"]) and "calibration" in as_json


def test_a_split_with_nothing_misclassified_says_so_instead_of_drawing_an_empty_gallery(cli, run_copy, monkeypatch):
    assert cli("evaluate", run_copy, "--split", "test").code == 0
    assert (run_copy / "eval" / "test_misclassified.png").is_file()
    import cnnbench.evaluate.evaluation as evaluation

    real_predict = evaluation.predict

    def always_right(*args, **kwargs):
        """The real predictions, labelled with what the model predicts: a model right about every image."""
        probs, labels, seconds = real_predict(*args, **kwargs)
        return probs, probs.argmax(1), seconds

    monkeypatch.setattr(evaluation, "predict", always_right)
    result = cli("evaluate", run_copy, "--split", "test")
    assert result.code == 0, result.err
    assert "misclassified: none, so no gallery was drawn" in result.out
    assert not (run_copy / "eval" / "test_misclassified.png").exists(), "the earlier evaluation's gallery is removed"
    page = (run_copy / "eval" / "test_analysis.md").read_text()
    assert "None: every image of the split is classified correctly" in page and "test_misclassified.png" not in page
    assert json.loads((run_copy / "eval" / "test.json").read_text())["error_analysis"]["misclassified"] == 0


def test_over_many_classes_the_most_confused_pairs_replace_the_matrix_picture(cli, run_copy, monkeypatch):
    import cnnbench.evaluate.evaluation

    assert cli("evaluate", run_copy, "--split", "test").code == 0
    monkeypatch.setattr(cnnbench.evaluate.evaluation, "CONFUSION_PICTURE_MAX_CLASSES", 5)  # digits' 10 classes count as many
    assert cli("evaluate", run_copy, "--split", "test").code == 0
    folder = run_copy / "eval"
    assert not (folder / "test_confusion.png").exists(), "the earlier evaluation's matrix picture is removed"
    page = (folder / "test_analysis.md").read_text()
    assert "10 classes are too many to draw legibly" in page and "| true | predicted | images |" in page
    pairs = (folder / "test_confused_pairs.csv").read_text().splitlines()
    assert pairs[0] == "true,predicted,count,share" and len(pairs) > 1


def test_without_a_validation_split_temperature_scaling_is_skipped_with_a_note(cli, data_root, tmp_path):
    from cnnbench.runs.kinds import run as run_spec
    from tests.helpers import digits, spec

    run = run_spec(spec(digits(data_root, split=(0.8, 0.0, 0.2)), "mnist-722", epochs=1), out=tmp_path).run
    result = cli("evaluate", run.path, "--split", "test", "--json")
    assert result.code == 0, result.err
    saved = result.json()
    assert "temperature" not in saved and "ece" in saved
    assert "validation split" in saved["calibration"]["temperature_scaling"]["skipped"]
    assert any(note.startswith("no temperature scaling") for note in saved["notes"])
    assert_png(run.path / "eval" / "test_reliability.png")


def test_run_curves_draws_a_runs_curves_and_nothing_for_a_run_without_epochs(trained, tmp_path):
    from cnnbench.runs.pipeline import run_curves

    copy = copy_run(trained, tmp_path, "run")
    (copy / "curves.png").unlink(missing_ok=True)
    assert run_curves(copy) == copy / "curves.png"
    assert_png(copy / "curves.png")
    (copy / "metrics.csv").unlink()
    (copy / "curves.png").unlink()
    assert run_curves(copy) is None and not (copy / "curves.png").exists()
