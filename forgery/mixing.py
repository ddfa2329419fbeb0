"""CutMix: a patch of one training image pasted into another, the target mixed by the patch's area.

Each chosen image receives a rectangle cut from a partner image (another image of the same epoch) at the
same place; its target becomes (1 - s) of its own plus s of the partner's, s the share of pixels pasted.
Every pixel keeps a value some training image really has, so unlike mixup, which averages two images,
no generator trace is blended away; the network has to judge from whatever region it is shown, and can
no longer memorise an image whole. Yun et al., "CutMix", ICCV 2019: the patch's area follows
Beta(alpha, alpha) and its centre is uniform over the image, so near the border part of it falls outside.

The draws come from the generator the caller passes (forgery.train seeds it from the run seed and the
epoch), so a resumed run pastes the same patches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def cutmix(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, prob: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets) with a share `prob` of the images given a partner's patch; the inputs are left unchanged.

    `images` (N, H, W, C) of any dtype, `targets` (N, classes) float. With `prob` 0, or fewer than
    two images, the inputs come back as they are.
    """
    if images.shape[0] != targets.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
    if not 0.0 <= prob <= 1.0 or alpha <= 0.0:
        raise ValueError(f"cutmix needs prob in [0, 1] and alpha above 0, got prob={prob:g}, alpha={alpha:g}")
    count, height, width = images.shape[:3]
    if prob == 0.0 or count < 2:
        return images, targets
    # Drawn in a fixed order and amount whatever `prob` is, so two runs differ only in which images are chosen.
    chosen = rng.random(count) < prob
    partner = partners(count, rng)
    kept = rng.beta(alpha, alpha, count)  # the share of the image the paper keeps before the patch is clipped
    inside = patch_masks(kept, rng.integers(0, height, count), rng.integers(0, width, count), height, width) & chosen[:, None, None]
    pasted = inside.mean(axis=(1, 2), dtype="float64").astype(targets.dtype)[:, None]
    mixed_images = np.where(inside[..., None], images[partner], images)
    mixed_targets = (1.0 - pasted) * targets + pasted * targets[partner]
    return mixed_images, mixed_targets


def partners(count: int, rng: np.random.Generator) -> np.ndarray:
    """A partner index for each of `count` images, never the image itself: a random cyclic order, each taking the next one's."""
    cycle = rng.permutation(count)
    partner = np.empty(count, dtype=np.int64)
    partner[cycle] = np.roll(cycle, -1)
    return partner


def patch_masks(kept: np.ndarray, centre_rows: np.ndarray, centre_columns: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, height, width) booleans: each image's rectangle of side sqrt(1 - kept) times the image's, at its centre, clipped to the image."""
    side = np.sqrt(1.0 - kept)
    patch_rows, patch_columns = (side * height).astype(np.int64), (side * width).astype(np.int64)
    top, left = centre_rows - patch_rows // 2, centre_columns - patch_columns // 2
    rows = np.arange(height)[None, :, None]
    columns = np.arange(width)[None, None, :]
    in_rows = (rows >= top[:, None, None]) & (rows < (top + patch_rows)[:, None, None])
    in_columns = (columns >= left[:, None, None]) & (columns < (left + patch_columns)[:, None, None])
    return in_rows & in_columns
