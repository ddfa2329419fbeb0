"""Each optimizer option builds the Keras optimizer its YAML file describes; a wrong name is one clear error."""

from __future__ import annotations

import keras
import pytest
from hydra.utils import instantiate

from forgery.optimizers import make_optimizer


@pytest.mark.parametrize(
    ("option", "expected_class", "settings"),
    [
        ("adam", keras.optimizers.Adam, {}),
        ("adamw", keras.optimizers.AdamW, {"weight_decay": 1e-4}),
        ("sgd", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    ],
)
def test_each_option_builds_its_optimizer(compose_train, option: str, expected_class: type, settings: dict[str, object]) -> None:
    cfg = compose_train(f"optimizer={option}", "optimizer.lr=0.003", "optimizer.use_ema=true", "optimizer.ema_momentum=0.95")
    optimizer = instantiate(cfg.optimizer)
    assert type(optimizer) is expected_class  # AdamW subclasses Adam: the exact class matters
    assert float(optimizer.learning_rate) == pytest.approx(0.003)
    assert (optimizer.use_ema, optimizer.ema_momentum) == (True, pytest.approx(0.95))
    for key, value in settings.items():
        assert getattr(optimizer, key) == pytest.approx(value), key


def test_an_unknown_name_lists_the_choices(compose_train) -> None:
    from forgery.config import OPTIMIZER_NAMES, ConfigError, validate
    from forgery.optimizers import OPTIMIZERS

    with pytest.raises(ConfigError, match=r"^optimizer\.name must be one of adam, adamw, sgd, got 'lamb'$"):
        make_optimizer("lamb", 1e-3)
    assert OPTIMIZER_NAMES == tuple(sorted(OPTIMIZERS))  # the config's check knows every optimizer, and only those
    with pytest.raises(ConfigError, match=r"^optimizer\.name must be one of adam, adamw, sgd, got 'rmsprop'$"):
        validate(compose_train("optimizer.name=rmsprop"))  # refused before the data loads


def test_options_keras_would_refuse_late_are_one_line() -> None:
    from forgery.config import ConfigError

    with pytest.raises(ConfigError, match=r"^optimizer\.learning_rate: the rate is set with optimizer\.lr"):
        make_optimizer("adam", 1e-3, learning_rate=0.1)  # +optimizer.learning_rate=0.1: Keras would get it twice
    with pytest.raises(ConfigError, match=r"^optimizer\.epsilon must be a number, got 'abc'$"):
        make_optimizer("adam", 1e-3, epsilon="abc")
    assert make_optimizer("adam", 1e-3, epsilon=1e-6).epsilon == pytest.approx(1e-6)
    for key, value in (("clipnorm", -1.0), ("clipvalue", 0), ("global_clipnorm", "x")):
        with pytest.raises(ConfigError, match=rf"^optimizer\.{key} must be a number above 0 \(or null for none\), got {value!r}$"):
            make_optimizer("sgd", 1e-3, **{key: value})
    for steps in (0, 1, 2.5, float("inf"), float("nan")):  # Keras reads 0 as none
        with pytest.raises(ConfigError, match=r"^optimizer\.gradient_accumulation_steps must be a whole number of at least 2"):
            make_optimizer("sgd", 1e-3, gradient_accumulation_steps=steps)
    assert make_optimizer("sgd", 1e-3, gradient_accumulation_steps=4, clipnorm=1.0).gradient_accumulation_steps == 4
    with pytest.raises(ConfigError, match=r"^optimizer: Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set"):
        make_optimizer("sgd", 1e-3, clipnorm=1.0, clipvalue=0.5)


def test_the_model_card_names_the_optimizer_under_mixed_precision() -> None:
    from types import SimpleNamespace

    import keras

    from forgery.train import training_optimizer

    wrapped = keras.optimizers.LossScaleOptimizer(make_optimizer("sgd", 1e-3))
    assert type(training_optimizer(SimpleNamespace(optimizer=wrapped))).__name__ == "SGD"
    assert type(training_optimizer(SimpleNamespace(optimizer=make_optimizer("adamw", 1e-3)))).__name__ == "AdamW"


def test_an_added_keras_option_reaches_the_optimizer_and_a_misspelt_one_is_one_line() -> None:
    from forgery.config import ConfigError

    assert make_optimizer("sgd", 1e-3, clipnorm=1.0).clipnorm == pytest.approx(1.0)  # +optimizer.clipnorm=1.0
    with pytest.raises(ConfigError, match=r"^optimizer\.lrate is not an option of keras\.optimizers\.SGD; it takes .*\bmomentum\b"):
        make_optimizer("sgd", 1e-3, lrate=1.0)


def test_whole_numbers_where_keras_wants_a_float_are_taken_as_numbers(compose_train) -> None:
    # Hydra reads optimizer.lr=1 and optimizer.momentum=0 as ints; Keras refused both, the rate only once the data had loaded.
    cfg = compose_train("optimizer=sgd", "optimizer.lr=1", "optimizer.momentum=0")
    rate = instantiate(cfg.schedule, lr=cfg.optimizer.lr, steps_per_epoch=10, epochs=2)
    optimizer = instantiate(cfg.optimizer, lr=rate)
    assert (float(optimizer.learning_rate), optimizer.momentum) == (1.0, 0.0)
    assert float(make_optimizer("adam", 2).learning_rate) == 2.0
    assert make_optimizer("sgd", 1e-3, momentum=1).momentum == 1.0
