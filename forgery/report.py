"""The report's JSON payloads (training_metrics, model_card, gradcam_results) as pure functions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgery.data import CLASS_NAMES
from forgery.evaluate import POSITIVE_CLASS, PR_AUC_METHOD

# The six Grad-CAM files of the report: <sample>-input.png and <sample>-gradcam-<target>.png.
GRADCAM_SAMPLES: tuple[str, ...] = tuple(name.lower() for name in CLASS_NAMES)


@dataclass(frozen=True)
class Explanation:
    """One explained test image: its true class, predicted probabilities and a heatmap per target class."""

    name: str
    image: np.ndarray
    true_label: int
    probabilities: np.ndarray
    heatmaps: dict[int, np.ndarray]


def to_json(payload: Any) -> str:
    """`payload` as strict JSON text: a NaN or infinity (an undefined metric, such as the ROC AUC of a
    one-class subset) becomes null, because a browser's JSON.parse refuses Python's NaN."""
    return json.dumps(finite_or_null(payload), indent=2, allow_nan=False) + "\n"


def finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float inside it (dicts, lists, tuples, numpy scalars) replaced by None."""
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def input_file(sample: str) -> str:
    """File name of a sample's upscaled input image."""
    return f"{sample}-input.png"


def overlay_file(sample: str, target: int) -> str:
    """File name of a sample's overlay for one target class."""
    return f"{sample}-gradcam-{CLASS_NAMES[target].lower()}.png"


def training_metrics(
    history: dict[str, list[float]],
    headline: dict[str, float],
    roc: dict[str, list[float]],
    pr: dict[str, list[float]],
    confusion_matrix: list[list[int]],
) -> dict[str, Any]:
    """Per-epoch curves, ROC/PR points, the confusion matrix and the headline numbers."""
    epochs = len(history.get("loss", []))
    per_epoch = {name: [round(float(value), 6) for value in values] for name, values in history.items()}
    return {
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[POSITIVE_CLASS],
        "epochs": list(range(1, epochs + 1)),
        "history": per_epoch,
        "roc_curve": {**roc, "auc": headline["test_roc_auc"]},
        # "auc" is average precision, the step-wise area (what test_pr_auc holds), not the trapezoid over
        # these points: straight lines between PR points are not reachable operating points.
        "pr_curve": {**pr, "auc": headline["test_pr_auc"], "auc_method": PR_AUC_METHOD},
        "confusion_matrix": {"labels": list(CLASS_NAMES), "rows": "true", "columns": "predicted", "matrix": confusion_matrix},
        "headline": headline,
    }


def gradcam_results(explanations: list[Explanation], layer_name: str, temperature: float = 1.0) -> dict[str, Any]:
    """Per explained sample: its files, true and predicted label, confidence and probabilities (calibrated by `temperature`)."""
    samples = []
    for item in explanations:
        predicted = int(np.argmax(item.probabilities))
        samples.append(
            {
                "sample": item.name,
                "input": input_file(item.name),
                "overlays": {CLASS_NAMES[target]: overlay_file(item.name, target) for target in sorted(item.heatmaps)},
                "true_label": CLASS_NAMES[item.true_label],
                "predicted_label": CLASS_NAMES[predicted],
                "correct": predicted == item.true_label,
                "confidence": round(float(item.probabilities[predicted]), 6),
                "probabilities": {name: round(float(item.probabilities[index]), 6) for index, name in enumerate(CLASS_NAMES)},
            }
        )
    return {
        "method": "Grad-CAM of the class logit (before softmax)",
        "target_layer": layer_name,
        "overlay_count": sum(len(item.heatmaps) for item in explanations),
        # Confidences and probabilities below are temperature-scaled (fitted on validation; 1.0 = raw softmax).
        "temperature": round(float(temperature), 6),
        "samples": samples,
    }


def model_card(
    *,
    model_name: str,
    architecture: str,
    optimizer: str,
    learning_rate: float,
    loss: str,
    parameters: int,
    epochs: int,
    batch_size: int,
    augmentation: str,
    dataset: str,
    counts: dict[str, dict[str, int]],
    issues: dict[str, int],
    gradcam_examples: int,
    seed: int,
    backend: str,
    test_time_view: str = "none",
    epochs_planned: int | None = None,
    evaluated_epoch: int | None = None,
) -> dict[str, Any]:
    """What was trained, how, and on what: the facts a reader needs to judge a result.

    `epochs` is how many were trained; `epochs_planned` the config's (more when early stopping ended the
    run), `evaluated_epoch` the epoch whose weights were tested (earlier when the best one was restored).
    """
    return {
        "model": model_name,
        "architecture": architecture,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "loss": loss,
        "parameters": parameters,
        "epochs": epochs,
        "epochs_planned": epochs if epochs_planned is None else epochs_planned,
        "evaluated_epoch": epochs if evaluated_epoch is None else evaluated_epoch,
        "batch_size": batch_size,
        "augmentation": augmentation,
        "test_time_view": test_time_view,  # flip: every probability is the average over the image and its mirror image; dihedral: over its 8 rotations and mirror images
        "dataset": {"name": dataset, "counts": counts, "issues": issues},
        "class_names": list(CLASS_NAMES),
        "gradcam_examples": gradcam_examples,
        "seed": seed,
        "keras_backend": backend,
    }
