"""Run under KERAS_BACKEND=jax: train the same model two epochs with `fit` and with forgery.jax_loop's scan, plain, with a
moving average of the weights, with CutMix and with sharpness-aware steps; write all eight to an .npz.

Also trains on NaN targets through the scan, which must stop with forgery.train.NumericalError and leave the model usable.
Usage: python tests/jax_loop_probe.py OUT.npz CHECKPOINT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from forgery import train
from forgery.checkpoints import CheckpointState

# 72 training images at batch 7: 10 full batches and one of 2; 4 steps a call: calls of 4, 4 and 2 batches, then the partial one.
OVERRIDES = ["data.train_per_class=40", "data.test_per_class=20", "epochs=2", "batch_size=7", "runtime.steps_per_execution=4", "verbose=0", "output_dir=unused"]


# Each variant is trained with both loops: the seed's recipe, a moving average of the weights (validated, then kept, as fit does),
# CutMix, whose new images the scan sends each epoch instead of the split's order, and SAM's own train step.
VARIANTS = {"plain": [], "ema": ["optimizer.use_ema=true", "optimizer.ema_momentum=0.9"], "cutmix": ["cutmix.prob=0.5"], "sam": ["sam.rho=0.05"]}


def trained(loop: str, variant: str, checkpoints: Path) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    import keras

    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONFIG_DIR)):
        cfg = compose("train", [*OVERRIDES, *VARIANTS[variant], f"runtime.loop={loop}"])
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(cfg.seed)
    model = train.build_model(cfg, len(dataset.train), steps_per_execution=4)
    history = train.fit(model, dataset, cfg, CheckpointState(), checkpoints / f"{variant}-{loop}", log_epoch=lambda metrics, epoch: None)
    return model.get_weights(), history


def built_model():
    """The probe's model, untrained: for the names of its weights, in get_weights() order."""
    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONFIG_DIR)):
        cfg = compose("train", OVERRIDES)
    return train.build_model(cfg, 72, steps_per_execution=4)


def nan_message(checkpoints: Path, batches: slice = slice(None)) -> str:
    """The error of a scan whose targets are NaN in the given 0-based batches of epoch 1 (all by default)."""
    import keras

    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONFIG_DIR)):
        cfg = compose("train", [*OVERRIDES, "runtime.loop=scan"])
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(cfg.seed)
    model = train.build_model(cfg, len(dataset.train), steps_per_execution=4)
    targets = np.eye(2, dtype="float32")[dataset.train.labels]
    order = train.epoch_order(len(targets), cfg.seed, 0)
    spots = order[batches.start * cfg.batch_size : batches.stop * cfg.batch_size] if batches.start is not None else order
    targets[spots] = np.nan
    try:
        train.fit(model, dataset, cfg, CheckpointState(), checkpoints / f"nan{batches.start}", log_epoch=lambda metrics, epoch: None, targets=targets)
    except train.NumericalError as error:
        model.get_weights()  # the state went back into the model: its variables are readable
        return str(error)
    return "no error"


def freed_after_training(checkpoints: Path) -> bool:
    """Whether a model trained through the scan is freed once dropped (its compiled steps must not keep it)."""
    import gc
    import weakref

    import keras

    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONFIG_DIR)):
        cfg = compose("train", [*OVERRIDES, "epochs=1", "runtime.loop=scan"])
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(cfg.seed)
    model = train.build_model(cfg, len(dataset.train), steps_per_execution=4)
    train.fit(model, dataset, cfg, CheckpointState(), checkpoints / "freed", log_epoch=lambda metrics, epoch: None)
    alive = weakref.ref(model)
    del model
    gc.collect()
    return alive() is None


def main() -> None:
    import keras

    out, checkpoints = Path(sys.argv[1]), Path(sys.argv[2])
    arrays, histories = {}, {}
    for variant in VARIANTS:
        for loop in ("fit", "scan"):
            weights, histories[f"{variant}_{loop}"] = trained(loop, variant, checkpoints)
            arrays.update({f"{variant}_{loop}_{index}": value for index, value in enumerate(weights)})
    names = [variable.path for variable in built_model().weights]
    np.savez(out, backend=keras.backend.backend(), histories=json.dumps(histories), names=json.dumps(names), nan_message=nan_message(checkpoints), nan_message_late=nan_message(checkpoints, slice(8, 9)), nan_message_last=nan_message(checkpoints, slice(10, 11)), model_freed=freed_after_training(checkpoints), **arrays)


if __name__ == "__main__":
    main()
