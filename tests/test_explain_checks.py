"""Grad-CAM checks: the randomised copy really differs where it should, and deletion/insertion on a toy
model whose evidence is known."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy.special import expit

from forgery.explain_checks import (
    area_under_curve,
    gradcam_check_metrics,
    gradcam_checks,
    perturbation_curves,
    randomisation_correlation,
    randomise_top_layers,
    sample_indices,
    top_layer_names,
    upsampled,
)
from forgery.models import cnn
from forgery.plots import perturbation_figure

REGION = (slice(0, 8), slice(0, 8))  # the toy model looks only at this 8x8 corner


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return cnn("tiny", [4, 8, 8])


def scrambled(model: keras.Model, seed: int) -> keras.Model:
    """The model with every weight set to random values, so a reset to initial values changes them too."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, weight.shape).astype(weight.dtype) for weight in model.get_weights()])
    return model


def test_top_layers_are_the_last_conv_block_and_the_classifier() -> None:
    assert top_layer_names(tiny_model()) == ["conv3", "batchnorm3", "classifier"]


def test_every_tower_of_an_ensemble_has_its_top_layers_reset() -> None:
    from forgery.models import resnet

    names = top_layer_names(resnet("towers", [4, 8], blocks_per_stage=1, towers=2))
    assert names == top_layer_names(resnet("towers", [4, 8], blocks_per_stage=1, towers=2))
    for tower in ("tower1_", "tower2_"):
        expected = {f"{tower}stage2_block1_shortcut", f"{tower}stage2_block1_conv2", f"{tower}final_batchnorm"}
        assert expected == {name for name in names if name.startswith(tower)}
    assert names[-1] == "classifier" and len(names) == 7
    single = top_layer_names(resnet("one", [4, 8], blocks_per_stage=1))
    assert set(single) == {"stage2_block1_shortcut", "stage2_block1_conv2", "final_batchnorm", "classifier"}


def test_a_last_block_s_shortcut_and_gate_are_reset_with_its_last_convolution() -> None:
    """Both branches of the last residual block feed the output without another convolution: both are reset,
    whatever order Keras lists them in; the block's first convolution, which feeds the second, is kept."""
    from forgery.models import resnet

    for squeeze_excite in (0, 4):
        names = set(top_layer_names(resnet("last", [4, 8, 16], blocks_per_stage=[2, 2, 1], squeeze_excite=squeeze_excite)))
        gate = {"stage3_block1_se_reduce", "stage3_block1_se_expand"} if squeeze_excite else set()
        assert names == {"stage3_block1_conv2", "stage3_block1_shortcut", "final_batchnorm", "classifier"} | gate
    spectral = top_layer_names(resnet("spectral", [4, 8], blocks_per_stage=2, highpass=True, spectrum_units=8))
    assert spectral == ["stage2_block2_conv2", "final_batchnorm", "spectrum_batchnorm", "spectrum_dense", "classifier"]


def test_randomisation_resets_the_top_layers_only_and_leaves_the_original_alone() -> None:
    model = scrambled(tiny_model(), seed=1)
    before = {layer.name: [np.array(weight) for weight in layer.get_weights()] for layer in model.layers}
    randomised = randomise_top_layers(model, seed=7)
    top = set(top_layer_names(model))
    for layer in model.layers:
        original = [np.array(weight) for weight in layer.get_weights()]
        for kept, now in zip(before[layer.name], original):
            np.testing.assert_array_equal(kept, now)  # the trained model is untouched
        copies = randomised.get_layer(layer.name).get_weights()
        for weight, copy in zip(original, copies):
            if layer.name in top:
                assert not np.allclose(weight, copy), f"{layer.name} kept a trained weight"
            else:
                np.testing.assert_array_equal(weight, copy)
    assert sum(1 for layer in model.layers if layer.name in top) == 3


def test_randomisation_is_seeded() -> None:
    model = tiny_model()
    first = randomise_top_layers(model, seed=3).get_layer("classifier").get_weights()[0]
    again = randomise_top_layers(model, seed=3).get_layer("classifier").get_weights()[0]
    other = randomise_top_layers(model, seed=4).get_layer("classifier").get_weights()[0]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_rank_correlation_and_constant_maps() -> None:
    ramp = np.arange(16, dtype="float32").reshape(1, 4, 4) / 15
    flat = np.zeros((1, 4, 4), dtype="float32")
    assert randomisation_correlation(ramp, ramp)["mean"] == pytest.approx(1.0)
    assert randomisation_correlation(ramp, ramp[:, ::-1, ::-1])["mean"] == pytest.approx(-1.0)
    # Rank correlation ignores any monotone rescaling.
    assert randomisation_correlation(ramp, ramp**3)["mean"] == pytest.approx(1.0)
    mixed = randomisation_correlation(np.concatenate([ramp, ramp]), np.concatenate([ramp, flat]))
    assert mixed == {"mean": pytest.approx(1.0), "compared": 1, "constant": 1}
    assert randomisation_correlation(flat, flat) == {"mean": None, "compared": 0, "constant": 1}


