"""Tests for the built-in demo dataset: shapes, counts, determinism, leakage, traces and shortcut guards."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from forgery import demo_data
from forgery.data import CLASS_NAMES, Dataset, DataError
from forgery.demo_data import load_demo

FAKE, REAL = CLASS_NAMES.index("FAKE"), CLASS_NAMES.index("REAL")
SMALL = {"train_per_class": 40, "test_per_class": 10}  # enough images to compare, fast to build


@pytest.fixture(scope="module")
def demo() -> Dataset:
    """The demo dataset at its default sizes, built once for the module."""
    return load_demo(seed=0)


def all_images(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the three splits together."""
    splits = (dataset.train, dataset.val, dataset.test)
    return np.concatenate([split.images for split in splits]), np.concatenate([split.labels for split in splits])


def test_splits_hold_uint8_images_and_binary_int64_labels(demo: Dataset) -> None:
    assert demo.name == "demo" and demo.issues == {}
    for split in (demo.train, demo.val, demo.test):
        assert split.images.shape[1:] == (32, 32, 3) and split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64
        assert set(np.unique(split.labels)) == {FAKE, REAL}


def test_classes_are_balanced_at_the_requested_sizes(demo: Dataset) -> None:
    assert demo.counts() == {
        "train": {"FAKE": 1080, "REAL": 1080, "total": 2160},
        "val": {"FAKE": 120, "REAL": 120, "total": 240},
        "test": {"FAKE": 300, "REAL": 300, "total": 600},
    }


def test_val_fraction_sets_the_validation_share_per_class() -> None:
    dataset = load_demo(seed=0, val_fraction=0.25, **SMALL)
    assert dataset.val.class_counts() == {"FAKE": 10, "REAL": 10}
    assert dataset.train.class_counts() == {"FAKE": 30, "REAL": 30}


def test_same_seed_gives_identical_arrays() -> None:
    first, second = load_demo(seed=3, **SMALL), load_demo(seed=3, **SMALL)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name).images, getattr(second, name).images)
        np.testing.assert_array_equal(getattr(first, name).labels, getattr(second, name).labels)


def test_different_seeds_give_different_images() -> None:
    first, second = load_demo(seed=3, **SMALL), load_demo(seed=4, **SMALL)
    assert not np.array_equal(first.train.images, second.train.images)
    assert not np.array_equal(first.test.images, second.test.images)


def test_no_test_image_repeats_a_training_image(demo: Dataset) -> None:
    seen = {image.tobytes() for image in np.concatenate([demo.train.images, demo.val.images])}
    assert not any(image.tobytes() in seen for image in demo.test.images)
    training = {image.tobytes() for image in demo.train.images}
    assert not any(image.tobytes() in training for image in demo.val.images)


