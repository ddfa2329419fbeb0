"""Checks that Grad-CAM heatmaps deserve trust: do they depend on what the model learned, and do they point
at the pixels the prediction rests on?

- Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): re-initialise the top
  layers (the last Conv2D and every weighted layer after it, the classifier included) and recompute the
  heatmaps. If they barely change (high Spearman rank correlation), the maps show the input's edges or
  the architecture's habits, not the learned evidence.
- Deletion and insertion (Petsiuk et al. 2018, RISE): replace the image's pixels, most highlighted first,
  by a baseline (deletion), or start from the baseline and put them back (insertion), and follow the
  model's probability of the explained class. A faithful map makes the deletion curve fall faster
  (lower area) and the insertion curve rise faster (higher area) than a random pixel order does.

The explained class of each image is its true label: the question is "what in this image makes the
model see it as what it is". Heatmaps are computed with forgery.gradcam, unchanged.
"""

from __future__ import annotations


from typing import Any, Callable

import keras
import numpy as np
from scipy import stats

from forgery.data import CLASS_NAMES
from forgery.gradcam import Grid, cut_model, make_gradcam_heatmap, placed
from forgery.models import last_conv_layer
from forgery.robustness import gaussian_blur

PER_CLASS = 16  # images explained per class: 32 in all take a few seconds on a CPU
STEPS = 16  # points on each deletion/insertion curve after the start: 64 pixels per step on 32x32 images
# The baseline is the image blurred this much: the layout stays, the pixel-level texture a generator
# leaves (what a detector may rely on) goes, so "removing" a pixel removes its fine evidence only.
BASELINE_BLUR_SIGMA = 2.0
PREDICT_BATCH = 512

MEANINGS = {
    "randomisation_spearman": "Mean Spearman rank correlation between the Grad-CAM maps of the trained model and of a copy "
    "whose top layers were re-initialised, over the images where both maps vary; near 0 means the maps depend on what the model learned, near 1 means they do not.",
    "deletion_auc": "Area under the explained class's probability as the most highlighted pixels are blurred away first; "
    "lower than deletion_auc_random means the highlighted pixels carry the prediction.",
    "deletion_auc_random": "The same area when pixels are blurred away in a random order: the bar the Grad-CAM order must beat.",
    "insertion_auc": "Area under the explained class's probability as the most highlighted pixels are restored first into a "
    "blurred copy; higher than insertion_auc_random means the highlighted pixels carry the prediction.",
    "insertion_auc_random": "The same area when pixels are restored in a random order: the bar the Grad-CAM order must beat.",
}