def region_model(images: np.ndarray) -> np.ndarray:
    """P(REAL) rises with the brightness of the corner REGION and ignores every other pixel."""
    brightness = images[:, REGION[0], REGION[1], :].astype("float64").mean(axis=(1, 2, 3)) / 255.0
    real = expit(20.0 * (brightness - 0.5))
    return np.stack([1.0 - real, real], axis=1)


def corner_map(rows: slice, columns: slice, count: int) -> np.ndarray:
    saliency = np.zeros((count, 32, 32))
    saliency[:, rows, columns] = 1.0
    return saliency


def toy_images(count: int) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3)).astype("uint8")
    images[:, REGION[0], REGION[1], :] = 255  # a bright corner: the toy model says REAL with confidence
    return images


def test_deletion_and_insertion_reward_the_map_that_marks_the_evidence() -> None:
    count, steps = 4, 16
    images = toy_images(count)
    baselines = np.zeros_like(images)
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return region_model(batch)

    orderings = {
        "right": corner_map(*REGION, count),
        "inverted": 1.0 - corner_map(*REGION, count),  # marks every pixel but the evidence
        "random": np.random.default_rng(1).random((count, 32, 32)),
    }
    curves = perturbation_curves(predict, images, baselines, orderings, np.ones(count, dtype=int), steps, np.random.default_rng(2))
    assert calls == [len(orderings) * 2 * (steps + 1) * count]  # one batched call for everything
    assert all(curve.shape == (count, steps + 1) for curve in curves.values())
    areas = {name: area_under_curve(curve) for name, curve in curves.items()}
    # The corner is 64 pixels = the first step: deleting it first drops P(REAL) at once, inserting it raises it at once.
    assert areas["deletion_right"] < 0.1 < 0.3 < areas["deletion_random"]
    assert areas["insertion_right"] > 0.9 > 0.7 > areas["insertion_random"]
    # A map that points away from the evidence does worse than random: the check tells the two apart.
    assert areas["deletion_inverted"] > 0.9 and areas["insertion_inverted"] < 0.1
    start, end = region_model(images)[:, 1], region_model(baselines)[:, 1]
    for ordering in orderings:
        np.testing.assert_allclose(curves[f"deletion_{ordering}"][:, 0], start)
        np.testing.assert_allclose(curves[f"deletion_{ordering}"][:, -1], end)
        np.testing.assert_allclose(curves[f"insertion_{ordering}"][:, 0], end)
        np.testing.assert_allclose(curves[f"insertion_{ordering}"][:, -1], start)


def test_curves_follow_the_explained_class() -> None:
    images = toy_images(2)
    orderings = {"right": corner_map(*REGION, 2)}
    real = perturbation_curves(region_model, images, np.zeros_like(images), orderings, np.array([1, 1]), 4, np.random.default_rng(0))
    fake = perturbation_curves(region_model, images, np.zeros_like(images), orderings, np.array([0, 0]), 4, np.random.default_rng(0))
    np.testing.assert_allclose(real["deletion_right"] + fake["deletion_right"], 1.0)


def test_area_under_curve_is_the_trapezoid_rule_on_zero_to_one() -> None:
    assert area_under_curve(np.ones((2, 5))) == pytest.approx(1.0)
    assert area_under_curve(np.linspace(1.0, 0.0, 9)[None]) == pytest.approx(0.5)
    assert area_under_curve(np.array([[0.0, 1.0, 1.0]])) == pytest.approx(0.75)


def test_heatmaps_are_upsampled_to_the_image_size_in_place() -> None:
    heatmap = np.array([[0.0, 1.0], [0.0, 0.0]], dtype="float32")
    big = upsampled(heatmap, (32, 32))
    assert big.shape == (32, 32) and big.dtype == np.float32
    assert big[0, 31] == pytest.approx(1.0) and big[31, 0] == pytest.approx(0.0)  # the hot cell stays top right
    assert big[:16, 16:].mean() > big[16:, :16].mean()


