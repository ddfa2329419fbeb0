"""The fused augmentation layer: the same maps as Keras's chained layers, the same ranges, seeded, inert at inference."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops

from forgery import models
from forgery.augment import RandomAffine, RandomColourShift, RandomCutout, RandomDihedral, RandomShift, affine_rows, build_augmentation

SIZE = 32


def ramps() -> np.ndarray:
    """One image whose channels are linear in x and y: bilinear resampling reproduces such images exactly."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype("float32")
    return np.stack([3 * x + y, 2 * y - x + 50, x + 0.5 * y], axis=-1)[None]


@pytest.mark.parametrize("mirror", [1.0, -1.0])
def test_one_resampling_matches_keras_layers_chained(mirror: float) -> None:
    # Keras's layers with each range pinned to one value, chained as the seed chains them.
    turn, zoom, shift = 0.03, 0.08, 0.05
    chain = keras.Sequential([keras.layers.RandomRotation((turn, turn)), keras.layers.RandomZoom((zoom, zoom)), keras.layers.RandomTranslation((shift, shift), (shift, shift))])
    image = ramps()
    expected = np.asarray(chain(image[:, :, ::-1] if mirror < 0 else image, training=True))
    centre = (SIZE - 1) / 2
    rows = affine_rows(ops.array([mirror]), ops.array([turn * 2 * math.pi]), ops.array([1 + zoom]), ops.array([shift * SIZE]), ops.array([shift * SIZE]), centre, centre)
    fused = np.asarray(ops.image.affine_transform(ops.array(image), rows, interpolation="bilinear", fill_mode="reflect"))
    inner = (slice(None), slice(10, 22), slice(10, 22))  # away from the borders, where chained reflections differ
    np.testing.assert_allclose(fused[inner], expected[inner], atol=1e-3)


def slopes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the centre's gradient along x and y of channel 0 (a ramp 3x + y before augmentation)."""
    centre = images[:, 12:20, 12:20, 0]
    return np.diff(centre, axis=2).mean(axis=(1, 2)), np.diff(centre, axis=1).mean(axis=(1, 2))


def test_draws_cover_the_configured_ranges_and_flip_half_the_images() -> None:
    images = np.repeat(ramps(), 400, axis=0)
    layer = RandomAffine(flip=True, rotation=0.05, zoom=0.1, seed=3)
    along_x, along_y = slopes(np.asarray(layer(images, training=True)))
    # Output = input at c + scale * F R (p - c): channel 0 (3x + y) has slopes m*s*(3cos + sin) along x and s*(cos - 3 m sin) along y.
    mirror = np.sign(along_x)
    solved = np.linalg.solve(np.array([[3.0, 1.0], [1.0, -3.0]]), np.stack([along_x * mirror, along_y], axis=0))  # (s cos, s sin) per image, m folded in
    scale = np.hypot(solved[0], solved[1])
    angle = np.arctan2(solved[1] * mirror, solved[0])
    assert 0.89 < scale.min() < 0.92 and 1.08 < scale.max() < 1.11
    turn = 0.05 * 2 * math.pi
    assert -turn - 0.01 < angle.min() < -0.8 * turn and 0.8 * turn < angle.max() < turn + 0.01
    assert 0.4 < (mirror < 0).mean() < 0.6


def test_seeded_random_in_training_and_identity_at_inference() -> None:
    images = np.repeat(ramps(), 4, axis=0)
    first, second = RandomAffine(rotation=0.1, zoom=0.1, seed=7), RandomAffine(rotation=0.1, zoom=0.1, seed=7)
    np.testing.assert_array_equal(first(images, training=True), second(images, training=True))
    assert not np.allclose(first(images, training=True), images)
    np.testing.assert_array_equal(first(images, training=False), images)


def test_fused_is_used_only_where_it_resamples() -> None:
    def kinds(block: keras.Sequential | None) -> list[str]:
        return [type(layer).__name__ for layer in block.layers] if block is not None else []

    assert kinds(build_augmentation("light", "horizontal", 0.1, 0.1)) == ["RandomAffine"]
    assert kinds(build_augmentation("strong", "horizontal", 0.15, 0.2, 0.1, 0.2)) == ["RandomAffine", "RandomContrast"]
    assert kinds(build_augmentation("flip", "horizontal")) == ["RandomFlip"]  # exact and cheaper alone
    assert kinds(build_augmentation("light", "horizontal", 0.1, 0.1, fused=False)) == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert kinds(build_augmentation("vertical", "vertical", 0.1)) == ["RandomFlip", "RandomRotation"]  # RandomAffine mirrors left-right only
    assert kinds(build_augmentation("flip_shift", "horizontal", shift_pixels=4)) == ["RandomFlip", "RandomShift"]
    assert kinds(build_augmentation("shift", None, shift_pixels=2)) == ["RandomShift"]
    assert kinds(build_augmentation("dihedral_shift", None, shift_pixels=4, dihedral=True)) == ["RandomShift", "RandomDihedral"]
    assert kinds(build_augmentation("flip_shift_cutout", "horizontal", shift_pixels=4, cutout_pixels=12)) == ["RandomFlip", "RandomShift", "RandomCutout"]


