"""Sharpness-aware minimisation (forgery.sharpness): the step, its refusals, and that a resumed run keeps it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hydra.utils import instantiate

from forgery import sharpness
from forgery.config import ConfigError, validate
from tests.conftest import PROJECT_ROOT, TINY_DEMO
from tests.sharpness_probe import dropout_steps, sam_step

PROBE = Path(__file__).with_name("sharpness_probe.py")


def test_ascent_steps_have_length_rho_along_the_gradient() -> None:
    gradients = [np.array([[3.0, 0.0]], dtype="float32"), np.array([4.0], dtype="float32")]  # ||g|| = 5
    steps = [np.asarray(step) for step in sharpness.ascent_steps(gradients, 0.5)]
    np.testing.assert_allclose(steps[0], [[0.3, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(steps[1], [0.4], rtol=1e-6)
    zero = [np.asarray(step) for step in sharpness.ascent_steps([np.zeros(3, dtype="float32")], 0.5)]
    np.testing.assert_array_equal(zero[0], np.zeros(3))  # a flat point stays put, no division by zero


def regression_gradient(x: np.ndarray, y: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean cross-entropy's gradient for softmax regression, by hand: x^T (p - y) / N and mean(p - y)."""
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return x.T @ (p - y) / len(x), (p - y).mean(axis=0)


def check_sam_step(step: dict[str, np.ndarray], rho: float, rate: float) -> None:
    """`step`'s weights are w - rate * g(w + rho g(w) / ||g(w)||), not w - rate * g(w)."""
    x, y, kernel, bias = (step[key].astype("float64") for key in ("x", "y", "kernel", "bias"))
    g_kernel, g_bias = regression_gradient(x, y, kernel, bias)
    norm = np.sqrt(np.sum(g_kernel**2) + np.sum(g_bias**2))
    sharp_kernel, sharp_bias = regression_gradient(x, y, kernel + rho * g_kernel / norm, bias + rho * g_bias / norm)
    np.testing.assert_allclose(step["after_kernel"], kernel - rate * sharp_kernel, atol=1e-6)  # applied to w, not to w + the ascent
    np.testing.assert_allclose(step["after_bias"], bias - rate * sharp_bias, atol=1e-6)
    assert not np.allclose(step["after_kernel"], kernel - rate * g_kernel, atol=1e-4)  # and not plain gradient descent


def test_a_step_applies_the_gradient_taken_at_the_perturbed_weights() -> None:
    check_sam_step(sam_step(0.3, 0.5), 0.3, 0.5)


def test_both_passes_draw_the_same_dropout_masks() -> None:
    after = dropout_steps(0.5)
    np.testing.assert_allclose(after["sam_kernel"], after["plain_kernel"], atol=1e-6)


def test_a_step_on_jax_is_the_same_sam_step(tmp_path: Path) -> None:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([sys.executable, str(PROBE), str(tmp_path / "step.npz"), "0.3", "0.5"], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    step = dict(np.load(tmp_path / "step.npz"))
    assert str(step["backend"]) == "jax"
    check_sam_step(step, 0.3, 0.5)
    np.testing.assert_allclose(step["dropout_sam_kernel"], step["dropout_plain_kernel"], atol=1e-6)  # one set of dropout masks


def test_sam_is_refused_on_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ConfigError, match=r"^sam.rho needs the tensorflow or jax backend, this run uses torch"):
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
