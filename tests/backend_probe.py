"""Run under a chosen KERAS_BACKEND: load a saved model, write its probabilities and Grad-CAM heatmaps.

Used by tests/test_backends.py as `python tests/backend_probe.py MODEL IMAGES OUT` in a subprocess,
because Keras fixes its backend at import.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from forgery.gradcam import cut_model, make_gradcam_heatmap


def main(model_path: str, images_path: str, out_path: str) -> None:
    """Probabilities and both classes' heatmaps for every image, saved to `out_path`."""
    model = keras.saving.load_model(model_path, safe_mode=True)
    images = np.load(images_path)
    cut = cut_model(model)
    heatmaps = np.stack([[make_gradcam_heatmap(cut, image, target) for target in (0, 1)] for image in images])
    probabilities = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    np.savez(out_path, probabilities=probabilities, heatmaps=heatmaps, backend=keras.backend.backend())


if __name__ == "__main__":
    main(*sys.argv[1:4])
