"""The optimizer factory behind `conf/optimizer/*.yaml`: one name and one learning rate per option."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from forgery.config import ConfigError

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
    optimizer = OPTIMIZERS[name]
    # Keras takes **kwargs and refuses unknown ones in a multi-line error; `+optimizer.<typo>` gets one line instead.
    accepted = {key for key, parameter in inspect.signature(optimizer).parameters.items() if parameter.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(options) - accepted)
    if unknown:
        takes = ", ".join(sorted(accepted - {"learning_rate", "name"}))
        raise ConfigError(f"optimizer.{unknown[0]} is not an option of keras.optimizers.{optimizer.__name__}; it takes {takes}")
    return optimizer(learning_rate=lr, **options)
