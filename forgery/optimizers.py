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
        raise ConfigError(f"optimizer.name must be one of {', '.join(sorted(OPTIMIZERS))}, got {name!r}")
    optimizer = OPTIMIZERS[name]
    if "learning_rate" in options:  # Keras's own name for it; passed as well, Keras would get the rate twice
        raise ConfigError("optimizer.learning_rate: the rate is set with optimizer.lr (the schedule starts from it)")
    # Keras takes **kwargs and refuses unknown ones in a multi-line error; `+optimizer.<typo>` gets one line instead.
    parameters = inspect.signature(optimizer).parameters
    accepted = {key for key, parameter in parameters.items() if parameter.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(options) - accepted)
    if unknown:
        takes = ", ".join(sorted(accepted - {"learning_rate", "name"}))
        raise ConfigError(f"optimizer.{unknown[0]} is not an option of keras.optimizers.{optimizer.__name__}; it takes {takes}")
    for key, value in options.items():  # an option whose default is a number takes a number (Keras fails late, in a traceback)
        default = parameters[key].default
        if _is_number(default) and not _is_number(value):
            raise ConfigError(f"optimizer.{key} must be a number, got {value!r}")
        if isinstance(default, float) and _is_number(value):  # momentum=0 read as a whole number: Keras refuses it as "not between 0 and 1"
            options[key] = value = float(value)
        # Keras takes these as given: a clip at a negative size, or 0 steps (read as none), train without a word.
        if key in POSITIVE_OPTIONS and value is not None and not (_is_number(value) and value > 0):
            raise ConfigError(f"optimizer.{key} must be a number above 0 (or null for none), got {value!r}")
        if key == "gradient_accumulation_steps" and value is not None and not (_is_number(value) and float(value).is_integer() and value >= 2):
            raise ConfigError(f"optimizer.gradient_accumulation_steps must be a whole number of at least 2 (or null for none), got {value!r}")
    if _is_number(lr):  # Hydra reads optimizer.lr=1 as a whole number, which Keras refuses (after the data has loaded)
        lr = float(lr)
    try:
        return optimizer(learning_rate=lr, **options)
    except ValueError as error:  # Keras's own refusals (two clips at once, say), in one line
        raise ConfigError(f"optimizer: {str(error).splitlines()[0]}") from None


POSITIVE_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
