"""Robustness: accuracy and ROC AUC on the test images after the everyday damage an image meets online.

Each corruption is a pure function of uint8 (N, 32, 32, 3) images that returns new images of the same
shape and dtype. A detector that leans on fragile pixel-level traces will lose most under JPEG
re-compression and blur, which are exactly what a shared picture goes through before an editor sees it.

The last row is no damage but a shortcut probe: CIFAKE's FAKE images are darker on average than its REAL
ones, a cue that needs no content (forgery.shortcuts). Each image's colour is shifted by the difference
between the two classes' average colours, towards the other class, so the cue points the wrong way while
every edge and texture stays as it was; what a model loses there is what it took from global colour.
"""

from __future__ import annotations

import io
from functools import partial
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from forgery.evaluate import headline_metrics

JPEG_QUALITIES = (90, 75, 50)  # 90: a careful re-save; 75: a typical web default; 50: a heavy social-media squeeze
BLUR_SIGMA = 1.0  # pixels; enough to wipe single-pixel texture, little enough to keep the scene readable
RESCALE_SIZE = 16  # down to half size and back, like a thumbnail blown up again
NOISE_SIGMA = 8.0  # on the 0-255 scale, about 3% of the range: visible sensor-like grain


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Each image saved as JPEG at `quality` in memory and decoded again (4:2:0 chroma, PIL's default)."""
    out = np.empty_like(images)
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out[index] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


def gaussian_blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Each image blurred with a Gaussian of `sigma` pixels over rows and columns, edges reflected."""
    smooth = ndimage.gaussian_filter(images.astype("float32"), sigma=(0, sigma, sigma, 0), mode="reflect")
    return np.clip(np.rint(smooth), 0, 255).astype("uint8")


def rescale(images: np.ndarray, size: int = RESCALE_SIZE) -> np.ndarray:
    """Each image resized bilinearly to size x size and back to its own size."""
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    for index, image in enumerate(images):
        small = Image.fromarray(image).resize((size, size), Image.BILINEAR)
        out[index] = np.asarray(small.resize((width, height), Image.BILINEAR))
    return out


def gaussian_noise(images: np.ndarray, seed: int, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Independent Gaussian noise of `sigma` (0-255 scale) added to every value, rounded and clipped to 0-255."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=images.shape)
    return np.clip(np.rint(images.astype("float64") + noise), 0, 255).astype("uint8")


def colour_swapped(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image shifted, channel by channel, by the difference between the other class's average colour and
    its own class's (averages over `images`), rounded and clipped: the classes' colours trade places.

    A shift changes no edge or texture. With one class only there is nothing to trade: the images come back as they are.
    """
    values = images.astype("float64")
    classes = np.unique(labels)
    if len(classes) == 2:
        first, second = (values[labels == label].mean(axis=(0, 1, 2)) for label in classes)
        values[labels == classes[0]] += second - first
        values[labels == classes[1]] += first - second
    return np.clip(np.rint(values), 0, 255).astype("uint8")


def corruptions(seed: int) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """Name -> (description, corruption), in the order reports list them; the noise is seeded by `seed`."""
    return {
        **{f"jpeg_q{quality}": (f"JPEG re-compression at quality {quality}", partial(jpeg, quality=quality)) for quality in JPEG_QUALITIES},
        f"blur_sigma{BLUR_SIGMA:g}": (f"Gaussian blur, sigma {BLUR_SIGMA:g} px", partial(gaussian_blur, sigma=BLUR_SIGMA)),
        f"rescale_{RESCALE_SIZE}px": (
            f"bilinear down-scaling to {RESCALE_SIZE}x{RESCALE_SIZE} and back up",
            partial(rescale, size=RESCALE_SIZE),
        ),
        f"noise_sigma{NOISE_SIGMA:g}": (
            f"additive Gaussian noise, sigma {NOISE_SIGMA:g} on the 0-255 scale, clipped",
            partial(gaussian_noise, seed=seed, sigma=NOISE_SIGMA),
        ),
    }


# Probes that need the labels: name -> (description, function of images and labels).
LABELLED_PROBES = {
    "colour_swapped": (
        "a shortcut probe, not damage: each class shifted to the other class's average colour, so global colour points the wrong way",
        colour_swapped,
    ),
}


def robustness_report(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray, seed: int
) -> dict[str, Any]:
    """Accuracy and ROC AUC of `predict` (images -> (N, 2) probabilities) on clean and on each corrupted copy."""
    clean = headline_metrics(labels, np.asarray(predict(images)))
    rows: list[dict[str, Any]] = [
        {"name": "clean", "description": "the test images as they are", "accuracy": clean["test_accuracy"], "roc_auc": clean["test_roc_auc"]}
    ]
    conditions = {name: (description, partial(_unlabelled, corrupt)) for name, (description, corrupt) in corruptions(seed).items()}
    for name, (description, corrupt) in {**conditions, **LABELLED_PROBES}.items():
        scores = headline_metrics(labels, np.asarray(predict(corrupt(images, labels))))
        rows.append(
            {
                "name": name,
                "description": description,
                "accuracy": scores["test_accuracy"],
                "roc_auc": scores["test_roc_auc"],
                # Positive = worse than clean, so the biggest number is the biggest weakness.
                "accuracy_drop": clean["test_accuracy"] - scores["test_accuracy"],
                "roc_auc_drop": clean["test_roc_auc"] - scores["test_roc_auc"],
            }
        )
    return {"images": int(len(labels)), "seed": seed, "corruptions": rows}


def _unlabelled(corrupt: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A corruption of images alone, called as the labelled probes are."""
    return corrupt(images)


def robustness_metrics(report: dict[str, Any]) -> dict[str, float]:
    """`robustness_report` as MLflow metrics: robust_<name>_accuracy and robust_<name>_roc_auc per row."""
    return {
        f"robust_{row['name']}_{measure}": row[measure]
        for row in report["corruptions"]
        if row["name"] != "clean"  # clean is the unchanged subset: the logged test metrics when it is the whole test split
        for measure in ("accuracy", "roc_auc")
    }
