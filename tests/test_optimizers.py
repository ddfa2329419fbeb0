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


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^unknown optimizer 'lamb'; choose from \['adam', 'adamw', 'sgd'\]$"):
        make_optimizer("lamb", 1e-3)


def test_an_added_keras_option_reaches_the_optimizer_and_a_misspelt_one_is_one_line() -> None:
    from forgery.config import ConfigError

    assert make_optimizer("sgd", 1e-3, clipnorm=1.0).clipnorm == pytest.approx(1.0)  # +optimizer.clipnorm=1.0
    with pytest.raises(ConfigError, match=r"^optimizer\.lrate is not an option of keras\.optimizers\.SGD; it takes .*\bmomentum\b"):
        make_optimizer("sgd", 1e-3, lrate=1.0)
