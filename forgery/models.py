"""Model factories: each returns a `keras.Model` that maps raw 0-255 RGB pixels to (FAKE, REAL) probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from forgery import augment, spectrum
from forgery.data import CLASS_NAMES, IMAGE_SIZE

# Layer names the rest of the project relies on (Grad-CAM, the model card).
CLASSIFIER_LAYER = "classifier"
# A model whose last convolution is not a cut point (a residual shortcut bypasses it) names the feature
# map Grad-CAM should explain instead.
FEATURES_LAYER = "features"
# Branches that reach the classifier beside the convolutional features (Grad-CAM takes them as given).
SIDE_BRANCH_LAYERS = ("spectrum_dense",)
# The test-time views: the average of a network's prediction over each image and its mirror image
# (tta=flip), or over all 8 symmetries of the square (tta=dihedral, for networks trained with them).
MIRROR_LAYER = "mirror"
FLIP_ROWS_LAYER = "flip_rows"
TRANSPOSE_LAYER = "transpose"
VIEW_AVERAGE_LAYERS = {"flip": "flip_average", "dihedral": "dihedral_average"}
TEST_TIME_VIEWS = ("none", *VIEW_AVERAGE_LAYERS)


def cnn(
    name: str,
    filters: list[int],
    width: float = 1.0,
    padding: str = "valid",
    dropout: float = 0.5,
    centre_colour: bool = False,
    augmentation: keras.Layer | None = None,
) -> keras.Model:
    """Rescaling -> augmentation -> [Conv2D + BatchNorm + MaxPool] per filter count -> GAP -> Dropout -> Dense softmax.

    `width` scales every filter count (rounded, at least 1), so a sweep can tune capacity with one number.
    `centre_colour` subtracts each image's own mean colour first (see `centred_colour`).
    """
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    if augmentation is not None:
        x = augmentation(x)  # random at training time only, so the saved model needs no preprocessing
    if centre_colour:
        x = centred_colour(x)
    for index, count in enumerate(filters, start=1):
        x = keras.layers.Conv2D(max(1, round(count * width)), 3, padding=padding, activation="relu", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"batchnorm{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"maxpool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 even under mixed precision: a softmax in float16 saturates.
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name=CLASSIFIER_LAYER, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def centred_colour(x: keras.KerasTensor) -> keras.KerasTensor:
    """Each image minus its own mean colour (per channel, over its pixels): the network cannot see global colour.

    Global colour tells CIFAKE's classes apart without any content (its generated images are darker); after
    this a constant shift of any channel changes nothing downstream (but where it clips at 0 or 255), so a
    model cannot lean on it. Keras's own layers, so a saved model loads without forgery.
    """
    mean = keras.layers.GlobalAveragePooling2D(keepdims=True, name="mean_colour")(x)
    return keras.layers.Subtract(name="centre_colour")([x, mean])


def last_conv_layer(model: keras.Model) -> keras.Layer:
    """Grad-CAM's target: the layer named FEATURES_LAYER if the model has one, else its last top-level Conv2D."""
    named = [layer for layer in model.layers if layer.name == FEATURES_LAYER]
    if named:
        return named[0]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no top-level Conv2D layer for Grad-CAM")
    return convs[-1]


def is_augmentation_block(layer: keras.Layer) -> bool:
    """Whether `layer` is the block `forgery.augment.build_augmentation` made (named augmentation_<name>)."""
    return isinstance(layer, keras.Sequential) and layer.name.startswith("augmentation_")


def inference_graph(model: keras.Model) -> keras.Model:
    """The model as it predicts, sharing its weights, with its augmentation block (a no-op at inference) made an identity.

    What the harness hands out (MLflow's model, model.keras) holds only Keras's own layers, so it loads
    wherever Keras does, forgery installed or not, and predicts exactly as the trained model; the one
    exception is a frequency branch (spectrum_units), whose LogSpectrum layer needs forgery.spectrum.
    """
    if any(is_augmentation_block(layer) for layer in model.layers):

        def replace(layer: keras.Layer) -> keras.Layer:
            # A Sequential, not a bare Identity: the graph calls the block with Sequential's arguments (mask=).
            return keras.Sequential([keras.layers.Identity()], name=layer.name) if is_augmentation_block(layer) else layer

        model = keras.models.clone_model(model, clone_function=replace)
    # A new, uncompiled graph over the same layers: a compiled model's file names its loss and metrics
    # (forgery.metrics.LabelAUC among them), which a loader without forgery could not rebuild.
    return keras.Model(model.input, model.output, name=model.name)


