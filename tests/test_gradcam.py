"""Grad-CAM against an independent closed-form computation, plus its display helpers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from forgery.augment import build_augmentation
from forgery.gradcam import Grid, cut_model, heatmap_from_gradients, make_gradcam_heatmap, overlay, pick_examples, placed, upscaled
from forgery.models import CLASSIFIER_LAYER, FEATURES_LAYER, cnn, inference_graph, load, resnet, tta_view


def conv_gap_dense_model() -> keras.Model:
    """pixels -> Conv2D(4, relu) -> GAP -> Dense(2, softmax): Grad-CAM has a closed form here."""
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(4, 3, padding="valid", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=CLASSIFIER_LAYER)(pooled))


def numpy_conv_relu(image: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid' 2-D convolution + ReLU written out with loops, independent of Keras."""
    size = kernel.shape[0]
    out = np.zeros((image.shape[0] - size + 1, image.shape[1] - size + 1, kernel.shape[-1]))
    for row in range(out.shape[0]):
        for column in range(out.shape[1]):
            patch = image[row : row + size, column : column + size, :]
            out[row, column] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    return np.maximum(out, 0.0)


@pytest.mark.parametrize("target", [0, 1])
def test_heatmap_matches_the_closed_form_of_the_logit(target: int) -> None:
    keras.utils.set_random_seed(3)
    model = conv_gap_dense_model()
    image = np.random.default_rng(4).uniform(0, 1, (8, 8, 3)).astype("float32")
    kernel, bias = (np.asarray(weight) for weight in model.get_layer("conv").get_weights())
    dense_kernel = np.asarray(model.get_layer(CLASSIFIER_LAYER).get_weights()[0])
    maps = numpy_conv_relu(image.astype("float64"), kernel, bias)
    # d logit / d maps = dense_kernel[:, target] / (h*w) everywhere, so the channel weights are that vector / (h*w).
    expected = np.maximum(maps @ (dense_kernel[:, target] / (maps.shape[0] * maps.shape[1])), 0.0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    heatmap = make_gradcam_heatmap(cut_model(model), image, target)
    np.testing.assert_allclose(heatmap, expected, atol=1e-4)


def test_softmax_gradients_would_give_a_different_map() -> None:
    """Guards the 'logit, not softmax' choice: on a confident prediction the softmax map differs."""
    keras.utils.set_random_seed(5)
    model = conv_gap_dense_model()
    image = np.random.default_rng(6).uniform(0, 1, (8, 8, 3)).astype("float32")
    cut = cut_model(model)
    maps = np.asarray(cut.body(image[None], training=False))[0]
    dense_kernel, _ = model.get_layer(CLASSIFIER_LAYER).get_weights()
    probabilities = np.asarray(model(image[None], training=False))[0]
    # d p0 / d maps = p0 * p1 * (W0 - W1) / (h*w): proportional to the logit difference, not the logit.
    softmax_weights = probabilities[0] * probabilities[1] * (dense_kernel[:, 0] - dense_kernel[:, 1])
    softmax_map = heatmap_from_gradients(maps, np.broadcast_to(softmax_weights, maps.shape))
    assert not np.allclose(make_gradcam_heatmap(cut, image, 0), softmax_map, atol=1e-3)


def test_works_with_the_augmentation_block_inside_the_model() -> None:
    keras.utils.set_random_seed(7)
    plain = cnn("small", [32, 64, 128])
    augmented = cnn("small", [32, 64, 128], augmentation=build_augmentation("light", "horizontal", 0.1, 0.1))
    augmented.set_weights(plain.get_weights())  # the augmentation block has no weights
    image = np.random.default_rng(8).integers(0, 256, (32, 32, 3)).astype("uint8")
    for target in (0, 1):
        with_block = make_gradcam_heatmap(cut_model(augmented), image, target)
        assert with_block.shape == (4, 4)  # conv3's grid with 'valid' padding: 32 -> 30 -> 15 -> 13 -> 6 -> 4
        assert with_block.min() >= 0.0 and with_block.max() <= 1.0
        np.testing.assert_allclose(with_block, make_gradcam_heatmap(cut_model(plain), image, target), atol=1e-5)


@pytest.mark.parametrize("target", [0, 1])
def test_a_branch_beside_the_convolutions_leaves_the_closed_form_of_the_maps(target: int) -> None:
    # The frequency branch joins the pooled features; d logit / d maps is still the pooled features'
    # classifier rows over the grid size, whatever the branch contributes.
    keras.utils.set_random_seed(11)
    model = resnet("spectral", [4, 8], 1, highpass=True, spectrum_units=3)
    image = np.random.default_rng(12).integers(0, 256, (32, 32, 3)).astype("float32")
    cut = cut_model(model)
    assert cut.layer_name == FEATURES_LAYER
    maps = np.asarray(cut.body(image[None], training=False)[0])[0]
    kernel, _ = model.get_layer(CLASSIFIER_LAYER).get_weights()
    expected = np.maximum(maps @ (kernel[: maps.shape[-1], target] / (maps.shape[0] * maps.shape[1])), 0.0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(make_gradcam_heatmap(cut, image, target), expected, atol=1e-4)


def test_cutting_a_served_view_leaves_it_savable(tmp_path) -> None:
    # What predict and training do: explain the served view (inference graph, mirror average), then save it.
    view = tta_view(inference_graph(resnet("spectral", [4, 8], 1, highpass=True, spectrum_units=3)), "flip")
    image = np.random.default_rng(13).integers(0, 256, (32, 32, 3)).astype("float32")
    heatmap = make_gradcam_heatmap(cut_model(view), image, 0)
    assert heatmap.shape == (16, 16)
    view.save(tmp_path / "view.keras")
    np.testing.assert_allclose(load(tmp_path / "view.keras").predict(image[None], verbose=0), view.predict(image[None], verbose=0), atol=1e-6)


def test_no_positive_evidence_gives_an_all_zero_map() -> None:
    maps = np.ones((2, 2, 3), dtype="float32")
    assert not heatmap_from_gradients(maps, -np.ones_like(maps)).any()


def test_overlay_and_upscale_shapes_and_blend() -> None:
    image = np.full((32, 32, 3), 100, dtype="uint8")
    assert upscaled(image, 4).shape == (128, 128, 3)
    cold = overlay(image, np.zeros((4, 4), dtype="float32"), upscale=8, alpha=0.5)
    hot = overlay(image, np.ones((4, 4), dtype="float32"), upscale=8, alpha=0.5)
    assert cold.shape == hot.shape == (256, 256, 3) and cold.dtype == np.uint8
    assert hot[..., 0].mean() > cold[..., 0].mean()  # 'jet' is red where the heatmap is hot, blue where cold
    assert cold[..., 2].mean() > hot[..., 2].mean()


def receptive_field_centres(model: keras.Model) -> list[float]:
    """Per row of the Grad-CAM grid, the centre of the image rows that reach it (from gradients: no formula)."""
    import tensorflow as tf

    cut = cut_model(model)
    pixels = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32"))
    centres = []
    for row in range(int(cut.body(pixels).shape[1])):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(cut.body(pixels, training=False)[0, row])
        reached = np.flatnonzero(np.abs(tape.gradient(total, pixels).numpy()[0]).sum(axis=(1, 2)) > 0)
        centres.append((reached.min() + reached.max()) / 2)
    return centres


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients taken with TensorFlow")
def test_the_grid_is_where_the_cells_look() -> None:
    # The seed's unpadded convolutions trim the border: its 4x4 grid looks at rows 8.5 to 20.5, not 4 to 28.
    small = cnn("small", [32, 64, 128], padding="valid", augmentation=build_augmentation("light", "horizontal", 0.1, 0.1))
    assert cut_model(small).grid == Grid((8.5, 8.5), (4.0, 4.0))
    assert receptive_field_centres(small) == [8.5, 12.5, 16.5, 20.5]
    # through a test-time view and with "same" padding (whose border cells' fields are cut off by the image edge)
    padded = tta_view(inference_graph(cnn("small", [32, 64, 128], padding="same")), "flip")
    assert cut_model(padded).grid == Grid((1.5, 1.5), (4.0, 4.0))
    assert receptive_field_centres(padded)[2:6] == [9.5, 13.5, 17.5, 21.5]
    # residual networks: a strided 1x1 shortcut and a padded 3x3 convolution a pixel apart, averaged
    assert cut_model(resnet("resnet", [4, 8, 8], 1, highpass=True)).grid == Grid((1.5, 1.5), (4.0, 4.0))
    assert cut_model(resnet("resnet", [4, 8, 8], 1, full_resolution_stages=2, centre_colour=True)).grid == Grid((0.5, 0.5), (2.0, 2.0))


def test_a_cell_is_drawn_where_it_looks() -> None:
    hot = np.zeros((4, 4), dtype="float32")
    hot[0, 3] = 1.0
    grid = Grid((8.5, 8.5), (4.0, 4.0))
    spread = placed(hot, (32, 32), 1, grid)
    assert spread.shape == (32, 32) and spread.dtype == np.float32
    assert spread.max() == pytest.approx(1.0)
    peak = np.argwhere(spread == spread.max())
    assert set(peak[:, 0]) == {0, 1, 2, 3, 4, 5, 6, 7, 8} and set(peak[:, 1]) >= {21, 31}  # rows up to the centre 8.5, columns from 20.5 on
    assert spread[12, 20] == pytest.approx(0.125 * 0.875, abs=1e-6)  # linear between centres, both ways
    # evenly spread without a grid, as a resize would: the corner cell's centre at 3.5
    assert placed(hot, (32, 32))[3, 28] == pytest.approx(1.0) and placed(hot, (32, 32))[8, 28] < 1.0
    # the overlay draws it there too: red (hot in 'jet') at the cell's centre, blue in the far corner
    picture = overlay(np.full((32, 32, 3), 100, dtype="uint8"), hot, upscale=8, alpha=1.0, grid=grid)
    assert picture[8 * 8 + 4, 20 * 8 + 4, 0] > 200 and picture[31 * 8, 0, 2] > 100 and picture[31 * 8, 0, 0] < 50


def test_examples_are_one_per_class_and_seeded() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0])
    picked = pick_examples(labels, seed=1)
    assert sorted(picked) == [0, 1] and all(labels[index] == label for label, index in picked.items())
    assert picked == pick_examples(labels, seed=1)
