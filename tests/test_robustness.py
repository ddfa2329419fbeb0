"""Each corruption damages images the way its name says, and the report scores a predictor on each."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from forgery.robustness import (
    corruptions,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    rescale,
    robustness_metrics,
    robustness_report,
)

EXPECTED_ORDER = ["clean", "jpeg_q90", "jpeg_q75", "jpeg_q50", "blur_sigma1", "rescale_16px", "noise_sigma8", "colour_swapped"]


def textured_images(count: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with fine grain on top: something like a photo, with high frequencies to lose."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:32, 0:32]
    images = np.empty((count, 32, 32, 3))
    for index in range(count):
        for channel in range(3):
            a, b, c = rng.uniform(-3, 3, 3)
            images[index, :, :, channel] = 128 + 60 * np.sin(a * rows / 32 + b * columns / 32 + c)
    images += rng.normal(0, 20, images.shape)
    return np.clip(images, 0, 255).astype("uint8")


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels: large for grain, small for smooth images."""
    values = images.astype("float64")
    return float((np.diff(values, axis=1) ** 2).mean() + (np.diff(values, axis=2) ** 2).mean())


def mean_abs_change(before: np.ndarray, after: np.ndarray) -> float:
    return float(np.abs(before.astype("float64") - after.astype("float64")).mean())


