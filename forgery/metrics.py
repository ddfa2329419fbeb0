"""The metrics a run tracks each epoch, as Keras objects a checkpoint can be reloaded with."""

from __future__ import annotations

from typing import Any

import keras

PACKAGE = "forgery"


# Scores are compared on their logit, clipped to this range: float32 resolves probabilities to about 1e-7
# from 0 or 1, where the logit is about 16, so nothing finer is lost.
LOGIT_RANGE = 16.0


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelAUC(keras.metrics.AUC):
    """Keras's ROC AUC scored against each target's top class, its label.

    A distilled target (forgery.distill) is soft, such as [0.62, 0.38]; Keras's own AUC counts every
    non-zero share as a positive, so it would score that image as both classes.

    With `logit_spaced`, each score is mapped to its logit, scaled from [-16, 16] onto [0, 1], before
    Keras's evenly spaced cut-offs see it: the cut-offs are then evenly spaced in logit. Keras's own
    spacing (500 cut-offs, 0.002 apart) puts every score above 0.998 in one bucket, and a confident
    network scores most images there: on such outputs it read 0.9949 where the exact ROC AUC is 0.9973.
    The ROC AUC is unchanged by a monotone map of the scores, so only the bucketing improves (to within
    about 1e-4 of the exact value), and Keras keeps its fast path for evenly spaced cut-offs.
    """

    def __init__(self, *arguments: Any, logit_spaced: bool = False, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.logit_spaced = logit_spaced

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        classes = keras.ops.shape(y_true)[-1]
        labels = keras.ops.one_hot(keras.ops.argmax(y_true, axis=-1), classes, dtype=y_pred.dtype)
        if self.logit_spaced:
            y_pred = logit_position(y_pred)
        return super().update_state(labels, y_pred, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "logit_spaced": self.logit_spaced}


def logit_position(probabilities: Any) -> Any:
    """Each probability's logit, clipped to [-LOGIT_RANGE, LOGIT_RANGE] and scaled onto [0, 1]; monotone."""
    p = keras.ops.cast(probabilities, "float32")
    logits = keras.ops.log(keras.ops.maximum(p, 1e-30)) - keras.ops.log(keras.ops.maximum(1.0 - p, 1e-30))
    return (keras.ops.clip(logits, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2.0 * LOGIT_RANGE)


def custom_objects() -> dict[str, type]:
    """What Keras needs to load a checkpoint compiled with these metrics."""
    return {f"{PACKAGE}>{LabelAUC.__name__}": LabelAUC}
