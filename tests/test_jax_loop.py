"""forgery.jax_loop: its batch plan, and that an epoch through its compiled scan trains as Keras's `fit` does."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forgery import runtime
from forgery.config import ConfigError, validate
from forgery.jax_loop import batch_plan
from tests.conftest import PROJECT_ROOT

PROBE = Path(__file__).with_name("jax_loop_probe.py")
ADAM_RATE, STEPS = 1.0e-4, 2 * 11  # the probe's: the seed's Adam rate; 2 epochs of 72 images at batch 7


def test_full_batches_go_steps_per_execution_to_a_call_and_a_partial_batch_gets_its_own() -> None:
    assert batch_plan(72, 7, 4) == [(0, 4, 7), (28, 4, 7), (56, 2, 7), (70, 1, 2)]
    assert batch_plan(64, 8, 4) == [(0, 4, 8), (32, 4, 8)]
    assert batch_plan(5, 8, 32) == [(0, 1, 5)]  # fewer images than a batch: one partial batch, as fit makes it


def test_the_plan_covers_every_image_once() -> None:
    for count, batch_size, steps in [(1000, 8, 32), (999, 256, 32), (257, 256, 1), (31, 2, 5)]:
        covered = [first + index for first, batches, size in batch_plan(count, batch_size, steps) for index in range(batches * size)]
        assert covered == list(range(count))


def test_targets_changed_in_place_are_placed_again() -> None:
    from forgery.jax_loop import place

    images, targets = np.zeros((2, 32, 32, 3), "uint8"), np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    first = place(images, targets)
    assert place(images, targets) is first  # the same arrays: nothing copied again
    targets[0] = [0.0, 1.0]
    assert np.asarray(place(images, targets).targets).tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_a_plan_over_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        batch_plan(0, 8, 32)


def test_auto_scans_on_jax_with_an_accelerator_only() -> None:
    assert runtime.chosen_loop("auto", "jax", accelerated=True) == "scan"
    assert runtime.chosen_loop("auto", "jax", accelerated=False) == "fit"
    assert runtime.chosen_loop("auto", "tensorflow", accelerated=True) == "fit"
    assert runtime.chosen_loop("scan", "jax", accelerated=False) == "scan"
    assert runtime.chosen_loop("fit", "jax", accelerated=True) == "fit"


def test_scan_off_jax_and_unknown_loops_are_refused_in_one_line(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"^runtime.loop=scan needs the jax backend \(KERAS_BACKEND=jax\), this run uses tensorflow; use auto or fit$"):
        runtime.chosen_loop("scan", "tensorflow", accelerated=True)
    with pytest.raises(ConfigError, match=r"^runtime.loop must be one of auto, fit, scan, got 'fast'$"):
        validate(compose_train("runtime.loop=fast"))
    assert runtime.LOOPS == ("auto", "fit", "scan")


def test_the_backend_is_read_as_keras_reads_it_and_checked_before_data_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose_train) -> None:
    from forgery.config import keras_backend_name

    monkeypatch.delitem(sys.modules, "keras", raising=False)  # as in a fresh command, before Keras is imported
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend_name() == "tensorflow"  # no keras.json: Keras's default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert keras_backend_name() == "jax"
    validate(compose_train("runtime.loop=scan"))  # scan is fine on jax
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # the variable wins over the file
    assert keras_backend_name() == "torch"
    with pytest.raises(ConfigError, match=r"^runtime.loop=scan needs the jax backend \(KERAS_BACKEND=jax\), this run uses torch; use auto or fit$"):
        validate(compose_train("runtime.loop=scan"))
    with pytest.raises(ConfigError, match=r"^runtime.steps_per_execution must be 1 on the torch backend"):
        validate(compose_train("runtime.steps_per_execution=4"))
    validate(compose_train("runtime.steps_per_execution=1"))


def test_scan_on_tensorflow_is_refused_before_the_data_loads(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    environment.update({"KERAS_HOME": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)})
    result = subprocess.run([sys.executable, "-m", "forgery.train", "runtime.loop=scan"], env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["error: runtime.loop=scan needs the jax backend (KERAS_BACKEND=jax), this run uses tensorflow; use auto or fit"]


@pytest.mark.slow  # eight trainings compiled by JAX: about two minutes
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_an_epoch_through_the_scan_trains_as_fit_does(tmp_path: Path) -> None:
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(PROJECT_ROOT)}
    out = tmp_path / "probe.npz"
    result = subprocess.run([sys.executable, str(PROBE), str(out), str(tmp_path / "checkpoints")], env=environment, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = np.load(out)
    assert str(probe["backend"]) == "jax"
    histories = json.loads(str(probe["histories"]))
    names = json.loads(str(probe["names"]))
    batchnorm_fed = {index for index, name in enumerate(names) if re.fullmatch(r"conv\d+/bias", name) and name.replace("conv", "batchnorm").replace("bias", "gamma") in names}
    assert batchnorm_fed == {1, 7, 13}, names  # the seed model's three convolutions
    for variant in ("plain", "ema", "cutmix", "sam"):
        fit, scan = histories[f"{variant}_fit"], histories[f"{variant}_scan"]
        assert set(scan) == set(fit) == {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
        # SAM magnifies the two compilations' rounding (see the weights below), and Keras's AUC counts scores in 200
        # buckets: one score that crosses a bucket's edge moves a 72-image AUC by about 1e-3.
        history_tolerance = 2e-3 if variant == "sam" else 1e-5
        for name, values in fit.items():
            np.testing.assert_allclose(scan[name], values, rtol=1e-4, atol=history_tolerance, err_msg=f"{variant} {name}")
        count = len([key for key in probe.files if key.startswith(f"{variant}_fit_")])
        assert count > 10
        for index in range(count):
            # SAM divides by the gradient's norm, which magnifies the two compilations' rounding: a weight near 0 moved 2e-4.
            tolerance = 1e-3 if variant == "sam" else 2e-4
            if index in batchnorm_fed:
                # A convolution's bias feeding BatchNorm has a gradient of exactly 0 (the batch mean cancels it), so it
                # moves by rounding noise alone, which Adam scales up to a step of up to the rate each: bound the drift.
                tolerance = 2 * ADAM_RATE * STEPS
            np.testing.assert_allclose(probe[f"{variant}_scan_{index}"], probe[f"{variant}_fit_{index}"], rtol=1e-3, atol=tolerance, err_msg=f"{variant} weight {index}")
    # The two recipes trained different weights: each comparison above was of real, distinct training.
    assert not np.allclose(probe["plain_fit_0"], probe["ema_fit_0"]) and not np.allclose(probe["plain_fit_0"], probe["cutmix_fit_0"])
    assert not np.allclose(probe["plain_fit_0"], probe["sam_fit_0"])
    # A NaN loss stops the scan at the call that made it, as fit's check does with several steps a call.
    assert str(probe["nan_message"]).startswith("loss became nan at epoch 1, batches 1-4;")
    # calls of 4, 4 and 2 batches, then the partial one: a NaN in batch 9 or 11 names its own call
    assert str(probe["nan_message_late"]).startswith("loss became nan at epoch 1, batches 9-10;")
    assert str(probe["nan_message_last"]).startswith("loss became nan at epoch 1, batch 11;")
    assert bool(probe["model_freed"])  # a sweep's jobs in one process do not pile up on the device
