"""Test-split evaluation as pure functions of labels and predicted probabilities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics

from forgery.data import CLASS_NAMES

# The ROC/PR positive class is REAL (label 1), scikit-learn's default; ROC AUC is the same either way
# (the ranking score below is antisymmetric in the two classes).
POSITIVE_CLASS = 1
_EPSILON = 1e-7  # Keras clips probabilities by the same amount inside its cross-entropy
_TINY = float(np.finfo(np.float32).smallest_subnormal)  # below any probability a float32 softmax gives but 0
REPORT_ROWS = (*CLASS_NAMES, "macro avg", "weighted avg")
REPORT_COLUMNS = ("precision", "recall", "f1-score", "support")
# test_pr_auc is average precision: the standard, unbiased summary of the PR curve.
PR_AUC_METHOD = "average precision: sum over thresholds of (recall step) * precision, scikit-learn's average_precision_score (not the trapezoid between PR points, which can read higher or lower)"


def headline_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """test_loss (cross-entropy), test_accuracy, test_roc_auc and test_pr_auc (average precision: PR_AUC_METHOD)."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], _EPSILON, 1.0)
    scores = ranking_scores(probabilities)
    positive = labels == POSITIVE_CLASS
    one_class = positive.all() or not positive.any()  # no ranking to judge: both areas are undefined, not 0 or 1
    return {
        "test_loss": float(-np.mean(np.log(picked))),
        "test_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "test_roc_auc": math.nan if one_class else float(metrics.roc_auc_score(positive, scores)),
        "test_pr_auc": math.nan if one_class else float(metrics.average_precision_score(positive, scores)),
    }


def ranking_scores(probabilities: np.ndarray) -> np.ndarray:
    """The positive class's score for ROC and PR: log p(REAL) - log p(FAKE), in float64 from both columns.

    A float32 softmax rounds p(REAL) to exactly 1.0 once the logit margin passes about 16.6, so ranking
    by that column ties every confident REAL call, and a confidently wrong FAKE image among them counts
    half right; p(FAKE) still resolves down to about 1e-38 there, so the difference keeps them apart.
    It is monotone in p(REAL) wherever the columns sum to 1, so it changes no curve except by breaking such ties.
    """
    p = np.maximum(np.asarray(probabilities, dtype=np.float64), _TINY)
    return np.log(p[:, POSITIVE_CLASS]) - np.log(p[:, 1 - POSITIVE_CLASS])


def roc_points(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, list[float]]:
    """ROC curve points (false and true positive rates) for the positive class."""
    fpr, tpr, _ = metrics.roc_curve(labels == POSITIVE_CLASS, ranking_scores(probabilities))
    return {"fpr": _rounded(fpr), "tpr": _rounded(tpr)}


def pr_points(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, list[float]]:
    """Precision-recall curve points for the positive class, recall increasing."""
    precision, recall, _ = metrics.precision_recall_curve(labels == POSITIVE_CLASS, ranking_scores(probabilities))
    return {"recall": _rounded(recall[::-1]), "precision": _rounded(precision[::-1])}


def confusion(labels: np.ndarray, probabilities: np.ndarray) -> list[list[int]]:
    """Confusion matrix, rows = true class, columns = predicted class, in CLASS_NAMES order."""
    matrix = metrics.confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(len(CLASS_NAMES))))
    return matrix.astype(int).tolist()


def classification_report(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, dict[str, float]]:
    """scikit-learn's report with rows FAKE, REAL, macro avg, weighted avg (no accuracy row)."""
    report: dict[str, Any] = metrics.classification_report(
        labels,
        probabilities.argmax(axis=1),
        labels=list(range(len(CLASS_NAMES))),
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=0,
    )
    return {row: {column: report[row][column] for column in REPORT_COLUMNS} for row in REPORT_ROWS}


def format_report_tsv(report: dict[str, dict[str, float]]) -> str:
    """The report as tab-separated text: an empty corner cell, 4-decimal scores and whole-number support."""
    lines = ["\t".join(("", *REPORT_COLUMNS))]
    for row in REPORT_ROWS:
        values = report[row]
        cells = [f"{values[column]:.4f}" for column in REPORT_COLUMNS[:-1]]
        lines.append("\t".join((row, *cells, str(int(values["support"])))))
    return "\n".join(lines) + "\n"


def _rounded(values: np.ndarray) -> list[float]:
    """Floats rounded to 6 places so JSON stays small and readable."""
    return [round(float(value), 6) for value in values]
