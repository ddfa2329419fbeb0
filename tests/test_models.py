"""Model factories: the seed architecture's exact size, the larger option, and the model card's summary."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from forgery.augment import build_augmentation
from forgery.models import architecture_summary, cnn, last_conv_layer


def seed_model() -> keras.Model:
    return cnn("small", [32, 64, 128], augmentation=build_augmentation("light", "horizontal", 0.1, 0.1))


def test_small_is_the_seed_architecture_with_94402_parameters() -> None:
    model = seed_model()
    assert model.count_params() == 94_402
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == [
        "Rescaling", "Sequential",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "GlobalAveragePooling2D", "Dropout", "Dense",
    ]  # fmt: skip
    assert [type(layer).__name__ for layer in model.layers[2].layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]


def test_wide_is_larger() -> None:
    assert cnn("wide", [64, 128, 256], padding="same").count_params() == 373_122


def test_model_maps_raw_pixels_to_probabilities() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    probabilities = seed_model().predict(pixels, verbose=0)
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_augmentation_is_inert_at_inference() -> None:
    model = seed_model()
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(pixels, training=False), model(pixels, training=False))


def test_no_augmentation_when_every_option_is_off() -> None:
    assert build_augmentation("none", None, 0.0, 0.0) is None


def test_architecture_summary_reads_like_the_seed() -> None:
    summary = architecture_summary(seed_model())
    assert summary.startswith("Rescaling -> Augmentation(RandomFlip, RandomRotation, RandomZoom) -> Conv2D(32, 3x3, relu)")
    assert summary.endswith("GlobalAveragePooling2D -> Dropout(0.5) -> Dense(2, softmax)")


def test_last_conv_layer_is_found_and_missing_one_is_an_error() -> None:
    assert last_conv_layer(seed_model()).name == "conv3"
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no top-level Conv2D"):
        last_conv_layer(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
