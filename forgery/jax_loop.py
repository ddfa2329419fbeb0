"""JAX backend: an epoch of training as a few compiled calls over images that stay on the device.

Keras's JAX `fit` calls one compiled step per batch from Python (its `steps_per_execution` loops in
Python too) and copies every batch from host memory. For a small CNN on 32x32 images that Python work
and copying, not arithmetic, sets the pace, above all on a GPU at small batches. Here instead:
- the training images (uint8) and targets are copied to the device once per run; each epoch sends only
  its order of images, one int32 per image;
- `lax.scan` runs `steps_per_execution` of Keras's own `train_step` per compiled call, picking each
  batch from the device arrays, so the loss, optimizer, metrics, mixed precision and random draws are
  `fit`'s, batch for batch;
- callbacks (progress bar, the NaN and Ctrl-C checks) run between calls, as with `steps_per_execution`
  in `fit`, and validation is Keras's `evaluate`.

While it trains, Keras's JAX trainer keeps the model's state outside the model; this module does the
same through the trainer's own helpers (`_symbolic_build`, `_get_jax_state`, `jax_state_sync`), and
tests/test_jax_loop.py holds its results to `fit`'s.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

# One compiled epoch function per model: jax.jit caches compilations per function object, so a new one each epoch would recompile.
_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_PLACED: dict[str, tuple[Any, np.ndarray, Placed]] = {}  # the arrays last placed, beside a weak reference to the host images and the targets


@dataclass(frozen=True)
class Placed:
    """Training images and targets already on the device."""

    images: Any  # jax.Array (N, 32, 32, 3), uint8 as loaded
    targets: Any  # jax.Array (N, classes), float32

    def __len__(self) -> int:
        return int(self.images.shape[0])


def place(images: np.ndarray, targets: np.ndarray) -> Placed:
    """The training arrays on the backend's default device (a GPU when JAX sees one).

    The arrays last placed are kept while the host images live, so calling again with the same images and
    equal targets (each epoch of a run, each round of the bench) copies nothing; other arrays replace them.
    """
    import jax

    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    targets = np.asarray(targets, dtype="float32")
    kept = _PLACED.get("last")
    if kept is not None and kept[0]() is images and np.array_equal(kept[1], targets):
        return kept[2]
    _PLACED.clear()  # the device memory of the arrays placed before goes back first
    placed = Placed(jax.device_put(images), jax.device_put(targets))
    # A copy: the caller's array changed in place afterwards would still compare equal to itself.
    _PLACED["last"] = (weakref.ref(images), targets.copy(), placed)
    return placed


def separate_buffers(model: Any) -> int:
    """Give each of the model's variables (weights, optimizer, metrics) a device buffer of its own; return how many were copied.

    With `use_ema`, Keras ends each `fit` by assigning the moving averages to the weights, so on JAX both
    variables then hold one buffer. The next compiled step donates its whole state, and JAX refuses a
    buffer donated twice ("Attempt to donate the same buffer twice"): `fit` itself fails from the second
    epoch on. Copying the shared ones before each epoch avoids it and changes no value.
    """
    import jax.numpy as jnp

    optimizer_variables = model.optimizer.variables if model.optimizer is not None else []
    seen: set[int] = set()
    copied = 0
    for variable in [*model.trainable_variables, *model.non_trainable_variables, *optimizer_variables, *model.metrics_variables]:
        value = variable.value
        buffer = value.unsafe_buffer_pointer() if hasattr(value, "unsafe_buffer_pointer") else id(value)
        if buffer in seen:
            variable.assign(jnp.array(value, copy=True))
            buffer = variable.value.unsafe_buffer_pointer() if hasattr(variable.value, "unsafe_buffer_pointer") else id(variable.value)
            copied += 1
        seen.add(buffer)
    return copied


def batch_plan(count: int, batch_size: int, steps_per_execution: int) -> list[tuple[int, int, int]]:
    """(first image, batches, batch size) of each compiled call over `count` images in order.

    Full batches go `steps_per_execution` to a call (the last call may hold fewer); a last partial batch,
    as `fit` makes one, gets a call of its own. Calls of one shape share one compilation.
    """
    if count <= 0 or batch_size <= 0 or steps_per_execution <= 0:
        raise ValueError(f"count, batch size and steps per execution must be positive, got {count}, {batch_size}, {steps_per_execution}")
    full, rest = divmod(count, batch_size)
    calls = [(first * batch_size, min(steps_per_execution, full - first), batch_size) for first in range(0, full, steps_per_execution)]
    if rest:
        calls.append((full * batch_size, 1, rest))
    return calls


def compiled_steps(model: Any) -> Any:
    """The jitted function that runs `batches` train steps of `model` over `order[first:]`; one per model."""
    if model in _COMPILED:
        return _COMPILED[model]
    import jax

    # Weakly: the cache's value must not keep its key alive, or every model trained in a process (each job of
    # an in-process sweep) would stay on the device with its optimizer state and compilations.
    model_ref = weakref.ref(model)

    def run(state: Any, images: Any, targets: Any, order: Any, first: Any, batches: int, size: int) -> tuple[Any, Any]:
        # One gather for the call's batches, then scan over them: cheaper than a small gather inside every step.
        picked = jax.lax.dynamic_slice_in_dim(order, first, batches * size)
        batch_images = images[picked].reshape((batches, size, *images.shape[1:]))
        batch_targets = targets[picked].reshape((batches, size, *targets.shape[1:]))

        def step(state: Any, batch: Any) -> tuple[Any, Any]:
            logs, state = model_ref().train_step(state, batch)  # traced while the model lives
            return state, logs

        state, logs = jax.lax.scan(step, state, (batch_images, batch_targets))
        return jax.tree.map(lambda values: values[-1], logs), state

    compiled = jax.jit(run, static_argnames=("batches", "size"), donate_argnums=0)
    _COMPILED[model] = compiled
    return compiled


def fit_epoch(
    model: Any,
    data: Placed,
    order: np.ndarray,
    batch_size: int,
    epoch: int,
    callbacks: list[Any],
    verbose: int,
    validation: tuple[np.ndarray, np.ndarray],
    validation_batch_size: int,
) -> dict[str, float]:
    """Train `model` one epoch over `data` in `order`, validate, and return the epoch's logs as `fit`'s history has them.

    The callbacks see what `fit(..., initial_epoch=epoch, epochs=epoch + 1)` shows them.
    """
    import jax
    import keras

    calls = batch_plan(len(order), batch_size, model.steps_per_execution)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=False, add_progbar=verbose != 0, verbose=verbose, epochs=epoch + 1, steps=sum(batches for _, batches, _ in calls), model=model
    )
    first_batch = np.asarray(order[:batch_size])
    model._symbolic_build(data_batch=(data.images[first_batch], data.targets[first_batch]))  # what fit builds first: optimizer and metric variables
    run = compiled_steps(model)
    device_order = jax.device_put(np.asarray(order, dtype="int32"))
    model.stop_training = False
    callback_list.on_train_begin()
    model.reset_metrics()
    callback_list.on_epoch_begin(epoch)
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True, optimizer_variables=True, metrics_variables=True, purge_model_variables=True)
    model._jax_state_synced = False
    logs: dict[str, Any] = {}
    steps_done = 0
    try:
        for first, batches, size in calls:
            callback_list.on_train_batch_begin(steps_done)
            logs, state = run(state, data.images, data.targets, device_order, np.int32(first), batches=batches, size=size)
            steps_done += batches
            # Callbacks that read the weights (a checkpoint mid-epoch) find them here, as in fit.
            model._jax_state = dict(zip(("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables"), state))
            model._jax_state_synced = False
            callback_list.on_train_batch_end(steps_done - 1, logs)
            if model.stop_training:
                break
    finally:
        model.jax_state_sync()
        model._jax_state = None
    epoch_logs = {name: float(value) for name, value in model._get_metrics_result_or_logs(logs).items()}
    val_x, val_y = validation
    val_logs = model.evaluate(val_x, val_y, batch_size=validation_batch_size, callbacks=callback_list, return_dict=True, verbose=0)
    epoch_logs.update({f"val_{name}": float(value) for name, value in val_logs.items()})
    callback_list.on_epoch_end(epoch, epoch_logs)
    if isinstance(model.optimizer, keras.optimizers.Optimizer):
        model.optimizer.finalize_variable_values(model.trainable_weights)  # as fit ends: with use_ema, the average becomes the weights
    callback_list.on_train_end(logs=epoch_logs)
    return epoch_logs
