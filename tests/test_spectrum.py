"""The frequency view: the DCT it computes, its refusals, and the model branch that reads it."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from forgery.models import load, resnet
from forgery.spectrum import LogSpectrum, dct_matrix


def direct_dct2(image: np.ndarray) -> np.ndarray:
    """The orthonormal 2-D DCT-II of one (rows, columns) array, summed term by term from its definition."""
    rows, columns = image.shape
    out = np.zeros_like(image, dtype="float64")
    for u in range(rows):
        for v in range(columns):
            total = sum(
                image[r, c] * math.cos(math.pi * (2 * r + 1) * u / (2 * rows)) * math.cos(math.pi * (2 * c + 1) * v / (2 * columns))
                for r in range(rows)
                for c in range(columns)
            )
            scale_u = math.sqrt((1 if u == 0 else 2) / rows)
            scale_v = math.sqrt((1 if v == 0 else 2) / columns)
            out[u, v] = scale_u * scale_v * total
    return out


def test_the_dct_matrix_is_orthonormal() -> None:
    matrix = dct_matrix(32)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(32), atol=1e-5)


def test_log_spectrum_is_the_log_magnitude_of_each_channels_dct() -> None:
    images = np.random.default_rng(0).random((2, 6, 5, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(LogSpectrum(floor=1e-3)(images))
    assert got.shape == images.shape
    for index in range(2):
        for channel in range(3):
            expected = np.log(np.abs(direct_dct2(images[index, :, :, channel])) + 1e-3)
            np.testing.assert_allclose(got[index, :, :, channel], expected, atol=1e-4)


def test_a_flat_image_has_all_its_energy_at_frequency_zero() -> None:
    flat = np.full((1, 8, 8, 1), 0.5, dtype="float32")
    spectrum = keras.ops.convert_to_numpy(LogSpectrum(floor=1e-3)(flat))[0, :, :, 0]
    assert spectrum[0, 0] == pytest.approx(math.log(0.5 * 8 + 1e-3), abs=1e-5)  # orthonormal: DC = mean * sqrt(rows * columns)
    np.testing.assert_allclose(np.delete(spectrum.ravel(), 0), math.log(1e-3), atol=1e-3)


@pytest.mark.parametrize("floor", [0.0, -1.0])
def test_a_floor_that_is_not_above_zero_is_refused(floor: float) -> None:
    with pytest.raises(ValueError, match="LogSpectrum floor must be above 0"):
        LogSpectrum(floor=floor)


def test_negative_spectrum_units_are_refused() -> None:
    with pytest.raises(ValueError, match="spectrum_units must be 0"):
        resnet("spectral", [4, 8], 1, spectrum_units=-1)


def test_the_branch_joins_the_pooled_features_and_survives_a_save(tmp_path) -> None:
    plain = resnet("plain", [4, 8], 1, highpass=True)
    spectral = resnet("spectral", [4, 8], 1, highpass=True, spectrum_units=5)
    # 3,072 log magnitudes: BatchNorm (4 each) and a dense layer to 5 units; the classifier reads 5 more features
    assert spectral.count_params() - plain.count_params() == 32 * 32 * 3 * 4 + (32 * 32 * 3 + 1) * 5 + 5 * 2
    assert spectral.get_layer("with_spectrum").output.shape == (None, 8 + 5)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    before = spectral.predict(images, verbose=0)
    spectral.save(tmp_path / "spectral.keras")
    np.testing.assert_allclose(load(tmp_path / "spectral.keras").predict(images, verbose=0), before, atol=1e-6)


def test_the_spectrum_changes_the_call() -> None:
    # zeroing the dense layer's weights must change predictions of a model whose branch is live
    model = resnet("spectral", [4, 8], 1, spectrum_units=4)
    dense = model.get_layer("spectrum_dense")
    rng = np.random.default_rng(2)
    dense.set_weights([rng.normal(size=w.shape).astype("float32") for w in dense.get_weights()])
    classifier = model.get_layer("classifier")
    classifier.set_weights([rng.normal(size=w.shape).astype("float32") for w in classifier.get_weights()])
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype("float32")
    before = model.predict(images, verbose=0)
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    assert np.abs(model.predict(images, verbose=0) - before).max() > 1e-3
