"""Sharpness-aware minimisation (SAM; Foret et al., 2021): each step descends with the gradient taken at
the worst nearby weights, which favours flat minima that hold up on images the network has not seen.

A SAM step is two passes over the batch: the gradient g at the weights w, then the gradient at
w + rho * g / ||g|| (the steepest rise within a ball of radius rho), which the optimizer applies to w
itself. Both passes see the same augmented batch and dropout masks: the random generators are rewound
between them. The optimizer (its weight decay, moving average and schedule included) is unchanged; the
model keeps its class, so checkpoints, the logged model and Grad-CAM see a plain Keras model.
"""

from __future__ import annotations

import types
from typing import Any

import keras

from forgery.config import ConfigError
from forgery.models import is_random_state

BACKENDS = ("tensorflow", "jax")  # each has its own step below; PyTorch's would need a third


def enable(model: keras.Model, rho: float) -> None:
    """Make `model` (compiled) train with SAM at radius `rho`; ConfigError where it cannot."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise ConfigError(f"sam.rho needs the tensorflow or jax backend, this run uses {backend}; set sam.rho=0 or KERAS_BACKEND=tensorflow")
    model.sam_rho = float(rho)
    # An instance attribute: Keras's fit (and forgery.jax_loop's scan) call self.train_step, and the
    # model's class, hence its saved file, stays Keras's own.
    step = sharpness_aware_step if backend == "tensorflow" else stateless_sharpness_aware_step
    model.train_step = types.MethodType(step, model)


def sharpness_aware_step(self: keras.Model, data: Any) -> dict[str, Any]:
    """Keras's TensorFlow train_step with SAM's ascent: same loss tracking and metrics (at the weights w)."""
    import tensorflow as tf
    from keras.src.trainers.data_adapters import data_adapter_utils

    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    weights = self.trainable_weights
    generators = [variable for variable in self.variables if is_random_state(variable)]
    drawn_from = [tf.identity(state) for state in generators]
    with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
    gradients = tape.gradient(loss, weights)
    ascent = ascent_steps(gradients, self.sam_rho)
    for weight, step in zip(weights, ascent, strict=True):
        weight.assign_add(step)
    for state, start in zip(generators, drawn_from, strict=True):
        state.assign(start)  # the second pass sees the batch as the first did: the same augmentation and dropout
    with tf.GradientTape() as tape:
        perturbed_loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True), sample_weight=sample_weight, training=True)
    sharp_gradients = tape.gradient(perturbed_loss, weights)
    for weight, step in zip(weights, ascent, strict=True):
        weight.assign_sub(step)
    self.optimizer.apply_gradients(zip(sharp_gradients, weights, strict=True))
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def stateless_sharpness_aware_step(self: keras.Model, state: tuple[Any, ...], data: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """Keras's JAX train_step (pure: state in, state out) with SAM's ascent; BatchNorm's statistics see both passes, as on TensorFlow."""
    import jax
    from keras.src.trainers.data_adapters import data_adapter_utils

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    loss_and_gradients = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
    (_, (loss, y_pred, non_trainable, metrics_variables)), gradients = loss_and_gradients(
        trainable, non_trainable, metrics_variables, x, y, sample_weight, training=True, optimizer_variables=optimizer_variables
    )
    perturbed = [weight + step for weight, step in zip(trainable, ascent_steps(gradients, self.sam_rho), strict=True)]
    # BatchNorm's statistics as the first pass left them, the random generators as it found them: the second
    # pass sees the batch with the same augmentation and dropout.
    is_random = [is_random_state(variable) for variable in self.non_trainable_variables]
    second = [start if random else updated for start, updated, random in zip(state[1], non_trainable, is_random, strict=True)]
    (_, (_, _, non_trainable, _)), sharp_gradients = loss_and_gradients(
        perturbed, second, metrics_variables, x, y, sample_weight, training=True, optimizer_variables=optimizer_variables
    )
    trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, sharp_gradients, trainable)
    logs, metrics_variables = self._update_metrics_variables(metrics_variables, loss, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def ascent_steps(gradients: list[Any], rho: float) -> list[Any]:
    """rho * g / ||g|| per weight, ||g|| the norm over all of them (zero where the gradient is zero)."""
    norm = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(gradient)) for gradient in gradients))
    scale = rho / (norm + 1e-12)
    return [gradient * scale for gradient in gradients]