def gradcam_checks(model: keras.Model, images: np.ndarray, labels: np.ndarray, seed: int, steps: int = STEPS) -> dict[str, Any]:
    """Randomisation and deletion/insertion checks of Grad-CAM on `images` (N, 32, 32, 3) 0-255, explaining `labels`."""
    images = np.asarray(images)
    labels = np.asarray(labels, dtype="int64")
    heatmaps = gradcam_heatmaps(model, images, labels)
    randomised = randomise_top_layers(model, seed)
    randomised_heatmaps = gradcam_heatmaps(randomised, images, labels)
    correlation = randomisation_correlation(heatmaps, randomised_heatmaps)

    height, width = images.shape[1:3]
    grid = cut_model(model).grid
    saliency = np.stack([upsampled(heatmap, (height, width), grid) for heatmap in heatmaps])
    rng = np.random.default_rng(seed)
    baselines = gaussian_blur(images, BASELINE_BLUR_SIGMA)

    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch, batch_size=PREDICT_BATCH, verbose=0)

    orderings = {"gradcam": saliency, "random": rng.random(saliency.shape)}
    curves = perturbation_curves(predict, images, baselines, orderings, labels, steps, rng)
    areas = {name: area_under_curve(curve) for name, curve in curves.items()}
    numbers = {
        "randomisation_spearman": correlation["mean"],
        "deletion_auc": areas["deletion_gradcam"],
        "deletion_auc_random": areas["deletion_random"],
        "insertion_auc": areas["insertion_gradcam"],
        "insertion_auc_random": areas["insertion_random"],
    }
    return {
        "images": int(len(images)),
        "images_per_class": {name: int(np.sum(labels == index)) for index, name in enumerate(CLASS_NAMES)},
        "explained_class": "true label",
        "seed": seed,
        "layer": last_conv_layer(model).name,
        "checks": {name: {"value": value, "meaning": MEANINGS[name]} for name, value in numbers.items()},
        "randomisation": {
            "reinitialised_layers": top_layer_names(model),
            "compared_pairs": correlation["compared"],
            # A constant map (all zero: no positive evidence anywhere) has no ranking to correlate.
            "pairs_with_a_constant_map": correlation["constant"],
        },
        "perturbation": {
            "steps": steps,
            "baseline": f"Gaussian blur of the image, sigma {BASELINE_BLUR_SIGMA:g} px",
            "heatmap_upsampling": "each cell at the image pixel its cell looks at, linear in between (as the overlays draw it)",
            "fraction": [round(float(value), 6) for value in np.linspace(0.0, 1.0, steps + 1)],
            "mean_curves": {name: [round(float(value), 6) for value in curve.mean(axis=0)] for name, curve in curves.items()},
            "areas": areas,
            # The blur that stands for "removed" is itself a trace of generated images: where a class's images
            # keep their probability on the baseline alone, its curves cannot fall, whatever the order.
            "areas_per_class": per_class_areas(curves, labels),
            "baseline_probability_per_class": {
                name: round(float(curves["deletion_gradcam"][labels == index, -1].mean()), 6)
                for index, name in enumerate(CLASS_NAMES)
                if np.any(labels == index)
            },
        },
    }


