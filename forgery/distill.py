"""Knowledge distillation: training targets that mix each label with a finished run's predictions.

`distill.teacher=<run id>` has that run's logged model (its served view, test-time average included)
score every training image once, before training; each training target becomes
`(1 - weight) * label + weight * teacher's probabilities`. The teacher's doubts about an image
(a REAL photo that looks generated) reach the student as a softer target instead of a hard one.

The label keeps the larger share (weight < 0.5), so every target's class is still its label's and the
training accuracy Keras reports stays the accuracy on labels. The training ROC AUC reads the label
from the target the same way (forgery.metrics.LabelAUC).

A teacher must have trained on the same validation split: had it seen this run's validation images,
their answers would leak into the student through its targets and flatter every validation figure.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from forgery.config import ConfigError

# Data settings that move no image between train, validation and test: a teacher may differ in them.
# (A teacher trained on a share of the training split, data.train_fraction, saw no validation image.)
SPLIT_FREE_KEYS = ("data.cache_dir", "data.train_fraction")


def split_mismatch(teacher_params: Mapping[str, str], student_params: Mapping[str, str]) -> str | None:
    """The first data setting (flattened `data.*` param) in which the teacher's split differs from the student's, or None."""
    keys = sorted({key for key in (*teacher_params, *student_params) if key.startswith("data.") and key not in SPLIT_FREE_KEYS})
    for key in keys:
        if teacher_params.get(key) != student_params.get(key):
            return f"{key}={teacher_params.get(key, '(unset)')} (this run: {student_params.get(key, '(unset)')})"
    return None


def check_teacher(run_id: str, run: Mapping[str, Any] | None, student_params: Mapping[str, str], store: str) -> None:
    """ConfigError unless `run` (tracking.get_run's summary of `run_id` in `store`) is a finished run on this run's split."""
    if run is None:
        raise ConfigError(f"distill.teacher: no MLflow run with id {run_id!r} in {store} (train in the folder of the teacher's store)")
    if run["status"] != "FINISHED":
        raise ConfigError(f"distill.teacher: run {run_id} is {run['status']}, not FINISHED; only a finished run has a model to learn from")
    # Checked before the split: a parent logs no data settings, and "another split" would send the user the wrong way.
    if run["tags"].get("sweep") == "parent":
        raise ConfigError(f"distill.teacher: run {run_id} is a sweep's parent run, which trains no model; name one of its job runs")
    mismatch = split_mismatch(run["params"], student_params)
    if mismatch:
        raise ConfigError(
            f"distill.teacher: run {run_id} trained on another split or dataset, {mismatch}; "
            "its answers on this run's validation images would leak into training, so use a teacher trained with the same data settings"
        )


VALIDATION_PARAM = "data_val_fingerprint"  # every run's param: forgery.data.validation_fingerprint of its data


def check_teacher_validation(run_id: str, teacher_params: Mapping[str, str], fingerprint: str) -> str | None:
    """ConfigError when the teacher validated on other images than this run's (its data had changed since);
    a warning to log when the teacher's run predates the record and cannot be checked; None when they match."""
    recorded = teacher_params.get(VALIDATION_PARAM)
    if recorded is None:
        return f"distill.teacher: run {run_id} predates the validation-split record, so whether it trained on this run's validation images cannot be checked"
    if recorded != fingerprint:
        raise ConfigError(
            f"distill.teacher: run {run_id} validated on other images than this run's (same settings, but the data has changed since: "
            f"files added, removed or altered draw another split); its answers on this run's validation images would leak into training"
        )
    return None


def check_teacher_probabilities(run_id: str, probabilities: np.ndarray, images: int) -> None:
    """ConfigError unless the teacher gave one finite probability per class (two) for each of `images` images."""
    if probabilities.shape != (images, 2):
        raise ConfigError(f"distill.teacher: run {run_id}'s model answers with shape {probabilities.shape} for {images} images, not two class probabilities each")
    bad = int(np.count_nonzero(~np.isfinite(probabilities).all(axis=1)))
    if bad:
        raise ConfigError(f"distill.teacher: run {run_id}'s model gives non-finite probabilities (nan or inf) for {bad} of the {images} training images; they cannot be training targets")


def mixed_targets(labels: np.ndarray, teacher_probabilities: np.ndarray, weight: float) -> np.ndarray:
    """(N, classes) float32 targets: `1 - weight` of the one-hot label plus `weight` of the teacher's probabilities."""
    if teacher_probabilities.shape != (len(labels), teacher_probabilities.shape[-1]) or teacher_probabilities.ndim != 2:
        raise ValueError(f"teacher probabilities of shape {teacher_probabilities.shape} for {len(labels)} labels")
    one_hot = np.eye(teacher_probabilities.shape[1], dtype="float32")[labels]
    return ((1.0 - weight) * one_hot + weight * teacher_probabilities).astype("float32")


def label_agreement(labels: np.ndarray, teacher_probabilities: np.ndarray) -> float:
    """Share of images whose label is the teacher's top class: how often the teacher already agrees."""
    return float(np.mean(np.argmax(teacher_probabilities, axis=1) == labels))