def test_a_model_with_the_layer_saves_and_loads(tmp_path) -> None:
    model = models.cnn("small", [8, 8, 8], augmentation=build_augmentation("light", "horizontal", 0.1, 0.1))
    model.save(tmp_path / "model.keras")
    loaded = models.load(tmp_path / "model.keras")
    block = next(layer for layer in loaded.layers if models.is_augmentation_block(layer))
    layer = block.layers[0]
    assert isinstance(layer, RandomAffine) and (layer.rotation, layer.zoom, layer.flip) == (0.1, 0.1, True)
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-6)


def offset_of(moved: np.ndarray, original: np.ndarray, pixels: int) -> tuple[int, int] | None:
    """The whole-pixel (dx, dy) for which `moved` equals `original` shifted, judged away from the reflected border; None if none."""
    inner = slice(pixels, SIZE - pixels)
    for dx in range(-pixels, pixels + 1):
        for dy in range(-pixels, pixels + 1):
            source = original[pixels - dy : SIZE - pixels - dy, pixels - dx : SIZE - pixels - dx]
            if np.array_equal(moved[inner, inner], source):
                return dx, dy
    return None


def test_whole_pixel_shifts_copy_pixels_exactly_over_the_whole_range() -> None:
    images = np.random.default_rng(0).random((300, SIZE, SIZE, 3)).astype("float32")
    moved = np.asarray(RandomShift(3, seed=5)(images, training=True))
    offsets = [offset_of(moved[index], images[index], 3) for index in range(len(images))]
    assert None not in offsets  # every image is an exact shift: no interpolated value anywhere inside
    assert set(offsets) == {(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)}  # all 49 offsets drawn, none beyond
    # The border is filled by reflection: every output value is one of the image's own values.
    assert all(np.isin(moved[index], images[index]).all() for index in range(0, len(images), 30))


@pytest.mark.parametrize("layer", [RandomShift, RandomCutout, RandomColourShift])
def test_pixel_sized_layers_are_seeded_and_inert_at_inference_and_at_zero_pixels(layer: type) -> None:
    images = np.random.default_rng(1).random((8, SIZE, SIZE, 3)).astype("float32")
    first, second, other = layer(4, seed=7), layer(4, seed=7), layer(4, seed=8)
    drawn = np.asarray(first(images, training=True))
    np.testing.assert_array_equal(drawn, second(images, training=True))
    assert not np.array_equal(drawn, other(images, training=True))  # the seed decides the draws
    np.testing.assert_array_equal(first(images, training=False), images)
    np.testing.assert_array_equal(layer(0)(images, training=True), images)


def test_a_model_with_whole_pixel_shifts_saves_and_loads(tmp_path) -> None:
    model = models.resnet("resnet", [8, 8, 8], blocks_per_stage=1, augmentation=build_augmentation("flip_shift", "horizontal", shift_pixels=4))
    model.save(tmp_path / "model.keras")
    loaded = models.load(tmp_path / "model.keras")
    block = next(layer for layer in loaded.layers if models.is_augmentation_block(layer))
    assert [type(layer).__name__ for layer in block.layers] == ["RandomFlip", "RandomShift"] and block.layers[1].pixels == 4
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-6)


def symmetry_of(moved: np.ndarray, original: np.ndarray) -> tuple[int, bool] | None:
    """(quarter turns, mirrored) for which `moved` equals `original` exactly; None if no symmetry of the square gives it."""
    for turns in range(4):
        turned = np.rot90(original, turns)
        for mirrored in (False, True):
            if np.array_equal(moved, turned[:, ::-1] if mirrored else turned):
                return turns, mirrored
    return None


def test_dihedral_draws_all_eight_symmetries_evenly_and_copies_pixels_exactly() -> None:
    images = np.random.default_rng(2).random((800, SIZE, SIZE, 3)).astype("float32")
    moved = np.asarray(RandomDihedral(seed=4)(images, training=True))
    found = [symmetry_of(moved[index], images[index]) for index in range(len(images))]
    assert None not in found  # each output is an exact rotation or mirror image of its own input
    counts = {symmetry: found.count(symmetry) for symmetry in set(found)}
    assert len(counts) == 8 and min(counts.values()) > 60 and max(counts.values()) < 140  # about 100 each


