"""Sharpness-aware minimisation (forgery.sharpness): the step, its refusals, and that a resumed run keeps it."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from hydra.utils import instantiate

from forgery import sharpness
from forgery.config import ConfigError, validate
from tests.conftest import TINY_DEMO


def test_ascent_steps_have_length_rho_along_the_gradient() -> None:
    gradients = [np.array([[3.0, 0.0]], dtype="float32"), np.array([4.0], dtype="float32")]  # ||g|| = 5
    steps = [np.asarray(step) for step in sharpness.ascent_steps(gradients, 0.5)]
    np.testing.assert_allclose(steps[0], [[0.3, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(steps[1], [0.4], rtol=1e-6)
    zero = [np.asarray(step) for step in sharpness.ascent_steps([np.zeros(3, dtype="float32")], 0.5)]
    np.testing.assert_array_equal(zero[0], np.zeros(3))  # a flat point stays put, no division by zero


def _tiny_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(3, activation="tanh")(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="categorical_crossentropy")
    return model


def _gradient(model: keras.Model, x: np.ndarray, y: np.ndarray, weights: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    for variable, value in zip(model.trainable_weights, weights):
        variable.assign(value)
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    return [gradient.numpy() for gradient in tape.gradient(loss, model.trainable_weights)]


def test_a_step_applies_the_gradient_taken_at_the_perturbed_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, 16), 2)
    rho, rate = 0.3, 0.5
    model = _tiny_model(1)
    start = [weight.numpy().copy() for weight in model.trainable_weights]
    gradient = _gradient(model, x, y, start)
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in gradient))
    sharp = _gradient(model, x, y, [w + rho * g / norm for w, g in zip(start, gradient)])
    plain_step = [w - rate * g for w, g in zip(start, gradient)]

    model = _tiny_model(1)
    sharpness.enable(model, rho)
    model.train_on_batch(x, y)
    for weight, w, g, plain in zip(model.trainable_weights, start, sharp, plain_step):
        np.testing.assert_allclose(weight.numpy(), w - rate * g, atol=1e-6)  # from w itself, not from the perturbed weights
        assert not np.allclose(weight.numpy(), plain, atol=1e-5)  # and not plain gradient descent


def test_sam_is_refused_off_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_model(0)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ConfigError, match=r"^sam.rho needs the tensorflow backend, this run uses jax"):
        sharpness.enable(model, 0.05)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sam.rho=-0.1"], r"^sam.rho must be at least 0"),
        (["sam.rho=0.05", "precision=mixed_float16"], r"^sam.rho does not combine with precision=mixed_float16"),
    ],
)
def test_sam_settings_are_checked(compose_train, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides))
    validate(compose_train("sam.rho=0.05", "precision=mixed_bfloat16"))  # bfloat16 scales no loss


def test_a_resumed_run_trains_with_sam_again(compose_train, tmp_path: Path) -> None:
    from forgery import checkpoints, train

    cfg = compose_train(*TINY_DEMO, "sam.rho=0.05")
    built = train.build_model(cfg, len(instantiate(cfg.data).train))
    assert built.train_step.__func__ is sharpness.sharpness_aware_step
    built.optimizer.build(built.trainable_variables)  # as after a trained epoch
    checkpoints.save(tmp_path, built, checkpoints.CheckpointState(epoch=1))
    resumed = train.restored_model(tmp_path, cfg, steps_per_execution=4)
    assert resumed.train_step.__func__ is sharpness.sharpness_aware_step and resumed.steps_per_execution == 4
    plain = train.restored_model(tmp_path, compose_train(*TINY_DEMO), steps_per_execution=4)
    assert "train_step" not in vars(plain)  # sam.rho=0: Keras's own step
