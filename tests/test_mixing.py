"""CutMix: patches and targets agree pixel for pixel, draws repeat per (seed, epoch), bad settings are refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from forgery import mixing
from forgery.config import ConfigError
from tests.conftest import TINY_DEMO, run_forgery


def numbered_images(count: int, side: int = 32) -> np.ndarray:
    """Image i is filled with the value i, so every output pixel tells which image it came from."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, side, side, 3)).copy()


def test_every_pixel_comes_from_the_image_or_its_partner_and_the_target_counts_them() -> None:
    count = 200
    images = numbered_images(count)
    labels = np.arange(count) % 2
    targets = np.eye(2, dtype="float32")[labels]
    mixed, mixed_targets = mixing.cutmix(images, targets, np.random.default_rng(3), prob=1.0, alpha=1.0)
    assert mixed.dtype == np.uint8 and mixed.shape == images.shape and mixed_targets.dtype == np.float32
    np.testing.assert_array_equal(images, numbered_images(count))  # inputs untouched
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-6)
    patched = 0
    for index in range(count):
        sources = np.unique(mixed[index])
        own = mixed[index] == index
        assert index in sources and len(sources) <= 2  # a patch never covers the whole image, and comes from one partner
        if len(sources) == 2:
            patched += 1
            partner = int(sources[sources != index][0])
            share = 1.0 - own[..., 0].mean()
            expected = (1.0 - share) * targets[index] + share * targets[partner]
            np.testing.assert_allclose(mixed_targets[index], expected, rtol=1e-5)
            rows, columns = np.nonzero(~own[..., 0])  # the pasted pixels form one rectangle
            assert (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1) == len(rows)
        else:
            np.testing.assert_array_equal(mixed_targets[index], targets[index])
    assert patched > 0.8 * count  # only a patch drawn tiny, or clipped away, leaves an image whole


def test_prob_sets_the_share_of_images_patched_and_zero_changes_nothing() -> None:
    count = 2000
    images = np.random.default_rng(0).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    targets = np.eye(2, dtype="float32")[np.arange(count) % 2]
    same, same_targets = mixing.cutmix(images, targets, np.random.default_rng(1), prob=0.0, alpha=1.0)
    assert same is images and same_targets is targets
    mixed, _ = mixing.cutmix(images, targets, np.random.default_rng(1), prob=0.3, alpha=1.0)
    changed = np.any(mixed != images, axis=(1, 2, 3)).mean()
    assert 0.25 < changed < 0.35  # 30% chosen (a rare patch is too small to cover a pixel)


def test_same_generator_same_patches_and_another_seed_others() -> None:
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    targets = np.eye(2, dtype="float32")[np.arange(64) % 2]
    first = mixing.cutmix(images, targets, np.random.default_rng([42, 5, 1]), 0.5, 1.0)
    again = mixing.cutmix(images, targets, np.random.default_rng([42, 5, 1]), 0.5, 1.0)
    other = mixing.cutmix(images, targets, np.random.default_rng([42, 6, 1]), 0.5, 1.0)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_partners_are_never_the_image_itself_and_each_is_used_once() -> None:
    partner = mixing.partners(500, np.random.default_rng(0))
    assert np.all(partner != np.arange(500))
    assert sorted(partner.tolist()) == list(range(500))


def test_patch_masks_clip_at_the_border() -> None:
    # kept 0.75: a patch of half the side (16 of 32); centred at the corner, a quarter of it (8x8) is inside.
    masks = mixing.patch_masks(np.array([0.75, 0.75]), np.array([0, 16]), np.array([0, 16]), 32, 32)
    assert masks[0].sum() == 64 and masks[0][:8, :8].all()
    assert masks[1].sum() == 256 and masks[1][8:24, 8:24].all()


def test_cutmix_refuses_mismatched_or_impossible_inputs() -> None:
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="4 images but 3 targets"):
        mixing.cutmix(images, np.zeros((3, 2), "float32"), np.random.default_rng(0), 0.5, 1.0)
    with pytest.raises(ValueError, match="prob in"):
        mixing.cutmix(images, np.zeros((4, 2), "float32"), np.random.default_rng(0), 1.5, 1.0)


def test_epoch_arrays_repeat_per_epoch_and_mix_only_when_asked() -> None:
    from forgery.train import epoch_arrays

    images = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    targets = np.eye(2, dtype="float32")[np.arange(100) % 2]
    cfg = OmegaConf.create({"seed": 42, "cutmix": {"prob": 0.5, "alpha": 1.0}})
    first, first_targets = epoch_arrays(images, targets, cfg, 3)
    again, again_targets = epoch_arrays(images, targets, cfg, 3)  # as a resumed run would draw epoch 3
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_targets, again_targets)
    assert np.any((first_targets > 0) & (first_targets < 1))  # some targets mixed
    plain, plain_targets = epoch_arrays(images, targets, OmegaConf.create({"seed": 42}), 3)  # an older run's config: no cutmix
    order = np.random.default_rng([42, 3]).permutation(100)
    np.testing.assert_array_equal(plain, images[order])
    np.testing.assert_array_equal(plain_targets, targets[order])
    # CutMix only pastes into the epoch's order: an image left whole sits where the plain epoch puts it.
    whole = np.all(first == plain, axis=(1, 2, 3))
    assert 0.3 < whole.mean() < 0.7


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["cutmix.prob=1.5"], "cutmix.prob must be in [0, 1] (the share of training images given a patch; 0 = off), got 1.5"),
        (["cutmix.prob=-0.1"], "cutmix.prob must be in [0, 1]"),
        (["cutmix.prob=half"], "cutmix.prob must be a number, got 'half'"),
        (["cutmix.prob=0.5", "cutmix.alpha=0"], "cutmix.alpha must be above 0 (the patch's area share follows Beta(alpha, alpha)), got 0"),
    ],
)
def test_config_refuses_bad_cutmix_settings(compose_train, overrides: list[str], expected: str) -> None:
    from forgery.config import validate

    with pytest.raises(ConfigError) as error:
        validate(compose_train(*overrides))
    assert expected in str(error.value)


def test_alpha_is_not_checked_while_cutmix_is_off(compose_train) -> None:
    from forgery.config import validate

    validate(compose_train("cutmix.alpha=0"))


def test_a_bad_cutmix_setting_stops_training_in_one_line(tmp_path: Path) -> None:
    result = run_forgery("train", "cutmix.prob=2", *TINY_DEMO, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: cutmix.prob must be in [0, 1] (the share of training images given a patch; 0 = off), got 2"], result.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_run_trains_with_cutmix_and_logs_it(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    result = run_forgery("train", *TINY_DEMO, "epochs=2", "cutmix.prob=0.5", "evidence.robustness_images=100", "evidence.gradcam_checks_per_class=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    assert run.data.params["cutmix.prob"] == "0.5" and run.data.params["cutmix.alpha"] == "1.0"
    # Training metrics read each mixed target's larger share as its label, so they stay within [0, 1].
    assert [point.step for point in client.get_metric_history(run.info.run_id, "accuracy")] == [1, 2]
    assert 0.0 <= run.data.metrics["auc"] <= 1.0 and 0.0 <= run.data.metrics["accuracy"] <= 1.0
