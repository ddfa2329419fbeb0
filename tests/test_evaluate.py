"""Evaluation metrics and the classification report's shape, against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from forgery.evaluate import classification_report, confusion, format_report_tsv, headline_metrics, pr_points, roc_points
from forgery.report import to_json, training_metrics

LABELS = np.array([0, 0, 0, 1, 1, 1])
# Rows are (P(FAKE), P(REAL)); the third FAKE image is wrongly called REAL.
PROBABILITIES = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]])


def test_headline_metrics_by_hand() -> None:
    metrics = headline_metrics(LABELS, PROBABILITIES)
    assert metrics["test_accuracy"] == pytest.approx(5 / 6)
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.4, 0.7, 0.8, 0.9]))
    assert metrics["test_loss"] == pytest.approx(expected_loss)
    # REAL scores 0.7, 0.8, 0.9 vs FAKE scores 0.1, 0.2, 0.6: 9 of 9 pairs ordered right.
    assert metrics["test_roc_auc"] == pytest.approx(1.0)
    assert metrics["test_pr_auc"] == pytest.approx(1.0)


def test_auc_counts_misordered_pairs() -> None:
    probabilities = PROBABILITIES.copy()
    probabilities[3] = [0.85, 0.15]  # a REAL image now scores below two FAKE ones
    assert headline_metrics(LABELS, probabilities)["test_roc_auc"] == pytest.approx(7 / 9)


def test_confusion_rows_are_true_columns_predicted() -> None:
    assert confusion(LABELS, PROBABILITIES) == [[2, 1], [0, 3]]


def test_classification_report_values_and_tsv_shape() -> None:
    report = classification_report(LABELS, PROBABILITIES)
    assert list(report) == ["FAKE", "REAL", "macro avg", "weighted avg"]
    assert report["FAKE"]["precision"] == pytest.approx(1.0) and report["FAKE"]["recall"] == pytest.approx(2 / 3)
    assert report["REAL"]["precision"] == pytest.approx(0.75) and report["REAL"]["support"] == 3
    lines = format_report_tsv(report).splitlines()
    assert lines[0].split("\t") == ["", "precision", "recall", "f1-score", "support"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["FAKE", "REAL", "macro avg", "weighted avg"]
    assert lines[1].split("\t") == ["FAKE", "1.0000", "0.6667", "0.8000", "3"]
    assert lines[4].split("\t")[-1] == "6"


def test_curves_are_monotone_and_bounded() -> None:
    roc = roc_points(LABELS, PROBABILITIES)
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and roc["fpr"] == sorted(roc["fpr"])
    pr = pr_points(LABELS, PROBABILITIES)
    assert pr["recall"] == sorted(pr["recall"]) and all(0.0 <= value <= 1.0 for value in pr["precision"])


def test_training_metrics_payload() -> None:
    history = {"loss": [0.7, 0.5], "accuracy": [0.6, 0.8], "val_loss": [0.6, 0.4], "val_accuracy": [0.7, 0.9], "val_auc": [0.8, 0.95]}
    headline = {**headline_metrics(LABELS, PROBABILITIES), "final_train_accuracy": 0.8}
    payload = training_metrics(history, headline, roc_points(LABELS, PROBABILITIES), pr_points(LABELS, PROBABILITIES), confusion(LABELS, PROBABILITIES))
    assert payload["epochs"] == [1, 2]
    assert payload["history"]["val_auc"] == [0.8, 0.95]
    assert payload["roc_curve"]["auc"] == headline["test_roc_auc"]
    assert payload["confusion_matrix"]["matrix"] == [[2, 1], [0, 3]]
    assert payload["class_names"] == ["FAKE", "REAL"]
    assert payload["pr_curve"]["auc"] == headline["test_pr_auc"] and payload["pr_curve"]["auc_method"].startswith("average precision")


def test_pr_auc_is_the_step_wise_average_precision_not_the_trapezoid() -> None:
    # REAL at ranks 1, 3 and 6 of 8: precision 1/1, 2/3 and 3/6 at the recall steps, so AP = (1 + 2/3 + 1/2) / 3.
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    real = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    probabilities = np.stack([1 - real, real], axis=1)
    assert headline_metrics(labels, probabilities)["test_pr_auc"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    pr = pr_points(labels, probabilities)
    # The trapezoid over the same points (0.678 here) is another number: the step-wise area is what is logged.
    assert abs(sklearn_metrics.auc(pr["recall"], pr["precision"]) - headline_metrics(labels, probabilities)["test_pr_auc"]) > 0.04


def test_report_json_writes_undefined_metrics_as_null() -> None:
    # The ROC AUC of a one-class subset is NaN; a browser's JSON.parse refuses NaN, so the file must say null.
    labels, probabilities = np.zeros(4, dtype=int), np.tile([0.7, 0.3], (4, 1))
    payload = {"rows": [{"name": "clean", **headline_metrics(labels, probabilities)}], "inf": (float("inf"), np.float32(0.5)), "n": 3}

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in strict JSON")

    written = json.loads(to_json(payload), parse_constant=refuse)
    assert written["rows"][0]["test_roc_auc"] is None and written["rows"][0]["test_pr_auc"] is None  # not 0.0, as scikit-learn gives
    assert written["rows"][0]["test_accuracy"] == pytest.approx(1.0)
    assert written["inf"] == [None, 0.5] and written["n"] == 3


def test_confident_calls_are_ranked_by_both_columns_not_tied() -> None:
    # A float32 softmax gives p(REAL) == 1.0 exactly past a logit margin of about 16.6, yet p(FAKE) still
    # tells those images apart: a confidently wrong FAKE (margin 18) ranks below the REAL ones (margin 30).
    import keras
    from sklearn.metrics import roc_auc_score

    margins = np.array([-5.0, -30.0, 18.0, 30.0, 30.0, 25.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(np.stack([np.zeros(6), margins], axis=1).astype("float32")))
    assert np.all(probabilities[2:, 1] == 1.0)  # the tie a single column sees
    exact = roc_auc_score(labels, margins)  # 1.0: every REAL above every FAKE
    assert headline_metrics(labels, probabilities)["test_roc_auc"] == pytest.approx(exact)
    assert roc_auc_score(labels, probabilities[:, 1]) < exact
    assert headline_metrics(labels, probabilities)["test_pr_auc"] == pytest.approx(1.0)
    curve = roc_points(labels, probabilities)
    assert (0.0, 1.0) in set(zip(curve["fpr"], curve["tpr"]))  # the curve climbs to 1 before any false positive
    # the same ranking from FAKE's side
    swapped = headline_metrics(1 - labels, probabilities[:, ::-1])
    assert swapped["test_roc_auc"] == pytest.approx(exact)
