"""The metrics a run tracks each epoch, as Keras objects a checkpoint can be reloaded with."""

from __future__ import annotations

from typing import Any

import keras

PACKAGE = "forgery"


# Scores are compared on each class's logit against the other (log p_c - log p_other), clipped to this
# range: a float32 softmax gives probabilities down to about 1e-38, so margins up to about 87 resolve.
LOGIT_RANGE = 88.0
# Cut-offs over [-LOGIT_RANGE, LOGIT_RANGE]: 0.0064 apart in logit. Measured on 5,000 scores against the exact
# ROC AUC: within 5e-6 for logit spreads of 1 to 30, 3e-5 for a spread of 0.5 and 1.5e-4 for 0.1, as a
# timid first epoch gives (2,751 cut-offs, 0.064 apart, were 10-40 times further off there). Keras's fast
# path for even cut-offs buckets the scores, so ten times the cut-offs cost no measurable training time.
LOGIT_THRESHOLDS = 27501


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelAUC(keras.metrics.AUC):
    """Keras's ROC AUC scored against each target's top class, its label.

    A distilled target (forgery.distill) is soft, such as [0.62, 0.38]; Keras's own AUC counts every
    non-zero share as a positive, so it would score that image as both classes.

    With `logit_spaced`, each class's score is mapped to its logit against the other class, log p_c -
    log p_other from both softmax columns, scaled from [-88, 88] onto [0, 1], before Keras's evenly spaced
    cut-offs see it: the cut-offs are then evenly spaced in logit. Keras's own spacing (500 cut-offs,
    0.002 apart) puts every score above 0.998 in one bucket, and a confident network scores most images
    there: on such outputs it read 0.9949 where the exact ROC AUC is 0.9973. Both columns are needed
    because float32 rounds a probability near 1 to exactly 1 (a logit margin past about 16.6), while its
    partner near 0 still resolves. The ROC AUC is unchanged by a monotone map of the scores, so only the
    bucketing improves (see LOGIT_THRESHOLDS for how close it comes), and Keras keeps its fast path for
    evenly spaced cut-offs; give it LOGIT_THRESHOLDS cut-offs.
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
    """Each of two columns' logit against the other, clipped to [-LOGIT_RANGE, LOGIT_RANGE] and scaled onto [0, 1]; monotone."""
    logs = keras.ops.log(keras.ops.maximum(keras.ops.cast(probabilities, "float32"), 1e-45))  # float32's smallest above 0
    logits = logs - keras.ops.flip(logs, axis=-1)
    return (keras.ops.clip(logits, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2.0 * LOGIT_RANGE)


def custom_objects() -> dict[str, type]:
    """What Keras needs to load a checkpoint compiled with these metrics."""
    return {f"{PACKAGE}>{LabelAUC.__name__}": LabelAUC}