def tta_view(model: keras.Model, tta: str) -> keras.Model:
    """What is evaluated and served: `model` itself (tta=none), or the average of its (FAKE, REAL)
    probabilities over views of each image, sharing `model`'s weights: the image and its left-right
    mirror image (tta=flip), or all 8 symmetries of the square (tta=dihedral: rotations by multiples of
    90 degrees, mirrored or not).

    The mirrors are frozen EinsumDense layers whose kernels reverse an axis, the transpose a Permute, so
    the view holds Keras's own layers only; they act on raw 0-255 pixels, which every float type in use
    (TF32 and bfloat16 included) holds exactly, so each view is exact.
    """
    if tta not in TEST_TIME_VIEWS:
        raise ValueError(f"unknown test-time view {tta!r}; choose from {', '.join(TEST_TIME_VIEWS)}")
    if tta == "none":
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], name=model.inputs[0].name)
    mirror = _axis_reversal("bhwc,wv->bhvc", tuple(inputs.shape[1:]), inputs.shape[2], MIRROR_LAYER)
    views = [inputs, mirror(inputs)]
    if tta == "dihedral":
        flip_rows = _axis_reversal("bhwc,hv->bvwc", tuple(inputs.shape[1:]), inputs.shape[1], FLIP_ROWS_LAYER)
        transposed = keras.layers.Permute((2, 1, 3), name=TRANSPOSE_LAYER)(inputs)
        views += [flip_rows(inputs), mirror(flip_rows(inputs)), transposed, mirror(transposed), flip_rows(transposed), mirror(flip_rows(transposed))]
    # float32 even under mixed precision, as the classifier: an average in float16 would round the probabilities.
    outputs = keras.layers.Average(name=VIEW_AVERAGE_LAYERS[tta], dtype="float32")([model(view) for view in views])
    return keras.Model(inputs, outputs, name=f"{model.name}_{VIEW_AVERAGE_LAYERS[tta]}")


def _axis_reversal(equation: str, shape: tuple[int, ...], length: int, name: str) -> keras.Layer:
    """A frozen EinsumDense that reverses one image axis (its kernel the flipped identity), built and set."""
    layer = keras.layers.EinsumDense(equation, output_shape=shape, name=name, trainable=False, dtype="float32")
    layer.build((None, *shape))
    layer.kernel.assign(keras.ops.flip(keras.ops.eye(length, dtype="float32"), axis=0))
    return layer


def single_view(model: keras.Model) -> keras.Model:
    """The network inside a test-time view (what Grad-CAM explains: one image, not the average), else `model`."""
    averages = [layer.name for layer in model.layers if layer.name in VIEW_AVERAGE_LAYERS.values()]
    if not averages:
        return model
    networks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(networks) != 1:
        raise ValueError(f"model {model.name!r} has a {averages[0]} layer but {len(networks)} networks inside")
    return networks[0]


def is_random_state(variable: keras.Variable) -> bool:
    """Whether `variable` is a seed generator's state (augmentation layers, Dropout): where random draws come from."""
    return variable.path.endswith("seed_generator_state")


def load(path: Path | str) -> keras.Model:
    """A `.keras` file in Keras's safe mode (no code from the file runs), forgery's own layers known to Keras."""
    from forgery import metrics  # a checkpoint is compiled with the run's metrics

    return keras.saving.load_model(path, custom_objects={**layer_objects(), **metrics.custom_objects()}, safe_mode=True)


def layer_objects() -> dict[str, type]:
    """forgery's own layers, by the names Keras stores them under: what loading a saved network needs."""
    return {**augment.custom_objects(), **spectrum.custom_objects()}


