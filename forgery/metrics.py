"""The metrics a run tracks each epoch, as Keras objects a checkpoint can be reloaded with."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

PACKAGE = "forgery"


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelAUC(keras.metrics.AUC):
    """Keras's ROC AUC scored against each target's top class, its label.

    A distilled target (forgery.distill) is soft, such as [0.62, 0.38]; Keras's own AUC counts every
    non-zero share as a positive, so it would score that image as both classes.
    """

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        classes = keras.ops.shape(y_true)[-1]
        labels = keras.ops.one_hot(keras.ops.argmax(y_true, axis=-1), classes, dtype=y_pred.dtype)
        return super().update_state(labels, y_pred, sample_weight)


def auc_thresholds(count: int = 498, logit_range: float = 16.0) -> list[float]:
    """Score cut-offs for the bucketed ROC AUC, evenly spaced in logit rather than in probability.

    Keras's even spacing (500 cut-offs: 0.002 apart) puts every score above 0.998 in one bucket, and a
    confident network scores most images there: on such outputs its AUC read 0.9949 where the exact value
    is 0.9973. Spaced by logit from -16 to 16 (Keras adds 0 and 1), the buckets follow the scores into
    the tails, and the same 500 cut-offs agree with the exact ROC AUC to about 1e-5.
    """
    logits = np.linspace(-logit_range, logit_range, count)
    return [float(value) for value in 1.0 / (1.0 + np.exp(-logits))]


def custom_objects() -> dict[str, type]:
    """What Keras needs to load a checkpoint compiled with these metrics."""
    return {f"{PACKAGE}>{LabelAUC.__name__}": LabelAUC}