def test_pixels_are_ranked_by_the_heatmap_drawn_where_its_cells_look(monkeypatch: pytest.MonkeyPatch) -> None:
    # The seed's unpadded 4x4 grid looks at image rows 8.5-20.5: the deletion order must rank pixels by it
    # there, as the overlays draw it, not by the map stretched over the image.
    from forgery import explain_checks
    from forgery.gradcam import cut_model, placed

    model = cnn("small", [4, 8, 8], padding="valid")
    images = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    labels = np.array([0, 1])
    seen = {}
    real_curves = explain_checks.perturbation_curves

    def recording(predict, images, baselines, orderings, class_indices, steps, rng):  # noqa: ANN001, ANN202
        seen.update(orderings)
        return real_curves(predict, images, baselines, orderings, class_indices, steps, rng)

    monkeypatch.setattr(explain_checks, "perturbation_curves", recording)
    explain_checks.gradcam_checks(model, images, labels, seed=3, steps=4)
    grid = cut_model(model).grid
    expected = np.stack([placed(heatmap, (32, 32), 1, grid) for heatmap in explain_checks.gradcam_heatmaps(model, images, labels)])
    np.testing.assert_allclose(seen["gradcam"], expected, atol=1e-6)


def test_gradcam_checks_report_and_metrics() -> None:
    model = tiny_model()
    images = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    labels = np.array([0, 1, 0, 1, 0, 1])
    checks = gradcam_checks(model, images, labels, seed=3, steps=4)
    json.dumps(checks, allow_nan=False)  # becomes report/gradcam_checks.json as it is
    assert checks["images"] == 6 and checks["images_per_class"] == {"FAKE": 3, "REAL": 3}
    assert checks["randomisation"]["reinitialised_layers"] == ["conv3", "batchnorm3", "classifier"]
    randomisation = checks["randomisation"]
    assert randomisation["compared_pairs"] + randomisation["pairs_with_a_constant_map"] == 6
    assert len(checks["perturbation"]["fraction"]) == 5
    for name, check in checks["checks"].items():
        assert check["meaning"].endswith(".")
        if name.endswith("auc") or name.endswith("random"):
            assert 0.0 <= check["value"] <= 1.0
    metrics = gradcam_check_metrics(checks)
    assert set(metrics) <= {
        "gradcam_randomisation_spearman",
        "gradcam_deletion_auc",
        "gradcam_deletion_auc_random",
        "gradcam_insertion_auc",
        "gradcam_insertion_auc_random",
    }
    assert metrics["gradcam_deletion_auc"] == checks["checks"]["deletion_auc"]["value"]
    assert gradcam_checks(model, images, labels, seed=3, steps=4)["checks"] == checks["checks"]  # seeded
    # Per class: the pooled area is the mean of the two (three images each), and the baseline's probability
    # is where each class's deletion curve ends.
    perturbation = checks["perturbation"]
    for name, pooled in perturbation["areas"].items():
        assert pooled == pytest.approx(np.mean([perturbation["areas_per_class"][label][name] for label in ("FAKE", "REAL")]))
    assert perturbation["areas_per_class"]["FAKE"] != perturbation["areas_per_class"]["REAL"]
    ends = {label: perturbation["baseline_probability_per_class"][label] for label in ("FAKE", "REAL")}
    assert np.mean(list(ends.values())) == pytest.approx(perturbation["mean_curves"]["deletion_gradcam"][-1], abs=1e-5)
    assert np.mean(list(ends.values())) == pytest.approx(perturbation["mean_curves"]["deletion_random"][-1], abs=1e-5)
    from forgery.explain_checks import BASELINE_BLUR_SIGMA
    from forgery.robustness import gaussian_blur

    on_baseline = model.predict(gaussian_blur(images, BASELINE_BLUR_SIGMA), verbose=0)[np.arange(6), labels]
    assert ends == pytest.approx({"FAKE": on_baseline[labels == 0].mean(), "REAL": on_baseline[labels == 1].mean()}, abs=1e-5)


def test_sample_indices_are_balanced_seeded_and_capped() -> None:
    labels = np.array([0] * 10 + [1] * 3)
    picked = sample_indices(labels, per_class=4, seed=1)
    assert list(labels[picked]) == [0] * 4 + [1] * 3
    assert len(set(picked.tolist())) == 7
    np.testing.assert_array_equal(picked, sample_indices(labels, per_class=4, seed=1))
    assert not np.array_equal(picked, sample_indices(labels, per_class=4, seed=2))


def test_perturbation_figure_draws_both_orderings_of_both_curves() -> None:
    from matplotlib import pyplot as plt

    fraction = [0.0, 0.5, 1.0]
    names = ("deletion_gradcam", "deletion_random", "insertion_gradcam", "insertion_random")
    curves = {name: [0.9, 0.5 + position / 10, 0.1] for position, name in enumerate(names)}
    figure = perturbation_figure(fraction, curves, {name: 0.5 for name in names})
    assert [len(axes.lines) for axes in figure.axes] == [2, 2]
    assert list(figure.axes[1].lines[1].get_ydata()) == curves["insertion_random"]
    plt.close(figure)