def architecture_summary(model: keras.Model) -> str:
    """The layer chain in arrow form, e.g. 'Rescaling -> Augmentation(RandomFlip, ...) -> Conv2D(32) -> ...'."""
    parts: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name == "mean_colour":
            continue
        if layer.name == "centre_colour":
            parts.append("CentreColour")
        elif is_augmentation_block(layer):
            inner = ", ".join(type(sub).__name__ for sub in layer.layers)
            parts.append(f"Augmentation({inner})")
        elif isinstance(layer, keras.layers.Conv2D):
            parts.append(f"Conv2D({layer.filters}, {layer.kernel_size[0]}x{layer.kernel_size[1]}, {layer.activation.__name__})")
        elif isinstance(layer, keras.layers.Dense):
            parts.append(f"Dense({layer.units}, {layer.activation.__name__})")
        elif isinstance(layer, keras.layers.Dropout):
            if layer.noise_shape is None:
                parts.append(f"Dropout({layer.rate:g})")
            else:  # a whole residual branch per image: stochastic depth, its rising rates shortened
                parts.append(f"DropPath({layer.rate:.3g})")
        else:
            parts.append(type(layer).__name__)
    return " -> ".join(parts)


def resnet(
    name: str,
    widths: list[int],
    blocks_per_stage: int | list[int] = 2,
    dropout: float = 0.3,
    highpass: bool = False,
    towers: int = 1,
    squeeze_excite: int = 0,
    full_resolution_stages: int = 1,
    spectrum_units: int = 0,
    drop_path: float = 0.0,
    centre_colour: bool = False,
    augmentation: keras.Layer | None = None,
) -> keras.Model:
    """A small pre-activation residual network; with `highpass`, it also sees the image's high frequencies.

    Stages of `blocks_per_stage` residual blocks (two 3x3 convolutions each; one count for every stage, or
    a list with one per stage); every stage after the first halves the grid. No pooling before the first
    stage: generator traces live at the pixel scale. The high-pass view (image minus its 3x3 blur) is stacked as three extra channels, because upsampling and
    over-smoothing leave their marks in exactly those frequencies.

    `towers` > 1 runs that many independent networks (layers prefixed tower1_, tower2_, ...) side by side
    on the same input; their feature maps are stacked and one classifier reads them all, so the logits
    are the sum of each tower's own: an ensemble in one graph, which Grad-CAM explains as a whole.

    `squeeze_excite` > 0 gates each block's residual branch channel by channel (squeeze-and-excitation):
    the branch's global average feeds a bottleneck of width // `squeeze_excite` units and a sigmoid gate
    per channel, so a block can weigh its channels by what the whole image shows. 0 leaves it out.

    `full_resolution_stages` is how many leading stages keep the full 32x32 grid (1: only the first); each
    later stage halves it. More of them keep more pixel-scale detail for more compute, not more weights.

    `spectrum_units` > 0 adds a frequency branch: the log magnitude of each colour channel's 2-D DCT, each
    coefficient standardised over the batch (BatchNorm per frequency), read by a dense layer of that many
    units whose output joins the pooled features before the classifier. It sees energy per frequency over
    the whole image, which a stack of 3x3 convolutions and a global average does not measure directly.
    Grad-CAM explains the convolutional features only; the branch's share is not in the heat map.

    `drop_path` > 0 is stochastic depth: in training, each residual branch is dropped for a whole image at
    a time (the block passes its shortcut only) with a probability rising linearly over the blocks to
    `drop_path` at the last one, so the network cannot lean on any one block. A Dropout layer whose noise
    covers the whole feature map does it, so the model keeps Keras's own layers and its weight count.

    `centre_colour` subtracts each image's own mean colour before anything else reads it (`centred_colour`).
    """
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be from 0 (off) to below 1, got {drop_path}")
    if spectrum_units < 0:
        raise ValueError(f"spectrum_units must be 0 (no frequency branch) or more, got {spectrum_units}")
    if not 1 <= full_resolution_stages <= len(widths):
        raise ValueError(f"full_resolution_stages must be from 1 to the {len(widths)} stages, got {full_resolution_stages}")
    if towers < 1:
        raise ValueError(f"towers must be 1 or more, got {towers}")
    if squeeze_excite < 0:
        raise ValueError(f"squeeze_excite must be 0 (off) or a reduction ratio of 1 or more, got {squeeze_excite}")
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    if augmentation is not None:
        x = augmentation(x)
    if centre_colour:
        x = centred_colour(x)
    pixels = x
    if highpass:
        blurred = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="blur3x3")(x)
        residue = keras.layers.Subtract(name="highpass")([x, blurred])
        x = keras.layers.Concatenate(name="with_highpass")([x, keras.layers.Rescaling(4.0, name="highpass_gain")(residue)])
    counts = stage_block_counts(widths, blocks_per_stage)
    if towers == 1:
        x = _residual_trunk(x, widths, counts, "", FEATURES_LAYER, squeeze_excite, full_resolution_stages, drop_path)  # the feature map Grad-CAM explains
    else:
        trunks = [
            _residual_trunk(x, widths, counts, tower_prefix(tower), f"{tower_prefix(tower)}features", squeeze_excite, full_resolution_stages, drop_path)
            for tower in range(1, towers + 1)
        ]
        x = keras.layers.Concatenate(name=FEATURES_LAYER)(trunks)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if spectrum_units:
        x = keras.layers.Concatenate(name="with_spectrum")([x, _spectrum_branch(pixels, spectrum_units, dropout)])
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name=CLASSIFIER_LAYER, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _spectrum_branch(pixels: keras.KerasTensor, units: int, dropout: float) -> keras.KerasTensor:
    """Log DCT magnitudes, standardised per frequency and channel, then a dense ReLU layer of `units`."""
    y = spectrum.LogSpectrum(name="log_spectrum")(pixels)
    y = keras.layers.Flatten(name="spectrum_flat")(y)
    y = keras.layers.BatchNormalization(name="spectrum_batchnorm")(y)  # flat first: one mean and scale per coefficient
    y = keras.layers.Dropout(dropout, name="spectrum_dropout")(y)
    return keras.layers.Dense(units, activation="relu", name=SIDE_BRANCH_LAYERS[0])(y)


