"""Training-time augmentation as a Keras block that is active in `fit` and a no-op at inference."""

from __future__ import annotations

import keras


def build_augmentation(
    name: str,
    flip: str | None = "horizontal",
    rotation: float = 0.0,
    zoom: float = 0.0,
    translation: float = 0.0,
    contrast: float = 0.0,
) -> keras.Sequential | None:
    """Random flip/rotation/zoom/shift/contrast layers, or None when every option is off."""
    layers: list[keras.layers.Layer] = []
    if flip:
        layers.append(keras.layers.RandomFlip(flip))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation))
    if contrast:
        # RandomContrast expects 0-255 pixels by default; the block runs after Rescaling, on 0-1.
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0.0, 1.0)))
    if not layers:
        return None
    return keras.Sequential(layers, name=f"augmentation_{name}")
