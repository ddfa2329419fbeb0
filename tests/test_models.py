"""Model factories: the seed architecture's exact size, the larger option, and the model card's summary."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest

from forgery.augment import build_augmentation
from forgery.gradcam import cut_model, make_gradcam_heatmap
from forgery.metrics import LabelAUC
from forgery.models import architecture_summary, assemble_towers, cnn, inference_graph, last_conv_layer, resnet, single_view, tta_view


def seed_model(fused: bool = False) -> keras.Model:
    """The seed notebook's model: with `fused=False`, its augmentation as Keras's three separate layers."""
    return cnn("small", [32, 64, 128], augmentation=build_augmentation("light", "horizontal", 0.1, 0.1, fused=fused))


def test_small_is_the_seed_architecture_with_94402_parameters() -> None:
    model = seed_model()
    assert model.count_params() == 94_402
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == [
        "Rescaling", "Sequential",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "GlobalAveragePooling2D", "Dropout", "Dense",
    ]  # fmt: skip
    assert [type(layer).__name__ for layer in model.layers[2].layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]
    fused = seed_model(fused=True)
    assert fused.count_params() == 94_402
    assert [type(layer).__name__ for layer in fused.layers[2].layers] == ["RandomAffine"]


def test_wide_is_larger() -> None:
    assert cnn("wide", [64, 128, 256], padding="same").count_params() == 373_122


def test_resnet_takes_one_block_count_per_stage() -> None:
    deeper = resnet("resnet", [8, 16, 32], blocks_per_stage=[3, 1, 2])
    blocks = sorted({layer.name.rsplit("_", 1)[0] for layer in deeper.layers if layer.name.endswith("_add")})
    assert blocks == ["stage1_block1", "stage1_block2", "stage1_block3", "stage2_block1", "stage3_block1", "stage3_block2"]
    # one count for every stage builds what the same list of equal counts builds
    assert resnet("resnet", [8, 16, 32], blocks_per_stage=2).count_params() == resnet("resnet", [8, 16, 32], blocks_per_stage=[2, 2, 2]).count_params()
    with pytest.raises(ValueError, match="blocks_per_stage has 2 counts for 3 stages"):
        resnet("resnet", [8, 16, 32], blocks_per_stage=[2, 2])


def test_squeeze_excite_adds_one_gate_per_block_and_the_gate_scales_the_branch() -> None:
    widths, reduction = [8, 16, 32], 4
    plain = resnet("resnet", widths, blocks_per_stage=2)
    gated = resnet("resnet", widths, blocks_per_stage=2, squeeze_excite=reduction)
    per_block = [2 * width * (width // reduction) + width // reduction + width for width in widths]
    assert gated.count_params() - plain.count_params() == 2 * sum(per_block)
    # a closed gate (sigmoid of a huge negative bias) removes the residual branch: the block passes its input on
    expand = gated.get_layer("stage1_block2_se_expand")
    kernel, bias = expand.get_weights()
    expand.set_weights([np.zeros_like(kernel), np.full_like(bias, -1e4)])
    probe = keras.Model(gated.inputs, [gated.get_layer("stage1_block1_add").output, gated.get_layer("stage1_block2_add").output])
    block_input, block_output = probe(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(np.asarray(block_output), np.asarray(block_input), atol=1e-6)
    with pytest.raises(ValueError, match="squeeze_excite must be 0"):
        resnet("resnet", widths, squeeze_excite=-1)


def test_drop_path_drops_whole_residual_branches_in_training_only_at_rising_rates() -> None:
    widths = [8, 16, 16]
    plain = resnet("resnet", widths, blocks_per_stage=2, highpass=True)
    deep = resnet("resnet", widths, blocks_per_stage=2, highpass=True, drop_path=0.3)
    assert deep.count_params() == plain.count_params()  # Dropout layers: no weights
    rates = [layer.rate for layer in deep.layers if layer.name.endswith("_drop_path")]
    np.testing.assert_allclose(rates, [0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    summary = architecture_summary(deep)
    assert "DropPath(0.05)" in summary and "DropPath(0.3) -> Add" in summary and summary.endswith("Dropout(0.3) -> Dense(2, softmax)")
    for layer in plain.layers:
        deep.get_layer(layer.name).set_weights(layer.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype("float32")
    # at inference it is the same network
    np.testing.assert_allclose(np.asarray(deep(pixels, training=False)), np.asarray(plain(pixels, training=False)), atol=1e-6)
    # in training each image's branch is either dropped whole (the block passes its input on) or kept and scaled
    last = deep.get_layer("stage3_block2_drop_path")
    probe = keras.Model(deep.inputs, [last.input, last.output])
    branch, dropped = (np.asarray(tensor) for tensor in probe(pixels, training=True))
    zeroed = np.all(dropped == 0, axis=(1, 2, 3))
    assert 0 < zeroed.sum() < len(pixels)
    np.testing.assert_allclose(dropped[~zeroed], branch[~zeroed] / (1 - 0.3), rtol=1e-5, atol=1e-6)
    for wrong in (-0.1, 1.0):
        with pytest.raises(ValueError, match="drop_path must be from 0"):
            resnet("resnet", widths, drop_path=wrong)


def test_model_maps_raw_pixels_to_probabilities() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    probabilities = seed_model().predict(pixels, verbose=0)
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_augmentation_is_inert_at_inference(fused: bool) -> None:
    model = seed_model(fused)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(pixels, training=False), model(pixels, training=False))


def test_inference_graph_predicts_the_same_with_keras_layers_only() -> None:
    model = seed_model(fused=True)
    served = inference_graph(model)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    np.testing.assert_array_equal(served.predict(pixels, verbose=0), model.predict(pixels, verbose=0))
    assert "forgery" not in json.dumps(served.get_config())  # loads wherever Keras does, without forgery's layers
    assert [layer.name for layer in served.layers] == [layer.name for layer in model.layers]
    assert all(mine is theirs for mine, theirs in zip(served.weights, model.weights))  # shared, not copied
    plain = cnn("plain", [8])
    plain.compile(optimizer="adam", loss="categorical_crossentropy", metrics=[LabelAUC(name="auc", multi_label=True, num_labels=2)])
    graph = inference_graph(plain)  # nothing to replace, but compiled: the graph handed out is not
    assert not graph.compiled and not graph.get_compile_config()  # its file names no forgery metric
    assert all(mine is theirs for mine, theirs in zip(graph.weights, plain.weights))


def test_no_augmentation_when_every_option_is_off() -> None:
    assert build_augmentation("none", None, 0.0, 0.0) is None


def test_architecture_summary_reads_like_the_seed() -> None:
    summary = architecture_summary(seed_model())
    assert summary.startswith("Rescaling -> Augmentation(RandomFlip, RandomRotation, RandomZoom) -> Conv2D(32, 3x3, relu)")
    assert summary.endswith("GlobalAveragePooling2D -> Dropout(0.5) -> Dense(2, softmax)")


@pytest.mark.parametrize("factory", ["cnn", "highpass_resnet"])
def test_a_colour_centred_model_cannot_see_a_constant_shift_of_any_channel(factory: str) -> None:
    def build(centre: bool) -> keras.Model:
        keras.utils.set_random_seed(3)
        if factory == "cnn":
            return cnn("small", [8, 16], padding="same", centre_colour=centre)
        return resnet("highpass_resnet", [8, 16], blocks_per_stage=1, highpass=True, spectrum_units=4, centre_colour=centre)

    pixels = np.random.default_rng(4).integers(40, 200, (6, 32, 32, 3)).astype("float32")
    shifted = pixels + np.array([30.0, -25.0, 12.0], dtype="float32")  # no pixel leaves 0-255
    centred, plain = build(True), build(False)
    assert centred.count_params() == plain.count_params()  # two weightless layers
    np.testing.assert_allclose(centred.predict(shifted, verbose=0), centred.predict(pixels, verbose=0), atol=1e-4)  # float32 rounding of the mean
    assert np.abs(plain.predict(shifted, verbose=0) - plain.predict(pixels, verbose=0)).max() > 4e-4  # what it takes away (untrained: small)
    assert architecture_summary(centred).startswith("Rescaling -> CentreColour -> ")
    added = [type(centred.get_layer(name)) for name in ("mean_colour", "centre_colour")]
    assert all(kind.__module__.startswith("keras.") for kind in added)  # Keras's own layers: a saved model loads without forgery


def test_last_conv_layer_is_found_and_missing_one_is_an_error() -> None:
    assert last_conv_layer(seed_model()).name == "conv3"
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no top-level Conv2D"):
        last_conv_layer(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def test_flip_view_averages_the_image_and_its_mirror_with_keras_layers_only(tmp_path) -> None:
    keras.utils.set_random_seed(3)
    model = inference_graph(seed_model(fused=True))
    view = tta_view(model, "flip")
    pixels = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3)).astype("uint8")
    single = model.predict(pixels, verbose=0)
    mirrored = model.predict(pixels[:, :, ::-1], verbose=0)
    assert np.abs(single - mirrored).max() > 1e-4  # an untrained model is not mirror-symmetric: the average shows
    averaged = view.predict(pixels, verbose=0)
    np.testing.assert_allclose(averaged, (single + mirrored) / 2, atol=1e-6)
    assert [id(weight) for weight in view.trainable_weights] == [id(weight) for weight in model.trainable_weights]  # shared
    assert view.count_params() - model.count_params() == 32 * 32  # the mirror's frozen kernel, nothing else
    # Saved and reloaded in safe mode without forgery's layers: the same view, mirror included.
    assert "forgery" not in json.dumps(view.get_config())
    view.save(tmp_path / "view.keras")
    loaded = keras.saving.load_model(tmp_path / "view.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), averaged)


def test_dihedral_view_averages_all_eight_symmetries_with_keras_layers_only(tmp_path) -> None:
    keras.utils.set_random_seed(5)
    model = inference_graph(seed_model(fused=True))
    view = tta_view(model, "dihedral")
    pixels = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    symmetries = [np.rot90(pixels, turns, axes=(1, 2)) for turns in range(4)]
    symmetries += [image[:, :, ::-1] for image in symmetries]
    each = np.stack([model.predict(np.ascontiguousarray(image), verbose=0) for image in symmetries])
    assert np.abs(each - each[0]).max() > 1e-4  # an untrained model is not symmetric: the average shows
    averaged = view.predict(pixels, verbose=0)
    np.testing.assert_allclose(averaged, each.mean(axis=0), atol=1e-6)
    assert [id(weight) for weight in view.trainable_weights] == [id(weight) for weight in model.trainable_weights]  # shared
    assert view.count_params() - model.count_params() == 2 * 32 * 32  # two frozen axis reversals, nothing else
    assert "forgery" not in json.dumps(view.get_config())
    view.save(tmp_path / "view.keras")
    loaded = keras.saving.load_model(tmp_path / "view.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), averaged)


def test_no_view_is_the_model_and_an_unknown_one_is_refused() -> None:
    model = cnn("plain", [8])
    assert tta_view(model, "none") is model
    assert single_view(model) is model
    with pytest.raises(ValueError, match="unknown test-time view 'rotate'"):
        tta_view(model, "rotate")


@pytest.mark.parametrize("tta", ["flip", "dihedral"])
def test_gradcam_explains_the_image_as_given_inside_a_view(tta: str) -> None:
    keras.utils.set_random_seed(4)
    model = cnn("tiny", [4, 8, 8])
    view = tta_view(model, tta)
    assert single_view(view) is model
    image = np.random.default_rng(4).integers(0, 256, (32, 32, 3)).astype("uint8")
    np.testing.assert_allclose(make_gradcam_heatmap(cut_model(view), image, 1), make_gradcam_heatmap(cut_model(model), image, 1))


def randomised(model: keras.Model, seed: int) -> keras.Model:
    """`model` with every weight drawn at random (variances positive), so two copies are different networks."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        drawn = rng.normal(0.0, 0.1, weight.shape)
        weight.assign((np.abs(drawn) + 0.5 if "variance" in weight.path else drawn).astype("float32"))
    return model


