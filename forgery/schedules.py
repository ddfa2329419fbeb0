"""Learning-rate schedules behind `conf/schedule/*.yaml`: each maps (peak rate, steps) to what Keras optimizers take."""

from __future__ import annotations

import keras


def constant(lr: float, steps_per_epoch: int, epochs: int) -> float:
    """The same rate for every step (the seed notebook's)."""
    return lr


def cosine(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0, final_fraction: float = 0.0) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to `lr` over `warmup_epochs`, then cosine decay to `final_fraction * lr` at the last step.

    Steps are the optimizer's: under mixed_float16 a step skipped for overflowing gradients does not count,
    so the decay then ends that many steps short of its last value.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(min(warmup_epochs, epochs) * steps_per_epoch)), total - 1)  # capped first: 1e308 epochs overflow an int
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(1, total - 1 - warmup),  # steps count from 0, so the last one, total - 1, ends the decay
        alpha=final_fraction,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
