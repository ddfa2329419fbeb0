"""Built-in demo dataset: crops of real photos (REAL) against crops given generator-like traces (FAKE).

REAL images are random square crops (32-128 px) of three photographs that ship inside installed
packages (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg), downsampled with
antialiasing to 32x32 and randomly flipped; near-flat crops (sky, blurred background) are redrawn,
for both classes, since no trace could show on them. FAKE images are other crops of the same photos,
so content, colour and brightness match, given three traces image generators leave, each at a random
strength per image. The content is re-rendered at 16x16 and upsampled 2x (nearest, bilinear, or a
zero-insertion "transposed convolution" whose uneven overlap leaves a checkerboard), as generators
build images up from coarse feature maps. A Gaussian blur over-smooths fine detail, like the missing
high frequencies of generated images. A colour grating with a 4-8 px period adds the periodic pattern
that shows up as peaks in generated images' spectra; it is stronger than in real generators because
the seed model, trained 5 epochs under rotation and zoom augmentation, cannot learn faint ones. Both
classes then get the same faint noise and the same rounding to uint8, so neither is a cue. Strengths
are calibrated so the seed model reaches about 85-94% test accuracy: learnable, not perfectly. Train,
validation and test crops come from disjoint tiles of each photo, so no validation or test image
repeats (or overlaps) a training one, and validation figures are as honest as test ones.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import sklearn
from PIL import Image

from forgery.data import CLASS_NAMES, IMAGE_SIZE, Dataset, DataError, Split, check_val_fraction

FAKE_LABEL, REAL_LABEL = CLASS_NAMES.index("FAKE"), CLASS_NAMES.index("REAL")
CROP_SIZES = (32, 128)  # smallest and largest crop side in source pixels: close-ups to wide views
TEST_EVERY = 4  # one photo tile in this many holds test crops only: about a 25% test share of each photo
VAL_EVERY = 8  # one tile in this many, of those left, holds validation crops only: about 13% of each photo
PARTS = ("train", "val", "test")
MIN_DETAIL = 6.0  # grey levels of Laplacian below which a crop counts as flat and is redrawn
LOW_SIZE = IMAGE_SIZE // 2  # FAKE content resolution before the 2x upsampling trace
UPSAMPLED_SHARES = (0.5, 1.0)  # how much of the upsampled render replaces the clean one; higher is easier
CHECKERBOARD_GAINS = (0.1, 0.35)  # uneven-overlap gain of transposed-convolution upsampling
BLUR_SIGMAS = (0.6, 1.5)  # Gaussian blur range in pixels: slightly to clearly soft; higher is easier
GRATING_AMPLITUDES = (8.0, 16.0)  # grating amplitude range in grey levels; higher is easier
# Cycles per 32 px along (rows, columns): periods of 4-8 px, coarse enough to survive the
# rotation and zoom augmentation's interpolation, which would wash out finer ones.
GRATING_FREQUENCIES = ((4, 0), (0, 4), (4, 4), (4, -4), (8, 0), (0, 8))
NOISE_SIGMAS = (0.0, 2.0)  # grey levels of the sensor-like noise given to both classes


def photo_paths() -> list[Path]:
    """Paths of the sample photographs shipped inside scikit-learn and matplotlib."""
    sklearn_images = Path(sklearn.__file__).parent / "datasets" / "images"
    matplotlib_samples = Path(matplotlib.get_data_path()) / "sample_data"
    paths = [sklearn_images / "china.jpg", sklearn_images / "flower.jpg", matplotlib_samples / "grace_hopper.jpg"]
    for path in paths:
        if not path.is_file():
            raise DataError(f"demo data needs the sample photo {path}, which is missing from this install")
    return paths


def load_photos() -> list[Image.Image]:
    """The sample photographs as RGB images."""
    photos = []
    for path in photo_paths():
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return photos


def tile_part(column: int, row: int) -> str:
    """Which split a tile's crops go to: "test", "val" or "train"."""
    # Staggered row to row, so each part's tiles spread over the photo and all parts see similar content.
    position = column + 2 * row
    if position % TEST_EVERY == 1:
        return "test"
    return "val" if position % VAL_EVERY == 3 else "train"


