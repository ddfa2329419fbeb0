"""Calibration: do the predicted probabilities mean what they say, and temperature scaling to make them.

A probability is calibrated when, among the images given confidence 0.8, about 80% are right. Three
measures, all on (N,) integer labels and (N, classes) softmax probabilities:
- expected calibration error (ECE, Guo et al. 2017): confidences (the top probability) fall into 15
  equal-width bins ((0, 1/15], (1/15, 2/15], ...); ECE = sum over bins of (bin count / N) *
  |accuracy in the bin - mean confidence in the bin|. 0 is perfect; with two classes the confidence is
  at least 0.5, so the bins below 0.5 stay empty.
- Brier score (Brier 1950, multi-class form): mean over images of the sum over classes of
  (probability - one-hot target)^2. 0 is perfect, 2 the worst; with two classes it is twice the
  squared error of the REAL probability alone.
- reliability diagram: per bin, count, mean confidence and accuracy.
Temperature scaling (Guo et al. 2017) divides the logits by one number T > 0 fitted on the validation
split: T > 1 softens over-confident predictions, T < 1 sharpens timid ones, and the predicted class
never changes, so accuracy and ROC AUC stay as they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

BINS = 15  # Guo et al.'s choice; more bins are noisier on a few hundred test images
# log T is searched in [log 0.05, log 20]: wider than any sensible model needs, narrow enough to stay finite.
TEMPERATURE_BOUNDS = (0.05, 20.0)
TEMPERATURE_METRIC = "temperature"  # the MLflow metric forgery.predict reads back to calibrate
# A float32 softmax can round a probability to exactly 0; its log would be -inf. The floor is float32's
# smallest number, not a round 1e-12: a float32 p(FAKE) still resolves a logit margin of 60 (about 1e-26),
# and a higher floor would tie every margin above 27.6 and cap the calibrated confidences below 1 - 1e-6.
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).smallest_subnormal)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> float:
    """ECE over `bins` equal-width confidence bins (module docstring), in [0, 1]."""
    return float(
        sum(
            row["count"] / len(labels) * abs(row["accuracy"] - row["mean_confidence"])
            for row in reliability_bins(labels, probabilities, bins)
            if row["count"]
        )
    )


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over images of the sum over classes of (probability - one-hot target)^2, in [0, 2]."""
    targets = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((np.asarray(probabilities, dtype="float64") - targets) ** 2, axis=1)))


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: its edges, count, mean confidence and accuracy (None when empty)."""
    confidence = np.asarray(probabilities, dtype="float64").max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are closed on the right, (lower, upper], as in Guo et al.; a confidence of exactly 0 joins the first.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows: list[dict[str, Any]] = []
    for position in range(bins):
        members = index == position
        count = int(members.sum())
        rows.append(
            {
                "lower": round(float(edges[position]), 6),
                "upper": round(float(edges[position + 1]), 6),
                "count": count,
                "mean_confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean -log(probability of the true class): the loss temperature scaling minimises."""
    picked = np.asarray(probabilities, dtype="float64")[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, _SMALLEST_PROBABILITY))))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the softmax model's probabilities as if its logits had been divided by T."""
    if not temperature > 0:
        raise ValueError(f"temperature must be greater than 0, got {temperature}")
    # log p = logits - logsumexp(logits): a per-image constant that softmax ignores, so log p stands in for the logits.
    logits = np.log(np.maximum(np.asarray(probabilities, dtype="float64"), _SMALLEST_PROBABILITY))
    return softmax(logits / temperature, axis=1)


NO_ERROR_NOTE = (
    "no validation image has another class scored above its own, so any sharpening lowers the NLL without limit; "
    "the temperature stays 1 (no scaling)"
)


def no_error_note(ties: int) -> str:
    """NO_ERROR_NOTE, saying so when some images are tied between classes (their NLL no temperature changes)."""
    if not ties:
        return NO_ERROR_NOTE
    return (
        f"no validation image has another class scored above its own, but {ties} are tied between classes, whose NLL no "
        "temperature changes, so any sharpening lowers the NLL towards a floor it never reaches; the temperature stays 1 (no scaling)"
    )