def sample_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` seeded indices of each class, FAKE first: the images `gradcam_checks` explains."""
    rng = np.random.default_rng(seed)
    picked = []
    for index in range(len(CLASS_NAMES)):
        members = np.flatnonzero(np.asarray(labels) == index)
        picked.append(np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False)))
    return np.concatenate(picked)


def gradcam_check_metrics(checks: dict[str, Any]) -> dict[str, float]:
    """The numbers of `gradcam_checks` as MLflow metrics, `gradcam_`-prefixed; an undefined one is left out."""
    return {f"gradcam_{name}": check["value"] for name, check in checks["checks"].items() if check["value"] is not None}


def gradcam_heatmaps(model: keras.Model, images: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
    """Grad-CAM heatmap (h, w) of each image for its class in `class_indices`, stacked (N, h, w)."""
    cut = cut_model(model)
    return np.stack([make_gradcam_heatmap(cut, image, int(index)) for image, index in zip(images, class_indices)])


def top_layer_names(model: keras.Model) -> list[str]:
    """Every layer with weights that no Conv2D follows: what the randomisation check resets.

    That is the last convolution with everything after it, and beside it whatever else feeds the output
    without passing through another convolution: a residual block's 1x1 projection shortcut and its
    squeeze-and-excitation gate (which a last-in-layer-order rule reset one of and left the other trained),
    each tower's last convolution in an ensemble (model.towers), a frequency branch, the shared head.
    """
    children: dict[str, set[str]] = {layer.name: set() for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for parent in node.parent_nodes:
                if parent.operation.name in children:
                    children[parent.operation.name].add(layer.name)
    by_name = {layer.name: layer for layer in model.layers}
    feeds_a_conv: dict[str, bool] = {}

    def reaches_a_conv(name: str) -> bool:
        if name not in feeds_a_conv:
            feeds_a_conv[name] = any(isinstance(by_name[child], keras.layers.Conv2D) or reaches_a_conv(child) for child in children[name])
        return feeds_a_conv[name]

    if not any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers):  # convolutions nested in a block
        start = model.layers.index(last_conv_layer(model))
        return [layer.name for layer in model.layers[start:] if layer.weights]
    return [layer.name for layer in model.layers if layer.weights and not reaches_a_conv(layer.name)]


def randomise_top_layers(model: keras.Model, seed: int) -> keras.Model:
    """A copy of `model` whose `top_layer_names` layers are re-initialised (seeded); the original is untouched."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(copy.weights))
    position = 0
    for name in top_layer_names(copy):
        layer = copy.get_layer(name)
        for variable in layer.weights:
            # Keras names each layer's initializers after its variables: kernel_initializer, gamma_initializer, ...
            initializer = getattr(layer, f"{variable.name}_initializer", None)
            if initializer is None:
                raise ValueError(f"layer {name!r} has no initializer for its weight {variable.name!r}")
            config = initializer.get_config()
            if "seed" in config:  # random initializers: reseed so the check is repeatable
                initializer = type(initializer).from_config({**config, "seed": int(seeds[position])})
            variable.assign(initializer(variable.shape, dtype=variable.dtype))
            position += 1
    return copy


def randomisation_correlation(heatmaps: np.ndarray, randomised_heatmaps: np.ndarray) -> dict[str, Any]:
    """Mean Spearman correlation over image pairs whose maps both vary; None when no pair does."""
    values: list[float] = []
    constant = 0
    for original, randomised in zip(heatmaps, randomised_heatmaps):
        original, randomised = original.ravel(), randomised.ravel()
        if np.ptp(original) == 0 or np.ptp(randomised) == 0:
            constant += 1
            continue
        values.append(float(stats.spearmanr(original, randomised).statistic))
    return {"mean": float(np.mean(values)) if values else None, "compared": len(values), "constant": constant}


def upsampled(heatmap: np.ndarray, size: tuple[int, int], grid: Grid | None = None) -> np.ndarray:
    """A heatmap over an image of (height, width), each cell where it looks (`grid`), as the overlays show it."""
    return placed(heatmap, size, 1, grid)


def perturbation_curves(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    baselines: np.ndarray,
    orderings: dict[str, np.ndarray],
    class_indices: np.ndarray,
    steps: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Curves "deletion_<name>" and "insertion_<name>" (N, steps + 1) of the class probability per saliency ordering."""
    # `orderings` maps a name to saliency maps (N, H, W). All perturbed images of every ordering and step go
    # to `predict` in one call: a few thousand 32x32 images cost about a second, one call per step far more.
    count, height, width = images.shape[:3]
    pixels = height * width
    changed = np.rint(np.linspace(0, pixels, steps + 1)).astype(int)  # pixels swapped at each step
    perturbed = []
    for saliency in orderings.values():
        flat = np.asarray(saliency).reshape(count, pixels)
        # lexsort sorts by its last key first: saliency descending, then the random key among equal values.
        order = np.stack([np.lexsort((rng.random(pixels), -row)) for row in flat])
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(pixels), order.shape), axis=1)
        # swapped[s, i, y, x, 0]: at step s, pixel (y, x) of image i is among the first changed[s] of its order.
        swapped = (rank[None] < changed[:, None, None]).reshape(steps + 1, count, height, width, 1)
        perturbed.append(np.where(swapped, baselines[None], images[None]))  # deletion: image -> baseline
        perturbed.append(np.where(swapped, images[None], baselines[None]))  # insertion: baseline -> image
    probabilities = np.asarray(predict(np.concatenate(perturbed).reshape(-1, *images.shape[1:])))
    probabilities = probabilities.reshape(len(perturbed), steps + 1, count, -1)
    explained = np.take_along_axis(probabilities, np.asarray(class_indices)[None, None, :, None], axis=3)[..., 0]
    names = [f"{curve}_{name}" for name in orderings for curve in ("deletion", "insertion")]
    return {name: explained[position].T for position, name in enumerate(names)}


def per_class_areas(curves: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict[str, float]]:
    """`area_under_curve` of each curve over each class's images alone."""
    return {
        name: {curve_name: area_under_curve(curve[labels == index]) for curve_name, curve in curves.items()}
        for index, name in enumerate(CLASS_NAMES)
        if np.any(labels == index)
    }


def area_under_curve(curves: np.ndarray) -> float:
    """Mean over images of the trapezoid area under each curve, sampled at equal fractions of [0, 1]."""
    curves = np.asarray(curves, dtype="float64")
    return float(np.mean((curves[:, 1:] + curves[:, :-1]) / 2.0, axis=1).mean())