@pytest.mark.parametrize("name", EXPECTED_ORDER[1:-1])
def test_every_corruption_keeps_shape_and_dtype_and_changes_the_images(name: str) -> None:
    images = textured_images(4)
    _, corrupt = corruptions(seed=0)[name]
    out = corrupt(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert mean_abs_change(images, out) > 1.0
    np.testing.assert_array_equal(images, textured_images(4))  # the input is not modified in place


def test_the_colour_swap_trades_the_classes_average_colours_and_keeps_every_texture() -> None:
    """A brightness cue that separates the classes completely points the wrong way once the colours trade
    places, while each image keeps its pattern exactly (a shift, clipped); one class alone is left as it is."""
    from forgery.robustness import colour_swapped

    images = textured_images(20)
    darker = (images[:10].astype("float64") * 0.6).astype("uint8")  # "FAKE": darker, like CIFAKE's
    batch = np.concatenate([darker, images[10:]])
    labels = np.array([0] * 10 + [1] * 10)
    copy = batch.copy()
    swapped = colour_swapped(batch, labels)
    np.testing.assert_array_equal(batch, copy)  # the input is left alone
    before = batch.astype("float64").mean(axis=(1, 2))
    after = swapped.astype("float64").mean(axis=(1, 2))
    # each class's average colour is now the other's (up to the clipping at 0 and 255)
    np.testing.assert_allclose(after[labels == 0].mean(axis=0), before[labels == 1].mean(axis=0), atol=3.0)
    np.testing.assert_allclose(after[labels == 1].mean(axis=0), before[labels == 0].mean(axis=0), atol=3.0)
    brightness_before, brightness_after = before.mean(axis=1), after.mean(axis=1)
    assert brightness_before[:10].max() < brightness_before[10:].min()  # darker = class 0, before ...
    assert brightness_after[:10].mean() > brightness_after[10:].mean()  # ... and the other way after
    for index in range(20):  # textures stay: away from the clipped ends, every pixel moved by the same amount
        inside = (swapped[index] > 0) & (swapped[index] < 255)
        moved = swapped[index].astype(int) - batch[index].astype(int)
        for channel in range(3):
            assert np.ptp(moved[..., channel][inside[..., channel]]) <= 1  # rounding only
    np.testing.assert_array_equal(colour_swapped(batch[:10], labels[:10]), batch[:10])


def test_lower_jpeg_quality_changes_more() -> None:
    images = textured_images(8)
    changes = [mean_abs_change(images, jpeg(images, quality)) for quality in (90, 75, 50)]
    assert changes[0] < changes[1] < changes[2]


def test_blur_removes_high_frequencies_and_keeps_the_average() -> None:
    images = textured_images(8)
    smooth = gaussian_blur(images, sigma=1.0)
    assert high_frequency_energy(smooth) < high_frequency_energy(images) / 3
    assert abs(smooth.astype(float).mean() - images.astype(float).mean()) < 1.0
    reference = ndimage.gaussian_filter(images[0].astype(float), sigma=(1.0, 1.0, 0), mode="reflect")
    np.testing.assert_allclose(smooth[0], np.clip(np.rint(reference), 0, 255), atol=1)


def test_rescaling_loses_detail_but_keeps_flat_images() -> None:
    checkerboard = np.zeros((1, 32, 32, 3), dtype="uint8")
    checkerboard[:, ::2, ::2] = checkerboard[:, 1::2, 1::2] = 255
    assert high_frequency_energy(rescale(checkerboard, 16)) < high_frequency_energy(checkerboard) / 10
    flat = np.full((1, 32, 32, 3), 77, dtype="uint8")
    np.testing.assert_array_equal(rescale(flat, 16), flat)


def test_noise_is_seeded_clipped_and_of_the_stated_strength() -> None:
    grey = np.full((16, 32, 32, 3), 128, dtype="uint8")
    noisy = gaussian_noise(grey, seed=1, sigma=8.0)
    assert (noisy.astype(float) - 128).std() == pytest.approx(8.0, rel=0.05)
    np.testing.assert_array_equal(noisy, gaussian_noise(grey, seed=1, sigma=8.0))
    assert not np.array_equal(noisy, gaussian_noise(grey, seed=2, sigma=8.0))
    white = np.full((4, 32, 32, 3), 255, dtype="uint8")
    assert gaussian_noise(white, seed=0).min() < 255  # clipped at the top, not wrapped around to 0
    assert gaussian_noise(white, seed=0).min() > 200


def grain_detector(images: np.ndarray) -> np.ndarray:
    """P(REAL) from the amount of fine grain: REAL photos here are grainy, FAKE ones are smooth."""
    values = images.astype("float64")
    grain = (np.diff(values, axis=1) ** 2).mean(axis=(1, 2, 3))
    real = 1.0 / (1.0 + np.exp(-(grain - 100.0) / 20.0))
    return np.stack([1.0 - real, real], axis=1)


def test_report_scores_each_corruption_in_a_stable_order() -> None:
    grainy = textured_images(10, seed=1)
    smooth = gaussian_blur(textured_images(10, seed=2), sigma=2.0)
    images = np.concatenate([smooth, grainy])
    labels = np.array([0] * 10 + [1] * 10)
    seen: list[np.ndarray] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return grain_detector(batch)

    report = robustness_report(predict, images, labels, seed=0)
    json.dumps(report, allow_nan=False)  # becomes report/robustness.json as it is
    rows = {row["name"]: row for row in report["corruptions"]}
    assert [row["name"] for row in report["corruptions"]] == EXPECTED_ORDER
    assert report["images"] == 20 and len(seen) == len(EXPECTED_ORDER)
    np.testing.assert_array_equal(seen[0], images)  # clean first, then corrupted copies
    assert rows["clean"]["accuracy"] == 1.0 and rows["clean"]["roc_auc"] == 1.0
    # Blur wipes the grain the detector relies on: REAL images turn FAKE.
    assert rows["blur_sigma1"]["accuracy"] <= 0.6
    assert rows["blur_sigma1"]["accuracy_drop"] == pytest.approx(1.0 - rows["blur_sigma1"]["accuracy"])
    assert all(row["description"] for row in report["corruptions"])
    metrics = robustness_metrics(report)
    assert metrics["robust_blur_sigma1_accuracy"] == rows["blur_sigma1"]["accuracy"]
    assert len(metrics) == 2 * (len(EXPECTED_ORDER) - 1) and not any("clean" in name for name in metrics)