def logits(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """The classifier's pre-softmax outputs."""
    classifier = model.get_layer("classifier")
    features = keras.Model(model.inputs[0], classifier.input).predict(pixels, verbose=0)
    kernel, bias = classifier.get_weights()
    return features @ kernel + bias


def test_towers_assembled_from_members_average_their_logits() -> None:
    members = [randomised(resnet(f"member{seed}", [4, 8, 8], 1, highpass=True), seed) for seed in (1, 2)]
    ensemble = resnet("ensemble", [4, 8, 8], 1, highpass=True, towers=2)
    # each tower is a whole member network; one classifier reads both feature maps
    classifier_weights = members[0].get_layer("classifier").count_params()
    assert ensemble.count_params() == 2 * (members[0].count_params() - classifier_weights) + 2 * classifier_weights - 2
    assemble_towers(ensemble, members)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    expected = (logits(members[0], pixels) + logits(members[1], pixels)) / 2
    np.testing.assert_allclose(logits(ensemble, pixels), expected, atol=1e-4)
    assert not np.allclose(logits(members[0], pixels), logits(members[1], pixels), atol=1e-2)  # the check can fail


def test_towers_keep_the_single_network_names_and_refuse_zero() -> None:
    single = {layer.name for layer in resnet("one", [4, 8], 1).layers}
    assert {"stem", "stage1_block1_conv1", "final_batchnorm", "features"} <= single
    towers = {layer.name for layer in resnet("two", [4, 8], 1, towers=2).layers}
    assert {"tower1_stem", "tower2_stem", "tower2_stage2_block1_conv1", "tower1_features", "features"} <= towers
    assert "stem" not in towers
    with pytest.raises(ValueError, match="towers must be 1 or more, got 0"):
        resnet("none", [4, 8], 1, towers=0)


def test_gradcam_explains_the_stacked_towers() -> None:
    model = randomised(resnet("two", [4, 8, 8], 1, highpass=True, towers=2), 3)
    assert last_conv_layer(model).name == "features"
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype("uint8")
    heatmap = make_gradcam_heatmap(cut_model(model), image, 1)
    assert heatmap.shape == (8, 8)
    assert np.isfinite(heatmap).all() and heatmap.max() <= 1.0


def test_full_resolution_stages_keep_the_grid_with_the_same_weights_and_gradcam_follows() -> None:
    halved = resnet("resnet", [4, 8, 8], 1, highpass=True)
    kept = randomised(resnet("resnet", [4, 8, 8], 1, highpass=True, full_resolution_stages=2), 3)
    # only the strides change: the same weights, a feature grid one halving finer
    assert kept.count_params() == halved.count_params()
    assert halved.get_layer("features").output.shape[1:3] == (8, 8)
    assert kept.get_layer("features").output.shape[1:3] == (16, 16)
    assert resnet("resnet", [4, 8, 8], 1, full_resolution_stages=3).get_layer("features").output.shape[1:3] == (32, 32)
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3)).astype("uint8")
    heatmap = make_gradcam_heatmap(cut_model(kept), image, 1)
    assert heatmap.shape == (16, 16) and np.isfinite(heatmap).all()
    for wrong in (0, 4):
        with pytest.raises(ValueError, match=f"full_resolution_stages must be from 1 to the 3 stages, got {wrong}"):
            resnet("resnet", [4, 8, 8], 1, full_resolution_stages=wrong)


