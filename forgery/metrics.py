"""The metrics a run tracks each epoch, as Keras objects a checkpoint can be reloaded with."""

from __future__ import annotations

from typing import Any

import keras

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


def custom_objects() -> dict[str, type]:
    """What Keras needs to load a checkpoint compiled with these metrics."""
    return {f"{PACKAGE}>{LabelAUC.__name__}": LabelAUC}
