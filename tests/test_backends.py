"""Keras backends: the same saved model gives the same probabilities and Grad-CAM under each; a JAX run works end to end."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from forgery.augment import build_augmentation
from forgery.models import cnn, inference_graph, tta_view
from tests.conftest import PROJECT_ROOT, run_forgery

PROBE = Path(__file__).with_name("backend_probe.py")


def probe(backend: str, model_path: Path, images_path: Path, out_path: Path) -> dict[str, np.ndarray]:
    """Probabilities and heatmaps computed in a subprocess running `backend`."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([sys.executable, str(PROBE), str(model_path), str(images_path), str(out_path)], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out_path))


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A seed-architecture model with non-trivial weights (a few steps of training), saved, plus test images;
    beside it, its views as a run serves them with tta=flip and tta=dihedral (flip.keras, dihedral.keras)."""
    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(11)
    model = cnn("small", [32, 64, 128], augmentation=build_augmentation("light", "horizontal", 0.1, 0.1))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 256, (64, 32, 32, 3)).astype("uint8")
    model.fit(pixels, np.eye(2, dtype="float32")[rng.integers(0, 2, 64)], batch_size=16, epochs=1, verbose=0)
    model.save(folder / "model.keras")
    for view in ("flip", "dihedral"):
        tta_view(inference_graph(model), view).save(folder / f"{view}.keras")
    np.save(folder / "images.npy", pixels[:6])
    return folder / "model.keras", folder / "images.npy"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("view", ["none", "flip", "dihedral"])
def test_same_model_same_answers_on_every_backend(trained_model: tuple[Path, Path], tmp_path: Path, backend: str, view: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install 'jax[cpu]' or torch to run this)")
    model_path, images_path = trained_model
    if view != "none":
        model_path = model_path.with_name(f"{view}.keras")
    reference = probe("tensorflow", model_path, images_path, tmp_path / "tensorflow.npz")
    other = probe(backend, model_path, images_path, tmp_path / f"{backend}.npz")
    assert str(other["backend"]) == backend
    np.testing.assert_allclose(other["probabilities"], reference["probabilities"], atol=1e-4)
    np.testing.assert_allclose(other["heatmaps"], reference["heatmaps"], atol=2e-3)
    assert reference["heatmaps"].max() > 0  # a real map was compared, not two blank ones


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_run_on_the_jax_backend(tmp_path: Path) -> None:
    from forgery.runtime import NATIVE_STARTUP_NOISE

    result = run_forgery("train", "epochs=1", "tta=flip", "data.train_per_class=60", "data.test_per_class=20", cwd=tmp_path, env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-3000:]
    # Seeding starts TensorFlow too, where it is installed: its chatter is held back as on its own backend; JAX's TPU note too.
    assert not NATIVE_STARTUP_NOISE.search(result.stdout + result.stderr), result.stderr[-3000:]
    assert "backend 'tpu'" not in result.stdout + result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    assert run.info.status == "FINISHED" and {"test_roc_auc", "test_ece", "gradcam_deletion_auc"} <= set(run.data.metrics)
    card = Path(client.download_artifacts(run.info.run_id, "report/model_card.json", str(tmp_path))).read_text()
    assert '"keras_backend": "jax"' in card and '"test_time_view": "flip"' in card