def bound_note(temperature: float) -> str:
    """Why the fitted temperature sits at one end of TEMPERATURE_BOUNDS."""
    side = "smallest" if temperature == TEMPERATURE_BOUNDS[0] else "largest"
    return f"the validation NLL is lowest beyond the {side} temperature searched, so the temperature is held at that bound ({temperature:g})"


def temperature_fit(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, str | None]:
    """The T > 0 that minimises the NLL of softmax(log(p) / T) on these (validation) images, and a note when
    T is not the plain minimum: 1.0 when no image has another class above its own (ties included) (the NLL falls without limit as T
    shrinks), or a bound of TEMPERATURE_BOUNDS when the minimum lies beyond it."""
    logits = np.log(np.maximum(np.asarray(probabilities, dtype="float64"), _SMALLEST_PROBABILITY))
    rows = np.arange(len(labels))
    # Decided from the data, not from where a search stops: once every margin / T passes about 37, the
    # float64 NLL is exactly 0 and flat, and a search can stop anywhere in that flat region.
    top = logits.max(axis=1)
    if np.all(logits[rows, labels] >= top):
        return 1.0, no_error_note(int(np.count_nonzero((logits == top[:, None]).sum(axis=1) > 1)))

    def nll(log_temperature: float) -> float:
        return float(-np.mean(log_softmax(logits / np.exp(log_temperature), axis=1)[rows, labels]))

    # With an image misclassified the NLL grows without limit as T shrinks: smooth, with one minimum in log T.
    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    # T = 1 is "no scaling": keep it unless the search really improved on it, so fitting never hurts NLL.
    if not found.fun < nll(0.0):
        return 1.0, None
    for bound, log_bound in zip(TEMPERATURE_BOUNDS, (low, high)):
        if abs(found.x - log_bound) < 1e-3 and nll(log_bound) <= found.fun:  # still falling at the bound
            return bound, bound_note(bound)
    return float(np.exp(found.x)), None


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The fitted temperature of `temperature_fit`, without its note."""
    return temperature_fit(labels, probabilities)[0]


def calibration_report(
    val_labels: np.ndarray,
    val_probabilities: np.ndarray,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
) -> dict[str, Any]:
    """Temperature fitted on validation; test-split ECE, Brier, NLL and reliability bins before and after."""
    temperature, note = temperature_fit(val_labels, val_probabilities)
    return {
        "temperature": temperature,
        "fitted_on": "validation",
        "fit_note": note,
        "bins": BINS,
        "definitions": {
            "ece": f"sum over {BINS} equal-width confidence bins of (share of images in the bin) * "
            "|accuracy - mean confidence|; confidence = top probability; 0 is perfect",
            "brier": "mean over images of the sum over classes of (probability - one-hot target)^2; 0 is perfect, 2 the worst",
            "nll": "mean -log(probability of the true class)",
            "temperature": "calibrated probabilities = softmax(log(p) / temperature); above 1 softens, below 1 sharpens",
        },
        # Validation only shows that the fit lowered the NLL it was fitted on; the test split is the evidence.
        "validation": {
            "count": int(len(val_labels)),
            "nll_before": negative_log_likelihood(val_labels, val_probabilities),
            "nll_after": negative_log_likelihood(val_labels, apply_temperature(val_probabilities, temperature)),
        },
        "test": {
            "count": int(len(test_labels)),
            "before": _calibration_scores(test_labels, test_probabilities),
            "after": _calibration_scores(test_labels, apply_temperature(test_probabilities, temperature)),
        },
    }


def _calibration_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """ECE, Brier, NLL, accuracy and the reliability bins of one set of probabilities."""
    return {
        "ece": expected_calibration_error(labels, probabilities),
        "brier": brier_score(labels, probabilities),
        "nll": negative_log_likelihood(labels, probabilities),
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "reliability": reliability_bins(labels, probabilities),
    }


def calibration_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of `calibration_report` worth an MLflow metric each."""
    test = report["test"]
    return {
        "test_ece": test["before"]["ece"],
        "test_brier": test["before"]["brier"],
        "test_ece_calibrated": test["after"]["ece"],
        "test_brier_calibrated": test["after"]["brier"],
        TEMPERATURE_METRIC: report["temperature"],
    }