def test_towers_refuse_members_of_another_architecture_or_count() -> None:
    ensemble = resnet("ensemble", [4, 8], 1, towers=2)
    same = [resnet(f"member{index}", [4, 8], 1) for index in (1, 2)]
    with pytest.raises(ValueError, match="model 'ensemble' has 2 towers for 3 members"):
        assemble_towers(ensemble, [*same, resnet("member3", [4, 8], 1)])
    with pytest.raises(ValueError, match="member 'wider' layer 'stem' has other weight shapes than tower2_stem"):
        assemble_towers(ensemble, [same[0], resnet("wider", [6, 8], 1)])
    with pytest.raises(ValueError, match="member 'deeper' has a layer 'stage1_block2_bn1' that model 'ensemble' lacks"):
        assemble_towers(ensemble, [same[0], resnet("deeper", [4, 8], 2)])
    with pytest.raises(ValueError, match="model 'single' has 0 towers for 2 members"):
        assemble_towers(resnet("single", [4, 8], 1), same)



@pytest.mark.parametrize(
    ("ensemble_options", "member_options", "message"),
    [
        # layers the members lack would keep their random weights
        ({"blocks_per_stage": 2}, {}, "model 'ensemble' has layers no member has, tower1_stage1_block2_bn1, tower2_stage1_block2_bn1"),
        ({"squeeze_excite": 2}, {}, "model 'ensemble' has layers no member has, tower1_stage1_block1_se_"),
        # the same weight shapes, other strides
        ({}, {"full_resolution_stages": 2}, "member 'member1' layer 'stage2_block1_conv1' has other settings than tower1_stage2_block1_conv1"),
        # weightless layers before the trunk
        ({}, {"centre_colour": True}, "member 'member1' and model 'ensemble' differ before the trunk (centre_colour, mean_colour in one only)"),
        ({"highpass": True}, {"highpass": True, "centre_colour": True}, "differ before the trunk (centre_colour, mean_colour in one only)"),
    ],
)
def test_towers_refuse_members_that_differ_in_more_than_weight_shapes(ensemble_options: dict, member_options: dict, message: str) -> None:
    ensemble = resnet("ensemble", [4, 8], **{"blocks_per_stage": 1, **ensemble_options}, towers=2)
    # members are built as the ensemble's towers are, less what the ensemble adds, plus what they add
    shared = {key: value for key, value in ensemble_options.items() if key not in ("blocks_per_stage", "squeeze_excite")}
    members = [resnet(f"member{index}", [4, 8], **{"blocks_per_stage": 1, **shared, **member_options}) for index in (1, 2)]
    with pytest.raises(ValueError, match=re.escape(message)):
        assemble_towers(ensemble, members)
