"""The frequency view of an image: the log magnitude of its 2-D discrete cosine transform, channel by channel.

A generator's upsampling and a camera's optics leave different amounts of energy at each spatial
frequency, over the whole image at once; a convolution sees a few pixels at a time, so a network
that is given the spectrum can weigh those global differences directly.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

PACKAGE = "forgery"


def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: row k holds frequency k, so `C @ x` transforms a column and `C.T` inverts it."""
    n = np.arange(size)
    matrix = np.sqrt(2.0 / size) * np.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
    matrix[0] /= math.sqrt(2.0)
    return matrix.astype("float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogSpectrum(keras.layers.Layer):
    """Maps (batch, rows, columns, channels) images to log(|2-D DCT| + floor), same shape, frequency (0, 0) first.

    `floor` keeps the coefficients that JPEG rounded to zero finite; the default sits at the rounding
    noise of 8-bit pixels on a 0-1 scale (1/255 over the square root of 12), which an orthonormal
    transform leaves at the same size.
    """

    def __init__(self, floor: float = 1e-3, **kwargs: Any) -> None:
        # The transform and the log run in float32 under mixed precision too; the pixels reach it rounded to
        # the policy's type, harmless in float16 but about one 8-bit grey level in bfloat16 (README).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if floor <= 0:
            raise ValueError(f"LogSpectrum floor must be above 0, got {floor}")
        self.floor = float(floor)

    def call(self, images: Any) -> Any:
        rows, columns = images.shape[1], images.shape[2]
        row_basis = ops.convert_to_tensor(dct_matrix(rows))
        column_basis = ops.convert_to_tensor(dct_matrix(columns))
        coefficients = ops.einsum("ur,brcz,vc->buvz", row_basis, ops.cast(images, "float32"), column_basis)
        return ops.log(ops.abs(coefficients) + self.floor)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "floor": self.floor}


def custom_objects() -> dict[str, type]:
    """What Keras needs to load a model holding this module's layer."""
    return {f"{PACKAGE}>{LogSpectrum.__name__}": LogSpectrum}