def test_a_crop_is_rendered_from_its_own_pixels_only() -> None:
    """Resizing with box= let the filter read up to a few pixels past the crop, from a neighbouring tile
    that may be another split's: the rendered crop must not change when only pixels outside it do."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    crops = np.array([[0, 100, 20, 128, 0], [0, 50, 40, 37, 1]])  # a wide view and an odd-sized close-up
    before = demo_data.render_crops([Image.fromarray(photo)], crops, 32)
    outside = photo.copy()
    for _, x, y, side, _ in crops:
        keep = photo[y : y + side, x : x + side].copy()
        outside[:] = 255 - outside  # every pixel changed ...
        outside[y : y + side, x : x + side] = keep  # ... but the crop's own
        after = demo_data.render_crops([Image.fromarray(outside)], crops[[list(crops[:, 1]).index(x)]], 32)
        np.testing.assert_array_equal(after[0], before[list(crops[:, 1]).index(x)])


def boxes_overlap(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> bool:
    """Whether two (left, top, right, bottom) boxes share any area."""
    left, top, right, bottom = first
    other_left, other_top, other_right, other_bottom = second
    return not (right <= other_left or other_right <= left or bottom <= other_top or other_bottom <= top)


def test_train_val_and_test_tiles_never_overlap() -> None:
    for photo in demo_data.load_photos():
        tiles = {part: demo_data.photo_tiles(photo, part) for part in ("train", "val", "test")}
        assert all(tiles.values()), {part: len(boxes) for part, boxes in tiles.items()}
        for part, other in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not any(boxes_overlap(box, other_box) for box in tiles[part] for other_box in tiles[other])


def test_each_split_draws_its_crops_only_from_its_own_tiles() -> None:
    photos = demo_data.load_photos()
    for part in ("train", "val", "test"):
        crops = demo_data.sample_crops(photos, part, 300, np.random.default_rng(0))
        for photo_index, x, y, side, _ in crops:
            inside = [
                left <= x and top <= y and x + side <= right and y + side <= bottom
                for left, top, right, bottom in demo_data.photo_tiles(photos[photo_index], part)
            ]
            assert any(inside), (part, photo_index, x, y, side)


def test_each_split_is_rendered_from_its_own_part(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[str, int]] = []
    make_split = demo_data.make_split

    def recording_make_split(photos, part: str, per_class: int, rng: np.random.Generator):
        requested.append((part, per_class))
        return make_split(photos, part, per_class, rng)

    monkeypatch.setattr(demo_data, "make_split", recording_make_split)
    dataset = load_demo(seed=0, val_fraction=0.25, **SMALL)
    assert sorted(requested) == [("test", 10), ("train", 30), ("val", 10)]
    assert dataset.val.class_counts() == {"FAKE": 10, "REAL": 10}


def test_unknown_tile_part_is_refused() -> None:
    with pytest.raises(ValueError, match="part must be one of"):
        demo_data.photo_tiles(demo_data.load_photos()[0], "validation")


def test_too_few_training_images_for_a_validation_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="train_per_class is 1; the validation split needs at least 2 per class"):
        load_demo(seed=0, train_per_class=1, test_per_class=10)
    with pytest.raises(DataError, match="val_fraction must be between 0 and 1"):
        load_demo(seed=0, val_fraction=1.0, **SMALL)
    # The smallest valid request keeps one image per class on each side.
    smallest = load_demo(seed=0, train_per_class=2, test_per_class=2)
    assert smallest.train.class_counts() == smallest.val.class_counts() == {"FAKE": 1, "REAL": 1}


def test_splits_mix_the_classes_in_their_order(demo: Dataset) -> None:
    # Neither class comes as one block: the first 20 images of each split hold both.
    for split in (demo.train, demo.val, demo.test):
        assert set(split.labels[:20].tolist()) == {FAKE, REAL}


def test_fake_images_have_less_fine_detail_than_real(demo: Dataset) -> None:
    images, labels = all_images(demo)
    grey = images.astype(np.float64).mean(axis=-1)
    # Energy of neighbour differences: what the upsampling and blur traces take away.
    fine_detail = (np.diff(grey, axis=1) ** 2).mean(axis=(1, 2)) + (np.diff(grey, axis=2) ** 2).mean(axis=(1, 2))
    assert fine_detail[labels == FAKE].mean() < 0.5 * fine_detail[labels == REAL].mean()


def grating_peak(images: np.ndarray) -> float:
    """Mean amplitude spectrum at the grating frequencies over that at their four neighbours."""
    pixels = images.astype(np.float64)
    # Per colour channel: the gratings change hue, not brightness, so a grey image would not show them.
    spectra = np.abs(np.fft.fft2(pixels - pixels.mean(axis=(1, 2), keepdims=True), axes=(1, 2)))
    spectrum = spectra.mean(axis=(0, 3))
    size = spectrum.shape[0]
    ratios = []
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    for row, column in demo_data.GRATING_FREQUENCIES:
        neighbours = [spectrum[(row + down) % size, (column + right) % size] for down, right in steps]
        ratios.append(spectrum[row % size, column % size] / np.mean(neighbours))
    return float(np.mean(ratios))


def test_fake_spectra_peak_at_the_grating_frequencies(demo: Dataset) -> None:
    images, labels = all_images(demo)
    assert grating_peak(images[labels == FAKE]) > 1.5 > grating_peak(images[labels == REAL])


def test_classes_have_close_brightness_and_colour(demo: Dataset) -> None:
    images, labels = all_images(demo)
    channel_means = [images[labels == label].astype(np.float64).mean(axis=(0, 1, 2)) for label in (FAKE, REAL)]
    # Crops differ a lot from one another, so a few grey levels apart is chance; a shortcut would be more.
    assert np.abs(channel_means[FAKE] - channel_means[REAL]).max() < 8.0


def test_traces_keep_each_image_brightness_even_near_black() -> None:
    photos = demo_data.load_photos()
    crops = demo_data.sample_crops(photos, "train", 200, np.random.default_rng(0))
    for scale in (1.0, 0.1):  # 0.1 makes dark images, where one-sided clipping of the grating would brighten
        clean = scale * demo_data.render_crops(photos, crops, 32)
        low = scale * demo_data.render_crops(photos, crops, 16)
        traced = demo_data.add_generator_traces(clean, low, np.random.default_rng(1))
        # The same noise draws on both sides, so only the traces differ.
        fake = demo_data.finish(traced, np.random.default_rng(2)).astype(np.float64)
        real = demo_data.finish(clean, np.random.default_rng(2)).astype(np.float64)
        assert abs((fake - real).mean()) < 0.5


def test_transposed_upsampling_leaves_a_checkerboard_on_flat_input() -> None:
    flat = np.full((1, 4, 4, 3), 100.0)
    checkerboard = demo_data.upsample_transposed(flat, np.array([0.3]))
    assert checkerboard.shape == (1, 8, 8, 3)
    assert checkerboard.mean() == pytest.approx(100.0)
    assert checkerboard[0, 0, 0, 0] < 100.0 < checkerboard[0, 1, 1, 0]
    np.testing.assert_allclose(demo_data.upsample_nearest(flat), 100.0)
    np.testing.assert_allclose(demo_data.upsample_bilinear(flat), 100.0)


def test_missing_sample_photo_raises_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))
    with pytest.raises(DataError, match="grace_hopper.jpg"):
        load_demo(seed=0, **SMALL)