def test_dihedral_is_seeded_inert_at_inference_and_refuses_non_square_images() -> None:
    images = np.random.default_rng(3).random((8, SIZE, SIZE, 3)).astype("float32")
    first, second = RandomDihedral(seed=7), RandomDihedral(seed=7)
    np.testing.assert_array_equal(first(images, training=True), second(images, training=True))
    np.testing.assert_array_equal(first(images, training=False), images)
    with pytest.raises(ValueError, match="square"):
        RandomDihedral()(np.zeros((2, SIZE, SIZE + 2, 3), "float32"), training=True)


def test_a_model_with_dihedral_symmetries_saves_and_loads(tmp_path) -> None:
    model = models.resnet("resnet", [8, 8, 8], blocks_per_stage=1, augmentation=build_augmentation("dihedral_shift", None, shift_pixels=4, dihedral=True))
    model.save(tmp_path / "model.keras")
    loaded = models.load(tmp_path / "model.keras")
    block = next(layer for layer in loaded.layers if models.is_augmentation_block(layer))
    assert [type(layer).__name__ for layer in block.layers] == ["RandomShift", "RandomDihedral"]
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-6)


def cutout_corner(moved: np.ndarray, original: np.ndarray, pixels: int) -> tuple[int, int] | None:
    """The (top, left) of the grey square that `moved` is `original` with (possibly outside the image); None if it is anything else."""
    changed = (moved != original).any(axis=-1)
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    if not changed[box].all() or not (moved[box] == 0.5).all():
        return None  # the change is not one solid grey rectangle
    top = rows[0] if rows[0] > 0 else rows[-1] + 1 - pixels
    left = columns[0] if columns[0] > 0 else columns[-1] + 1 - pixels
    clipped = (min(top + pixels, SIZE) - max(top, 0), min(left + pixels, SIZE) - max(left, 0))
    return (int(top), int(left)) if clipped == (len(rows), len(columns)) else None


def test_cutout_greys_one_square_centred_on_any_pixel_and_keeps_every_other_pixel() -> None:
    images = np.random.default_rng(5).random((1200, SIZE, SIZE, 3)).astype("float32")
    moved = np.asarray(RandomCutout(12, seed=3)(images, training=True))
    corners = [cutout_corner(moved[index], images[index], 12) for index in range(len(images))]
    assert None not in corners  # each image differs from its input by exactly one clipped 12x12 grey square
    # Centres on every row and column, so corners from -6 to 25; none beyond.
    assert {top for top, _ in corners} == set(range(-6, 26)) and {left for _, left in corners} == set(range(-6, 26))


def test_colour_shifts_move_each_channel_by_one_amount_within_the_range_and_keep_every_texture() -> None:
    images = np.random.default_rng(5).uniform(0.2, 0.8, (2000, SIZE, SIZE, 3)).astype("float32")  # room to move unclipped
    moved = np.asarray(RandomColourShift(32, seed=3)(images, training=True))
    change = moved - images
    # one constant per image and channel: edges and textures untouched (float32 rounding aside)
    np.testing.assert_allclose(change, np.broadcast_to(change[:, :1, :1, :], change.shape), atol=1e-6)
    shifts = change[:, 0, 0, :] * 255.0
    assert np.abs(shifts).max() <= 32.0 + 1e-3 and np.abs(shifts).max() > 31.0  # up to 32 levels either way
    assert abs(shifts.mean()) < 1.0 and np.abs(np.corrcoef(shifts.T)[np.triu_indices(3, 1)]).max() < 0.1  # channels drawn apart
    bright = np.full((4, SIZE, SIZE, 3), 0.99, dtype="float32")
    assert np.asarray(RandomColourShift(64, seed=1)(bright, training=True)).max() <= 1.0  # clipped to the pixel range


def test_a_model_with_cutout_saves_and_loads(tmp_path) -> None:
    model = models.resnet("resnet", [8, 8, 8], blocks_per_stage=1, augmentation=build_augmentation("flip_shift_cutout", "horizontal", shift_pixels=4, cutout_pixels=12))
    model.save(tmp_path / "model.keras")
    loaded = models.load(tmp_path / "model.keras")
    block = next(layer for layer in loaded.layers if models.is_augmentation_block(layer))
    assert [type(layer).__name__ for layer in block.layers] == ["RandomFlip", "RandomShift", "RandomCutout"] and block.layers[2].pixels == 12
    shifted = models.resnet("colour", [8, 8, 8], blocks_per_stage=1, augmentation=build_augmentation("c", None, colour_shift=16))
    shifted.save(tmp_path / "colour.keras")
    block = next(layer for layer in models.load(tmp_path / "colour.keras").layers if models.is_augmentation_block(layer))
    assert [type(layer).__name__ for layer in block.layers] == ["RandomColourShift"] and block.layers[0].pixels == 16
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-6)