def tower_prefix(tower: int) -> str:
    """The name prefix of tower `tower` (counted from 1) in a network with `towers` > 1."""
    return f"tower{tower}_"


def _residual_trunk(
    x: keras.KerasTensor,
    widths: list[int],
    counts: list[int],
    prefix: str,
    features_name: str,
    squeeze_excite: int = 0,
    full_resolution_stages: int = 1,
    drop_path: float = 0.0,
) -> keras.KerasTensor:
    """Stem convolution, the residual stages, then BatchNorm-ReLU: the feature map one network classifies."""
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name=f"{prefix}stem")(x)
    rates = iter(drop_path_rates(drop_path, sum(counts)))
    for stage, (width, count) in enumerate(zip(widths, counts, strict=True), start=1):
        for block in range(1, count + 1):
            stride = 2 if stage > full_resolution_stages and block == 1 else 1
            x = _residual_block(x, width, stride, f"{prefix}stage{stage}_block{block}", squeeze_excite, next(rates))
    x = keras.layers.BatchNormalization(name=f"{prefix}final_batchnorm")(x)
    return keras.layers.Activation("relu", name=features_name)(x)


def assemble_towers(ensemble: keras.Model, members: list[keras.Model]) -> None:
    """Load `members` (trained single-tower networks of the same architecture) into the towers of `ensemble`.

    Tower i takes member i's layers; the classifier takes every member's classifier, each divided by the
    member count, so the ensemble's logits are the average of the members' logits (its bias the mean).
    """
    towers = sum(1 for layer in ensemble.layers if layer.name.startswith("tower") and layer.name.endswith("_features"))
    if towers != len(members) or towers < 2:
        raise ValueError(f"model {ensemble.name!r} has {towers} towers for {len(members)} members")
    kernels, biases = [], []
    assigned = {CLASSIFIER_LAYER}
    for tower, member in enumerate(members, start=1):
        shared = sorted((PRE_TRUNK_LAYERS & _layer_names(member)) ^ (PRE_TRUNK_LAYERS & _layer_names(ensemble)))
        if shared:
            raise ValueError(f"member {member.name!r} and model {ensemble.name!r} differ before the trunk ({', '.join(shared)} in one only): not the same architecture")
        for layer in member.layers:
            if layer.name == CLASSIFIER_LAYER:
                kernel, bias = layer.get_weights()
                kernels.append(kernel / len(members))
                biases.append(bias / len(members))
            elif layer.weights:
                target = _matching_layer(ensemble, f"{tower_prefix(tower)}{layer.name}", layer, member.name)
                target.set_weights(layer.get_weights())
                assigned.add(target.name)
    # A layer no member filled (a block more per stage, gates) would keep its random weights, and the logits no average.
    unfilled = [layer.name for layer in ensemble.layers if layer.weights and layer.name not in assigned]
    if unfilled:
        raise ValueError(f"model {ensemble.name!r} has layers no member has, {', '.join(unfilled[:3])}{' ...' if len(unfilled) > 3 else ''}: not the same architecture")
    ensemble.get_layer(CLASSIFIER_LAYER).set_weights([np.concatenate(kernels, axis=0), np.sum(biases, axis=0)])


