"""The optimizer factory behind `conf/optimizer/*.yaml`: one name and one learning rate per option."""

from __future__ import annotations

from typing import Any

import keras

# Config names -> Keras classes; a new option is one line here plus one YAML file.
OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
}


def make_optimizer(name: str, lr: float, **options: Any) -> keras.optimizers.Optimizer:
    """A Keras optimizer by config name, with learning rate `lr` and class-specific `options`."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=lr, **options)