def photo_tiles(photo: Image.Image, part: str) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of the photo's train, val or test tiles, each at least a crop wide."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    width, height = photo.size
    columns, rows = width // CROP_SIZES[1], height // CROP_SIZES[1]
    x_edges = np.linspace(0, width, columns + 1).astype(int)
    y_edges = np.linspace(0, height, rows + 1).astype(int)
    return [
        (int(x_edges[column]), int(y_edges[row]), int(x_edges[column + 1]), int(y_edges[row + 1]))
        for row in range(rows)
        for column in range(columns)
        if tile_part(column, row) == part
    ]


def sample_crops(photos: list[Image.Image], part: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random square crops inside the photos' `part` tiles, as rows (photo, x, y, side, flip)."""
    tiles = [(index, box) for index, photo in enumerate(photos) for box in photo_tiles(photo, part)]
    crops = np.empty((count, 5), dtype=np.int64)
    for row, tile_index in zip(crops, rng.integers(len(tiles), size=count)):
        photo_index, (left, top, right, bottom) = tiles[tile_index]
        side = int(rng.integers(CROP_SIZES[0], CROP_SIZES[1] + 1))
        x = left + int(rng.integers(right - left - side + 1))
        y = top + int(rng.integers(bottom - top - side + 1))
        row[:4] = photo_index, x, y, side
    crops[:, 4] = rng.random(count) < 0.5
    return crops


def render_crops(photos: list[Image.Image], crops: np.ndarray, size: int) -> np.ndarray:
    """The crops antialiased down to size x size and flipped where asked, as float (N, size, size, 3)."""
    images = np.empty((len(crops), size, size, 3), dtype=np.float32)
    for index, (photo_index, x, y, side, _) in enumerate(crops):
        # Cropped first: resize's box= lets the filter read pixels outside the box, from a neighbouring tile
        # of another split. LANCZOS antialiases; reducing_gap=3 box-reduces first, for speed.
        crop = photos[photo_index].crop((int(x), int(y), int(x + side), int(y + side)))
        resized = crop.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        images[index] = np.asarray(resized)
    flips = crops[:, 4].astype(bool)
    images[flips] = images[flips, :, ::-1]
    return images


def detail(images: np.ndarray) -> np.ndarray:
    """Per-image root-mean-square Laplacian of the grey image, in grey levels: 0 for a flat patch."""
    grey = images.mean(axis=-1)
    neighbours = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
    laplacian = 4 * grey[:, 1:-1, 1:-1] - neighbours
    return np.sqrt(np.mean(laplacian**2, axis=(1, 2)))


def detailed_crops(
    photos: list[Image.Image], part: str, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops and their 32x32 renders, skipping near-flat ones (sky, bokeh) where no trace could show."""
    kept_crops, kept_images, kept = [], [], 0
    while kept < count:
        # About a third of crops are flat: draw half again as many as are missing, plus a few.
        crops = sample_crops(photos, part, (count - kept) * 3 // 2 + 16, rng)
        images = render_crops(photos, crops, IMAGE_SIZE)
        textured = detail(images) >= MIN_DETAIL
        kept_crops.append(crops[textured])
        kept_images.append(images[textured])
        kept += int(textured.sum())
    return np.concatenate(kept_crops)[:count], np.concatenate(kept_images)[:count]


def upsample_nearest(images: np.ndarray) -> np.ndarray:
    """2x upsampling by pixel repetition: leaves 2x2 blocks."""
    return images.repeat(2, axis=1).repeat(2, axis=2)


def upsample_axis_bilinear(images: np.ndarray, axis: int) -> np.ndarray:
    """2x bilinear upsampling along one spatial axis (half-pixel centres, edges clamped)."""
    before = np.concatenate([np.take(images, [0], axis=axis), np.delete(images, -1, axis=axis)], axis=axis)
    after = np.concatenate([np.delete(images, 0, axis=axis), np.take(images, [-1], axis=axis)], axis=axis)
    even = 0.75 * images + 0.25 * before
    odd = 0.75 * images + 0.25 * after
    return interleave(even, odd, axis)


def upsample_bilinear(images: np.ndarray) -> np.ndarray:
    """2x bilinear upsampling: smooth, with the correlated neighbours interpolation leaves."""
    return upsample_axis_bilinear(upsample_axis_bilinear(images, 1), 2)


def upsample_axis_transposed(images: np.ndarray, gains: np.ndarray, axis: int) -> np.ndarray:
    """Zero-insertion 2x upsampling along one axis with kernel [odd/2, even, odd/2] of unequal gains."""
    after = np.concatenate([np.delete(images, 0, axis=axis), np.take(images, [-1], axis=axis)], axis=axis)
    # Odd outputs overlap two inputs, even ones one: unequal gains make the stripes of a checkerboard.
    gain = gains.reshape(-1, 1, 1, 1)
    even = (1 - gain / 2) * images
    odd = (1 + gain / 2) * 0.5 * (images + after)
    return interleave(even, odd, axis)


def upsample_transposed(images: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """2x "transposed convolution" upsampling that leaves a periodic checkerboard of strength `gains`."""
    return upsample_axis_transposed(upsample_axis_transposed(images, gains, 1), gains, 2)


def interleave(even: np.ndarray, odd: np.ndarray, axis: int) -> np.ndarray:
    """Merge two equal arrays along `axis` as even, odd, even, odd, ... positions."""
    stacked = np.stack([even, odd], axis=axis + 1)
    shape = list(even.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def gaussian_blur(images: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Separable 5-tap Gaussian blur with a per-image sigma (reflected edges)."""
    offsets = np.arange(-2, 3)
    kernels = np.exp(-(offsets[None, :] ** 2) / (2 * sigmas[:, None] ** 2))
    kernels /= kernels.sum(axis=1, keepdims=True)  # normalised taps keep each image's mean brightness
    blurred = images
    for axis in (1, 2):
        padding = [(0, 0)] * 4
        padding[axis] = (2, 2)
        padded = np.pad(blurred, padding, mode="reflect")
        size = blurred.shape[axis]
        blurred = sum(
            kernels[:, tap].reshape(-1, 1, 1, 1) * np.take(padded, np.arange(tap, tap + size), axis=axis)
            for tap in range(len(offsets))
        )
    return blurred


def colour_gratings(count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-amplitude cosine gratings, random frequency, phase and colour direction, (count, 32, 32, 3)."""
    frequencies = np.array(GRATING_FREQUENCIES)[rng.integers(len(GRATING_FREQUENCIES), size=count)]
    phases = rng.uniform(0, 2 * np.pi, size=count)
    coordinates = np.arange(IMAGE_SIZE) / IMAGE_SIZE
    angles = 2 * np.pi * (
        frequencies[:, 0, None, None] * coordinates[None, :, None]
        + frequencies[:, 1, None, None] * coordinates[None, None, :]
    )
    # Channel weights summing to zero: the grating shifts hue, never brightness, and whole cycles keep
    # each channel's mean, so colour statistics stay those of REAL.
    colours = rng.standard_normal((count, 3))
    colours -= colours.mean(axis=1, keepdims=True)
    colours *= np.sqrt(3) / np.linalg.norm(colours, axis=1, keepdims=True)
    return np.cos(angles + phases[:, None, None])[..., None] * colours[:, None, None, :]


def upsample(low: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2x upsampling of each image by a random method: nearest, bilinear or transposed convolution."""
    methods = rng.integers(3, size=len(low))
    gains = rng.uniform(*CHECKERBOARD_GAINS, size=int(np.sum(methods == 2)))
    upsampled = np.empty((len(low), 2 * low.shape[1], 2 * low.shape[2], 3), dtype=low.dtype)
    upsampled[methods == 0] = upsample_nearest(low[methods == 0])
    upsampled[methods == 1] = upsample_bilinear(low[methods == 1])
    upsampled[methods == 2] = upsample_transposed(low[methods == 2], gains)
    return upsampled


def add_generator_traces(clean: np.ndarray, low: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """FAKE images from 32 px (clean) and 16 px (low) renders of the same crops, each trace at a random strength."""
    count = len(clean)
    # Independent strengths: a FAKE is hard only when all its traces happen to be weak.
    upsampled_share = rng.uniform(*UPSAMPLED_SHARES, size=count).reshape(-1, 1, 1, 1)
    images = clean + upsampled_share * (upsample(low, rng) - clean)
    images = gaussian_blur(images, rng.uniform(*BLUR_SIGMAS, size=count))
    amplitudes = rng.uniform(*GRATING_AMPLITUDES, size=count).reshape(-1, 1, 1, 1)
    gratings = amplitudes * colour_gratings(count, rng)
    # Near black or white, clip the grating evenly on both sides: one-sided clipping to 0..255 would
    # raise dark images and lower bright ones, a brightness cue.
    headroom = np.clip(np.minimum(images, 255 - images), 0, None)
    return images + np.clip(gratings, -headroom, headroom)


def finish(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add faint sensor-like noise and round to uint8: the same last step for both classes."""
    sigmas = rng.uniform(*NOISE_SIGMAS, size=len(images)).reshape(-1, 1, 1, 1)
    noisy = images + sigmas * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_split(photos: list[Image.Image], part: str, per_class: int, rng: np.random.Generator) -> Split:
    """`per_class` REAL and `per_class` FAKE images from the photos' `part` tiles, in a shuffled order."""
    _, real = detailed_crops(photos, part, per_class, rng)
    # Each FAKE crop is rendered at 32 px (its clean look) and at 16 px (what the "generator" upsamples).
    fake_crops, fake_clean = detailed_crops(photos, part, per_class, rng)
    fake = add_generator_traces(fake_clean, render_crops(photos, fake_crops, LOW_SIZE), rng)
    images = finish(np.concatenate([real, fake]), rng)
    labels = np.concatenate([np.full(per_class, REAL_LABEL), np.full(per_class, FAKE_LABEL)]).astype(np.int64)
    # Shuffled once so batches mix classes even without fit's own shuffling (as CIFAKE's splits are).
    order = rng.permutation(len(labels))
    return Split(images[order], labels[order])


def val_per_class(train_per_class: int, val_fraction: float) -> int:
    """Validation images per class held out of `train_per_class`: at least one, leaving at least one to train on."""
    check_val_fraction(val_fraction)
    if train_per_class < 2:
        raise DataError(f"data.train_per_class is {train_per_class}; the validation split needs at least 2 per class")
    return min(max(int(round(train_per_class * val_fraction)), 1), train_per_class - 1)


def load_demo(
    seed: int = 0, val_fraction: float = 0.1, train_per_class: int = 1200, test_per_class: int = 300
) -> Dataset:
    """The demo dataset, built in memory from the seed: same seed, same images.

    `val_fraction` of `train_per_class` is drawn from the validation tiles instead of the training ones.
    """
    val_count = val_per_class(train_per_class, val_fraction)  # fail before seconds of rendering
    photos = load_photos()
    # Train and test keep the first two streams they always had; validation draws from a third.
    train_rng, test_rng, val_rng = (np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(3))
    train = make_split(photos, "train", train_per_class - val_count, train_rng)
    test = make_split(photos, "test", test_per_class, test_rng)
    val = make_split(photos, "val", val_count, val_rng)
    return Dataset(name="demo", train=train, val=val, test=test, issues={})