# The weightless layers between the pixels and the trunk: what the trunk sees (colour centred, high-pass view).
PRE_TRUNK_LAYERS = frozenset({"mean_colour", "centre_colour", "blur3x3", "highpass", "with_highpass", "highpass_gain"})
# Config entries that say nothing of what a layer computes on given weights.
_NON_STRUCTURAL = ("name", "dtype", "trainable")


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def _structure(layer: keras.Layer) -> dict[str, Any]:
    """A layer's config less its name, dtype and how its weights were initialised, regularised or constrained."""
    return {
        key: value
        for key, value in layer.get_config().items()
        if key not in _NON_STRUCTURAL and not key.endswith(("_initializer", "_regularizer", "_constraint"))
    }


def _matching_layer(ensemble: keras.Model, name: str, source: keras.Layer, member: str) -> keras.Layer:
    """The ensemble's layer `name`, refused in one line unless it has `source`'s weight shapes and settings (strides among them)."""
    try:
        target = ensemble.get_layer(name)
    except ValueError:
        raise ValueError(f"member {member!r} has a layer {source.name!r} that model {ensemble.name!r} lacks ({name}): not the same architecture") from None
    if [tuple(weight.shape) for weight in target.weights] != [tuple(weight.shape) for weight in source.weights]:
        raise ValueError(f"member {member!r} layer {source.name!r} has other weight shapes than {name} in model {ensemble.name!r}: not the same architecture")
    if type(target) is not type(source) or _structure(target) != _structure(source):
        raise ValueError(f"member {member!r} layer {source.name!r} has other settings than {name} in model {ensemble.name!r} (strides, say): not the same architecture")
    return target


def stage_block_counts(widths: list[int], blocks_per_stage: int | list[int]) -> list[int]:
    """Residual blocks per stage: one count repeated for every stage, or a list with one count per stage."""
    if isinstance(blocks_per_stage, int):
        return [blocks_per_stage] * len(widths)
    counts = [int(count) for count in blocks_per_stage]
    if len(counts) != len(widths):
        raise ValueError(f"blocks_per_stage has {len(counts)} counts for {len(widths)} stages (widths)")
    return counts


def drop_path_rates(drop_path: float, blocks: int) -> list[float]:
    """Each block's stochastic-depth rate: rising linearly to `drop_path` at the last of `blocks`."""
    return [drop_path * block / blocks for block in range(1, blocks + 1)]


def _residual_block(x: keras.KerasTensor, width: int, stride: int, name: str, squeeze_excite: int = 0, drop_rate: float = 0.0) -> keras.KerasTensor:
    """BN-ReLU-Conv twice, plus a shortcut (a strided 1x1 convolution where the shape changes)."""
    shortcut = x
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(x)
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
    if stride != 1 or x.shape[-1] != width:
        shortcut = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(y)
    y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu2")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    if squeeze_excite:
        y = _squeeze_excite(y, width, squeeze_excite, name)
    if drop_rate:
        # One draw per image for the whole branch, scaled by 1 / (1 - rate) like any Dropout: stochastic depth.
        y = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop_path")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def _squeeze_excite(y: keras.KerasTensor, width: int, reduction: int, name: str) -> keras.KerasTensor:
    """`y` times a per-channel gate in (0, 1) computed from `y`'s global average through a bottleneck."""
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(y)
    gate = keras.layers.Dense(max(1, width // reduction), activation="relu", name=f"{name}_se_reduce")(gate)
    gate = keras.layers.Dense(width, activation="sigmoid", name=f"{name}_se_expand")(gate)
    return keras.layers.Multiply(name=f"{name}_se_gate")([y, gate])
