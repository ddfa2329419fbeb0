"""Run under any Keras backend: one sharpness-aware step of softmax regression (a Dense layer, plain SGD),
written to an .npz with its data and starting weights, so a test can redo the step by hand.

Usage: python tests/sharpness_probe.py OUT.npz RHO RATE
"""

from __future__ import annotations

import sys

import numpy as np


def sam_step(rho: float, rate: float) -> dict[str, np.ndarray]:
    """Data, starting weights and the weights after one SAM step (rho) with SGD at `rate`."""
    import keras

    from forgery import sharpness

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=rate), loss="categorical_crossentropy")
    kernel, bias = (np.asarray(weight) for weight in model.get_weights())
    sharpness.enable(model, rho)
    model.train_on_batch(x, y)
    after_kernel, after_bias = model.get_weights()
    return {"x": x, "y": y, "kernel": kernel, "bias": bias, "after_kernel": after_kernel, "after_bias": after_bias, "backend": np.array(keras.backend.backend())}


def dropout_steps(rate: float) -> dict[str, np.ndarray]:
    """One plain step and one SAM step at rho 0 of the same dropout network from the same generator state:
    when SAM's second pass draws the first pass's dropout masks, the two steps are the same."""
    import keras

    from forgery import sharpness

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]
    after = {}
    for name, rho in (("plain", None), ("sam", 0.0)):
        keras.utils.set_random_seed(1)
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.5, seed=3)(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=rate), loss="categorical_crossentropy")
        if rho is not None:
            sharpness.enable(model, rho)
        model.train_on_batch(x, y)
        after[f"{name}_kernel"] = model.get_weights()[0]
    return after


if __name__ == "__main__":
    np.savez(sys.argv[1], **sam_step(float(sys.argv[2]), float(sys.argv[3])), **{f"dropout_{key}": value for key, value in dropout_steps(float(sys.argv[3])).items()})
