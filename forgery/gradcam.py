"""Grad-CAM (Selvaraju et al. 2017): which regions of an input raise a class's score, as pure functions.

The model is cut at its last convolution into `body` (pixels -> feature maps, plus the output of any
branch beside the convolutions) and `head` (those -> classifier input). The class score is the classifier's logit, taken before softmax, because softmax
gradients shrink towards zero for confident predictions and then say nothing about where to look.
Cutting the functional graph (instead of reaching into nested blocks) keeps this working when the
augmentation block sits inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
from matplotlib import colormaps
from PIL import Image

from forgery.models import CLASSIFIER_LAYER, SIDE_BRANCH_LAYERS, last_conv_layer, single_view


@dataclass(frozen=True)
class Grid:
    """Where a feature map's cells look in the image: cell (i, j) is centred on image pixel
    (offset[0] + stride[0] * i, offset[1] + stride[1] * j), pixel centres counted 0, 1, ...

    A map is not the image shrunk: unpadded convolutions trim its border (the seed's 4x4 grid looks at image
    rows 8.5 to 20.5 and never at rows 30-31), so stretching it over the image would draw heat where the
    model did not look.
    """

    offset: tuple[float, float]
    stride: tuple[float, float]


@dataclass(frozen=True)
class GradcamModel:
    """A model cut for Grad-CAM: feature maps, and the logits computed from them."""

    body: keras.Model  # pixels -> feature maps, or [feature maps, then the outputs of the side branches] where there are any
    logits_from_maps: Callable[[object, list[object]], object]  # (feature maps, side branch outputs) -> logits
    layer_name: str
    grid: Grid | None = None  # None: unknown, the map is spread evenly over the image


def cut_model(model: keras.Model, layer_name: str | None = None) -> GradcamModel:
    """Cut `model` at `layer_name` (default: its last top-level Conv2D); a test-time view is cut inside,
    so a heatmap explains the image as given, not the average with its mirror image."""
    model = single_view(model)
    layer = model.get_layer(layer_name) if layer_name else last_conv_layer(model)
    classifier = model.get_layer(CLASSIFIER_LAYER)
    # A branch beside the convolutions (the frequency view) reaches the classifier without passing through
    # the maps: the body computes its output too and the head takes it as given, so gradients flow to the
    # maps only. (A head fed the pixels themselves would corrupt a test-time view's graph for saving.)
    side = [model.get_layer(name).output for name in SIDE_BRANCH_LAYERS if _has_layer(model, name)]
    body = keras.Model(model.inputs[0], [layer.output, *side] if side else layer.output)
    head = keras.Model([layer.output, *side] if side else layer.output, classifier.input)

    def logits_from_maps(maps: object, side_outputs: list[object]) -> object:
        features = head([maps, *side_outputs] if side_outputs else maps, training=False)
        return keras.ops.matmul(features, classifier.kernel) + classifier.bias

    return GradcamModel(body=body, logits_from_maps=logits_from_maps, layer_name=layer.name, grid=grid_of(layer))


# Layers that slide a window: (kernel size, strides, padding, dilation) place their outputs' centres.
_WINDOWED = (keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def grid_of(layer: keras.Layer) -> Grid | None:
    """Where the cells of `layer`'s output look in the model's input image, from the layers between them;
    None when a layer on the way changes the grid in a way not modelled here."""
    memo: dict[int, Grid | None] = {}

    def spatial(shape: Any) -> tuple[Any, Any]:
        return tuple(shape[1:3])

    def of(current: keras.Layer) -> Grid | None:
        if id(current) in memo:
            return memo[id(current)]
        if isinstance(current, keras.layers.InputLayer):
            return Grid((0.0, 0.0), (1.0, 1.0))
        parents = [parent.operation for node in current._inbound_nodes[:1] for parent in node.parent_nodes]
        if not parents:
            return None
        out_size = spatial(current.output.shape)
        if isinstance(current, _WINDOWED):
            before = of(parents[0])
            grid = None if before is None else _through_window(before, current, spatial(current.input.shape))
        else:
            # Elementwise, normalising and joining layers keep the grid; an input of another size (a 1x1 gate,
            # an image's mean colour) is broadcast and says nothing of where cells look. Branches that disagree
            # (a strided 1x1 shortcut beside a padded 3x3 convolution, a pixel apart) are averaged.
            grids = [of(parent) for parent in parents if spatial(parent.output.shape) == out_size]
            if not grids or any(grid is None for grid in grids) or len({grid.stride for grid in grids}) > 1:
                grid = None
            else:
                grid = Grid(tuple(float(np.mean([g.offset[axis] for g in grids])) for axis in (0, 1)), grids[0].stride)
        memo[id(current)] = grid
        return grid

    return of(layer)


def _through_window(before: Grid, layer: keras.Layer, in_size: tuple[Any, Any]) -> Grid | None:
    """`before` carried through one windowed layer (Keras's padding rules: "same" pads the extra row at the end)."""
    config = layer.get_config()
    kernel = config.get("kernel_size", config.get("pool_size"))
    strides = config.get("strides") or kernel
    dilation = config.get("dilation_rate", (1, 1))
    offsets, steps = [], []
    for axis in (0, 1):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        if config["padding"] == "same":
            if in_size[axis] is None:
                return None
            out = -(-in_size[axis] // strides[axis])
            first = (span - 1) / 2 - max((out - 1) * strides[axis] + span - in_size[axis], 0) // 2
        elif config["padding"] == "valid":
            first = (span - 1) / 2
        else:
            return None
        offsets.append(before.offset[axis] + before.stride[axis] * first)
        steps.append(before.stride[axis] * strides[axis])
    return Grid(tuple(offsets), tuple(steps))


def placed(heatmap: np.ndarray, image_size: tuple[int, int], scale: int = 1, grid: Grid | None = None) -> np.ndarray:
    """The heatmap over an image of `image_size` enlarged `scale` times, float32: each cell's value at the image
    pixel its cell is centred on, linear in between, and the nearest cell's beyond the outermost centres."""
    cells = np.asarray(heatmap, dtype="float32")
    if grid is None:  # spread evenly, as a plain resize would
        grid = Grid(*zip(*((size / count / 2 - 0.5, size / count) for size, count in zip(image_size, cells.shape))))
    centres = [grid.offset[axis] + grid.stride[axis] * np.arange(cells.shape[axis]) for axis in (0, 1)]
    # The image coordinate of each output pixel's centre.
    at = [(np.arange(size * scale) + 0.5) / scale - 0.5 for size in image_size]
    rows = np.stack([np.interp(at[0], centres[0], cells[:, column]) for column in range(cells.shape[1])], axis=1)
    return np.stack([np.interp(at[1], centres[1], row) for row in rows]).astype("float32")


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def make_gradcam_heatmap(cut: GradcamModel, image: np.ndarray, class_index: int) -> np.ndarray:
    """Heatmap (h, w) in [0, 1] over the cut layer's grid for one image (32, 32, 3) in 0-255."""
    outputs = cut.body(np.asarray(image, dtype="float32")[None], training=False)
    maps, side = (outputs[0], list(outputs[1:])) if isinstance(outputs, (list, tuple)) else (outputs, [])
    grads = _logit_gradient(cut, maps, side, class_index)
    maps_np = keras.ops.convert_to_numpy(maps)[0]
    return heatmap_from_gradients(maps_np, keras.ops.convert_to_numpy(grads)[0])


def heatmap_from_gradients(maps: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM's combination: channel weights = mean gradient, ReLU of the weighted sum, scaled to [0, 1]."""
    weights = grads.mean(axis=(0, 1))  # (channels,)
    cam = np.maximum(maps @ weights, 0.0)
    peak = cam.max()
    # No positive evidence anywhere: an all-zero map, rather than noise blown up by the division.
    return (cam / peak if peak > 0 else cam).astype("float32")


def overlay(image: np.ndarray, heatmap: np.ndarray, upscale: int = 8, alpha: float = 0.45, grid: Grid | None = None) -> np.ndarray:
    """The image upscaled `upscale` times with the heatmap blended on top in the 'jet' colours, uint8 RGB;
    each cell drawn where it looks (`grid`, as `cut_model` found it), else spread evenly."""
    base = upscaled(image, upscale).astype("float32")
    smooth = np.clip(placed(heatmap, image.shape[:2], upscale, grid), 0.0, 1.0)
    colours = colormaps["jet"](smooth)[..., :3] * 255.0
    return np.clip((1.0 - alpha) * base + alpha * colours, 0, 255).astype("uint8")


def upscaled(image: np.ndarray, upscale: int = 8) -> np.ndarray:
    """The image enlarged with nearest-neighbour, so each pixel stays a visible square."""
    height, width = image.shape[:2]
    enlarged = Image.fromarray(np.asarray(image, dtype="uint8")).resize((width * upscale, height * upscale), Image.NEAREST)
    return np.asarray(enlarged)


def _logit_gradient(cut: GradcamModel, maps: object, side: list[object], class_index: int) -> object:
    """d logit[class_index] / d maps, with the autodiff of whichever Keras backend is active."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        maps_tensor = tf.convert_to_tensor(maps)
        with tf.GradientTape() as tape:
            tape.watch(maps_tensor)
            score = cut.logits_from_maps(maps_tensor, side)[:, class_index]
        return tape.gradient(score, maps_tensor)
    if backend == "jax":
        import jax

        return jax.grad(lambda m: cut.logits_from_maps(m, side)[:, class_index].sum())(maps)
    if backend == "torch":
        import torch

        maps_tensor = maps.detach().clone().requires_grad_(True)
        score = cut.logits_from_maps(maps_tensor, side)[:, class_index].sum()
        (gradient,) = torch.autograd.grad(score, maps_tensor)
        return gradient
    raise NotImplementedError(f"Grad-CAM has no gradient for Keras backend {backend!r}")


def pick_examples(labels: np.ndarray, seed: int) -> dict[int, int]:
    """One seeded index per class present in `labels`, so the same run always explains the same images."""
    rng = np.random.default_rng(seed)
    return {int(label): int(rng.choice(np.flatnonzero(labels == label))) for label in np.unique(labels)}
