"""Checks on the composed config that fail fast, before data or models are built, with one line naming the key."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(Exception):
    """A wrong config value; the message is one line that names the key."""


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first missing, mistyped or impossible value in a training config."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (data=cifake reads the Kaggle folder or zip from data.root=/path/to/cifake)" if "data.root" in missing else ""
        raise ConfigError(f"{missing[0]} is required but not set{hint}")
    _positive_int(cfg, "epochs")
    _positive_int(cfg, "batch_size")
    _integer(cfg, "seed")
    _positive_number(cfg, "optimizer.lr")
    fraction = _number(cfg, "data.val_fraction")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    experiment = OmegaConf.select(cfg, "tracking.experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment must be a non-empty name, got {experiment!r}")
    verbose = OmegaConf.select(cfg, "verbose")
    if verbose not in ("auto", 0, 1, 2):
        raise ConfigError(f"verbose must be auto, 0, 1 or 2, got {verbose!r}")


def _value(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key; a missing key is an error of its own."""
    value = OmegaConf.select(cfg, key, default=KeyError)
    if value is KeyError:
        raise ConfigError(f"{key} is missing from the config")
    return value


def _number(cfg: DictConfig, key: str) -> float:
    """A real number (bools excluded: YAML's true is not a learning rate)."""
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


def _positive_number(cfg: DictConfig, key: str) -> float:
    """A number above zero."""
    value = _number(cfg, key)
    if not value > 0:
        raise ConfigError(f"{key} must be greater than 0, got {value:g}")
    return value


def _integer(cfg: DictConfig, key: str) -> int:
    """A whole number."""
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return value


def _positive_int(cfg: DictConfig, key: str) -> int:
    """A whole number of at least 1."""
    value = _integer(cfg, key)
    if value < 1:
        raise ConfigError(f"{key} must be at least 1, got {value}")
    return value
