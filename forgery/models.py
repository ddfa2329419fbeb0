"""Model factories: each returns a `keras.Model` that maps raw 0-255 RGB pixels to (FAKE, REAL) probabilities."""

from __future__ import annotations

import keras

from forgery.data import CLASS_NAMES, IMAGE_SIZE

# Layer names the rest of the project relies on (Grad-CAM, the model card).
CLASSIFIER_LAYER = "classifier"


def cnn(
    name: str,
    filters: list[int],
    width: float = 1.0,
    padding: str = "valid",
    dropout: float = 0.5,
    augmentation: keras.Layer | None = None,
) -> keras.Model:
    """Rescaling -> augmentation -> [Conv2D + BatchNorm + MaxPool] per filter count -> GAP -> Dropout -> Dense softmax.

    `width` scales every filter count (rounded, at least 1), so a sweep can tune capacity with one number.
    """
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    if augmentation is not None:
        x = augmentation(x)  # random at training time only, so the saved model needs no preprocessing
    for index, count in enumerate(filters, start=1):
        x = keras.layers.Conv2D(max(1, round(count * width)), 3, padding=padding, activation="relu", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"batchnorm{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"maxpool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name=CLASSIFIER_LAYER)(x)
    return keras.Model(inputs, outputs, name=name)


def last_conv_layer(model: keras.Model) -> keras.Layer:
    """The last top-level Conv2D layer: Grad-CAM's target."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no top-level Conv2D layer for Grad-CAM")
    return convs[-1]


def architecture_summary(model: keras.Model) -> str:
    """The layer chain in arrow form, e.g. 'Rescaling -> Augmentation(RandomFlip, ...) -> Conv2D(32) -> ...'."""
    parts: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Sequential):
            inner = ", ".join(type(sub).__name__ for sub in layer.layers)
            parts.append(f"Augmentation({inner})")
        elif isinstance(layer, keras.layers.Conv2D):
            parts.append(f"Conv2D({layer.filters}, {layer.kernel_size[0]}x{layer.kernel_size[1]}, {layer.activation.__name__})")
        elif isinstance(layer, keras.layers.Dense):
            parts.append(f"Dense({layer.units}, {layer.activation.__name__})")
        elif isinstance(layer, keras.layers.Dropout):
            parts.append(f"Dropout({layer.rate:g})")
        else:
            parts.append(type(layer).__name__)
    return " -> ".join(parts)
