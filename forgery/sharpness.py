"""Sharpness-aware minimisation (SAM; Foret et al., 2021): each step descends with the gradient taken at
the worst nearby weights, which favours flat minima that hold up on images the network has not seen.

A SAM step is two passes over the batch: the gradient g at the weights w, then the gradient at
w + rho * g / ||g|| (the steepest rise within a ball of radius rho), which the optimizer applies to w
itself. The optimizer (its weight decay, moving average and schedule included) is unchanged; the
model keeps its class, so checkpoints, the logged model and Grad-CAM see a plain Keras model.
"""

from __future__ import annotations

import types
from typing import Any

import keras

from forgery.config import ConfigError

BACKENDS = ("tensorflow",)  # the step below is TensorFlow's GradientTape; JAX and PyTorch would each need their own


def enable(model: keras.Model, rho: float) -> None:
    """Make `model` (compiled) train with SAM at radius `rho`; ConfigError where it cannot."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise ConfigError(f"sam.rho needs the tensorflow backend, this run uses {backend}; set sam.rho=0 or KERAS_BACKEND=tensorflow")
    model.sam_rho = float(rho)
    # An instance attribute: Keras's fit calls self.train_step, and the model's class, hence its saved
    # file, stays Keras's own.
    model.train_step = types.MethodType(sharpness_aware_step, model)


def sharpness_aware_step(self: keras.Model, data: Any) -> dict[str, Any]:
    """Keras's TensorFlow train_step with SAM's ascent: same loss tracking and metrics (at the weights w)."""
    import tensorflow as tf
    from keras.src.trainers.data_adapters import data_adapter_utils

    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    weights = self.trainable_weights
    with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
    gradients = tape.gradient(loss, weights)
    ascent = ascent_steps(gradients, self.sam_rho)
    for weight, step in zip(weights, ascent, strict=True):
        weight.assign_add(step)
    with tf.GradientTape() as tape:
        perturbed_loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True), sample_weight=sample_weight, training=True)
    sharp_gradients = tape.gradient(perturbed_loss, weights)
    for weight, step in zip(weights, ascent, strict=True):
        weight.assign_sub(step)
    self.optimizer.apply_gradients(zip(sharp_gradients, weights, strict=True))
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def ascent_steps(gradients: list[Any], rho: float) -> list[Any]:
    """rho * g / ||g|| per weight, ||g|| the norm over all of them (zero where the gradient is zero)."""
    norm = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(gradient)) for gradient in gradients))
    scale = rho / (norm + 1e-12)
    return [gradient * scale for gradient in gradients]
