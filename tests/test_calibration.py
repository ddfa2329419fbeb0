"""Calibration measures against hand-computed values, and temperature scaling on data with a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from forgery.calibration import (
    BINS,
    NO_ERROR_NOTE,
    TEMPERATURE_BOUNDS,
    apply_temperature,
    brier_score,
    calibration_metrics,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    temperature_fit,
)
from forgery.plots import reliability_figure

# Four predictions whose confidences (0.78, 0.75, 0.95, 0.55) sit well inside 15-bin edges (multiples of 1/15).
HAND_PROBABILITIES = np.array([[0.22, 0.78], [0.75, 0.25], [0.95, 0.05], [0.55, 0.45]])
HAND_LABELS = np.array([1, 1, 0, 1])  # right, wrong, right, wrong


def test_ece_matches_the_hand_computed_value() -> None:
    # Bin (11/15, 12/15]: 0.78 right, 0.75 wrong -> accuracy 0.5, confidence 0.765, weight 2/4.
    # Bin (14/15, 1]: 0.95 right -> |1 - 0.95|, weight 1/4.  Bin (8/15, 9/15]: 0.55 wrong -> |0 - 0.55|, weight 1/4.
    expected = 2 / 4 * abs(0.5 - 0.765) + 1 / 4 * 0.05 + 1 / 4 * 0.55
    assert expected_calibration_error(HAND_LABELS, HAND_PROBABILITIES) == pytest.approx(expected, abs=1e-12)
    # One bin pools everything: |0.5 - mean confidence| is a different number, so the binning matters.
    assert expected_calibration_error(HAND_LABELS, HAND_PROBABILITIES, bins=1) == pytest.approx(abs(0.5 - 0.7575))


def test_ece_is_zero_when_confidence_equals_accuracy() -> None:
    # Ten predictions at confidence 0.7 of which exactly seven are right.
    probabilities = np.tile([0.3, 0.7], (10, 1))
    labels = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_reliability_bins_count_and_average_each_bin() -> None:
    rows = reliability_bins(HAND_LABELS, HAND_PROBABILITIES)
    assert len(rows) == BINS
    assert [index for index, row in enumerate(rows) if row["count"]] == [8, 11, 14]
    assert rows[11]["count"] == 2
    assert rows[11]["mean_confidence"] == pytest.approx(0.765)
    assert rows[11]["accuracy"] == pytest.approx(0.5)
    assert rows[8]["accuracy"] == 0.0 and rows[14]["accuracy"] == 1.0
    assert rows[0]["mean_confidence"] is None and rows[0]["accuracy"] is None
    assert rows[0]["lower"] == 0.0 and rows[-1]["upper"] == 1.0


def test_brier_matches_the_hand_computed_value() -> None:
    # Sum over both classes of the squared error: 2 * (1 - p_true)^2 with two classes.
    per_image = [2 * 0.22**2, 2 * 0.75**2, 2 * 0.05**2, 2 * 0.55**2]
    assert brier_score(HAND_LABELS, HAND_PROBABILITIES) == pytest.approx(np.mean(per_image), abs=1e-12)
    assert brier_score(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert brier_score(np.array([0, 1]), np.array([[0.0, 1.0], [1.0, 0.0]])) == 2.0


def overconfident_model(temperature: float, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities): labels drawn from softmax(z / T0), the model reports softmax(z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(count, 2))
    truth = softmax(logits / temperature, axis=1)
    labels = (rng.random(count) < truth[:, 1]).astype("int64")
    return labels, softmax(logits, axis=1)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_temperature: float) -> None:
    labels, probabilities = overconfident_model(true_temperature, 20000, seed=1)
    assert fit_temperature(labels, probabilities) == pytest.approx(true_temperature, rel=0.1)


@pytest.mark.parametrize("seed", range(6))
def test_fitting_never_raises_the_validation_nll(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Well calibrated, random labels, and always-right predictions: optimum near 1, at the top and at the bottom.
    cases = [
        overconfident_model(1.0, 300, seed),
        (rng.integers(0, 2, 300), rng.dirichlet([0.3, 0.3], 300)),
        (np.array([0, 1] * 150), np.tile([[0.9, 0.1], [0.1, 0.9]], (150, 1))),
    ]
    for labels, probabilities in cases:
        temperature = fit_temperature(labels, probabilities)
        before = negative_log_likelihood(labels, probabilities)
        assert negative_log_likelihood(labels, apply_temperature(probabilities, temperature)) <= before + 1e-12


def test_apply_temperature_keeps_the_predicted_class_and_softens_or_sharpens() -> None:
    probabilities = np.random.default_rng(2).dirichlet([1.0, 1.0], 50)
    for temperature in (0.3, 1.0, 4.0):
        scaled = apply_temperature(probabilities, temperature)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
        np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-9)
    assert np.all(apply_temperature(probabilities, 4.0).max(axis=1) <= probabilities.max(axis=1) + 1e-12)
    assert np.all(apply_temperature(probabilities, 0.3).max(axis=1) >= probabilities.max(axis=1) - 1e-12)
    with pytest.raises(ValueError):
        apply_temperature(probabilities, 0.0)


def test_apply_temperature_divides_the_logits_of_confident_float32_outputs() -> None:
    # Margins of 40 and 60 leave p(FAKE) at about 4e-18 and 9e-27 in float32: still two different calls,
    # which softmax(z / T) keeps apart (a floor of 1e-12 tied both at a margin of 27.6).
    logits = np.array([[0.0, 40.0], [0.0, 60.0]])
    outputs = softmax(logits, axis=1).astype("float32")
    scaled = apply_temperature(outputs, 2.0)
    np.testing.assert_allclose(scaled[:, 0], softmax(logits / 2.0, axis=1)[:, 0], rtol=1e-5)


def test_apply_temperature_survives_probabilities_of_exactly_zero() -> None:
    scaled = apply_temperature(np.array([[1.0, 0.0], [0.0, 1.0]], dtype="float32"), 2.0)
    assert np.all(np.isfinite(scaled)) and scaled[0, 0] > 0.99


def test_report_fits_on_validation_and_improves_an_overconfident_test_split() -> None:
    val_labels, val_probabilities = overconfident_model(3.0, 3000, seed=3)
    test_labels, test_probabilities = overconfident_model(3.0, 3000, seed=4)
    report = calibration_report(val_labels, val_probabilities, test_labels, test_probabilities)
    json.dumps(report, allow_nan=False)  # goes to report/calibration.json as it is
    assert report["temperature"] == pytest.approx(fit_temperature(val_labels, val_probabilities))
    assert report["validation"]["nll_after"] < report["validation"]["nll_before"]
    test = report["test"]
    assert test["count"] == 3000
    assert test["after"]["ece"] < test["before"]["ece"] / 2
    assert test["after"]["brier"] < test["before"]["brier"]
    assert test["after"]["accuracy"] == test["before"]["accuracy"]
    assert test["before"]["ece"] == pytest.approx(expected_calibration_error(test_labels, test_probabilities))
    assert len(test["before"]["reliability"]) == len(test["after"]["reliability"]) == BINS
    assert calibration_metrics(report) == {
        "test_ece": test["before"]["ece"],
        "test_brier": test["before"]["brier"],
        "test_ece_calibrated": test["after"]["ece"],
        "test_brier_calibrated": test["after"]["brier"],
        "temperature": report["temperature"],
    }


def test_reliability_figure_shows_the_filled_bins_before_and_after() -> None:
    from matplotlib import pyplot as plt

    before = reliability_bins(HAND_LABELS, HAND_PROBABILITIES)
    after = reliability_bins(HAND_LABELS, apply_temperature(HAND_PROBABILITIES, 2.0))
    figure = reliability_figure(before, after, 2.0)
    left, right = figure.axes
    assert len(left.patches) == sum(1 for row in before if row["count"])  # one bar per non-empty bin
    assert [patch.get_height() for patch in left.patches] == [row["accuracy"] for row in before if row["count"]]
    assert "2" in right.get_title()
    plt.close(figure)


def test_a_validation_split_without_errors_keeps_the_temperature_at_one() -> None:
    # Every call right: the NLL keeps falling as T shrinks, and T at its bound would turn a 0.55 into 0.98.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    confidence = rng.uniform(0.6, 0.99, 200)
    probabilities = np.where(labels[:, None] == 1, np.stack([1 - confidence, confidence], 1), np.stack([confidence, 1 - confidence], 1))
    assert temperature_fit(labels, probabilities) == (1.0, NO_ERROR_NOTE)
    report = calibration_report(labels, probabilities, labels, probabilities)
    # a 0.5/0.5 tie is no error either way (its NLL does not depend on T), though argmax calls it FAKE
    fitted, note = temperature_fit(np.array([0, 1, 0]), np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]))
    assert fitted == 1.0 and "but 1 are tied between classes" in note and "towards a floor it never reaches" in note
    # all tied (a collapsed model): said so, not passed off as a validation split without errors
    assert "but 4 are tied" in temperature_fit(np.array([0, 1, 0, 1]), np.full((4, 2), 0.5))[1]
    assert report["temperature"] == 1.0 and report["fit_note"].startswith("no validation image has another class scored above its own")
    # one confident mistake makes the fit identifiable again: a real temperature, and no note
    labels[0] = 1 - probabilities[0].argmax()
    report = calibration_report(labels, probabilities, labels, probabilities)
    assert report["temperature"] != 1.0 and report["fit_note"] is None


@pytest.mark.parametrize("wrong_probability", [1e-2, 1e-6, 1e-12, 0.0])
def test_a_confident_validation_split_without_errors_keeps_the_temperature_at_one(wrong_probability: float) -> None:
    # Margins so wide that the float64 NLL is exactly 0 for any T below about 0.2: a search stopped in that
    # flat region, far from its bound, once returned a sharpening T that doubled the test Brier score.
    labels = np.random.default_rng(0).integers(0, 2, 200)
    probabilities = np.full((200, 2), wrong_probability, dtype="float32")
    probabilities[np.arange(200), labels] = 1 - wrong_probability
    assert temperature_fit(labels, probabilities) == (1.0, NO_ERROR_NOTE)


def test_a_minimum_below_the_smallest_temperature_is_held_at_that_bound_with_a_note() -> None:
    # 99 timid right calls at 0.55 and one barely wrong at 0.499: the NLL is lowest near T = 0.02, below
    # the bound; T = 1 (what the fit once returned, with no note) is the worst choice in range.
    labels = np.ones(100, dtype="int64")
    probabilities = np.tile([0.45, 0.55], (100, 1))
    probabilities[0] = [0.501, 0.499]
    temperature, note = temperature_fit(labels, probabilities)
    assert temperature == TEMPERATURE_BOUNDS[0]
    assert note == "the validation NLL is lowest beyond the smallest temperature searched, so the temperature is held at that bound (0.05)"
    assert negative_log_likelihood(labels, apply_temperature(probabilities, temperature)) < negative_log_likelihood(labels, probabilities) / 10


def test_a_minimum_above_the_largest_temperature_is_held_at_that_bound_with_a_note() -> None:
    # Confident calls that are right barely more than half the time: only near-total softening helps.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    calls = np.where(rng.random(2000) < 0.51, labels, 1 - labels)
    probabilities = np.where(calls[:, None] == 1, [0.001, 0.999], [0.999, 0.001])
    temperature, note = temperature_fit(labels, probabilities)
    assert temperature == TEMPERATURE_BOUNDS[1] and "beyond the largest temperature searched" in note
    report = calibration_report(labels, probabilities, labels, probabilities)
    assert report["temperature"] == TEMPERATURE_BOUNDS[1] and report["fit_note"] == note


def test_an_interior_minimum_has_no_note() -> None:
    labels, probabilities = overconfident_model(2.5, 5000, seed=7)
    temperature, note = temperature_fit(labels, probabilities)
    assert TEMPERATURE_BOUNDS[0] < temperature < TEMPERATURE_BOUNDS[1] and note is None
