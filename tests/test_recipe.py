"""Recipe features: learning-rate schedules, the residual models, early stopping with best-epoch restore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from forgery import schedules
from forgery.config import ConfigError, validate
from forgery.gradcam import cut_model, make_gradcam_heatmap
from forgery.models import resnet
from tests.conftest import TINY_DEMO, run_forgery


def test_cosine_warms_up_then_decays() -> None:
    schedule = schedules.cosine(1e-3, steps_per_epoch=10, epochs=5, warmup_epochs=1.0, final_fraction=0.1)
    rate = lambda step: float(schedule(step))  # noqa: E731
    assert rate(0) == pytest.approx(0.0)
    assert rate(5) == pytest.approx(0.5e-3, rel=1e-3)  # halfway through the warm-up
    assert rate(10) == pytest.approx(1e-3, rel=1e-3)  # the peak
    assert rate(30) < rate(20) < rate(10)
    assert rate(49) == pytest.approx(1e-4, rel=1e-5)  # final_fraction of the peak at the last step (steps count from 0)


def test_a_warm_up_longer_than_the_run_warms_up_over_all_of_it() -> None:
    # 1e308 epochs times the steps is inf, which int() refuses: capped at the run's length first.
    for warmup_epochs in (7.0, 1e308):
        schedule = schedules.cosine(1e-3, steps_per_epoch=10, epochs=5, warmup_epochs=warmup_epochs)
        assert float(schedule(0)) == pytest.approx(0.0) and float(schedule(49)) == pytest.approx(1e-3, rel=1e-5)


def test_constant_is_the_rate() -> None:
    assert schedules.constant(3e-4, 10, 5) == 3e-4


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_schedules_build_into_the_optimizer(compose_train, schedule: str) -> None:
    cfg = compose_train(f"schedule={schedule}", "optimizer.lr=0.002")
    learning_rate = instantiate(cfg.schedule, lr=cfg.optimizer.lr, steps_per_epoch=10, epochs=2)
    optimizer = instantiate(cfg.optimizer, lr=learning_rate)
    # The optimizer's rate follows the schedule step by step (constant: 0.002 throughout).
    for step in (0, 5, 15):
        optimizer.iterations.assign(step)
        expected = 0.002 if schedule == "constant" else float(learning_rate(step))
        assert float(optimizer.learning_rate) == pytest.approx(expected)
    if schedule == "cosine":
        start, peak, later = (float(learning_rate(step)) for step in (0, 10, 15))
        assert start < peak and peak == pytest.approx(0.002) and later < peak  # warm-up, peak after one epoch, decay


@pytest.mark.parametrize(("highpass", "parameters"), [(False, 697_058), (True, 697_922)])
def test_residual_models_stay_under_a_million_parameters_and_explain(highpass: bool, parameters: int) -> None:
    model = resnet("r", [32, 64, 128], 2, highpass=highpass)
    assert model.count_params() == parameters
    heatmap = make_gradcam_heatmap(cut_model(model), np.full((32, 32, 3), 90, dtype="uint8"), 1)
    assert heatmap.shape == (8, 8) and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert ("highpass" in [layer.name for layer in model.layers]) == highpass


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("label_smoothing=1.5", "label_smoothing"),
        ("precision=float8", "precision"),
        ("early_stopping.patience=0", "early_stopping.patience"),
        ("augment.fused=maybe", "augment.fused"),
        ("tta=mirror", "tta"),
        ("seed=4294967296", "seed"),
        ("model.dropout=1.5", "model.dropout"),
        ("data.train_per_class=0", "data.train_per_class"),
        ("schedule=cosine schedule.warmup_epochs=-2", "schedule.warmup_epochs"),
        ("optimizer.name=rmsprop", "optimizer.name"),
        ("early_stopping.metric=val_aucc", "early_stopping.metric"),
        ("early_stopping.metric=val_loss", "early_stopping.metric"),  # lower is better: would keep the worst epoch
        ("sweep.mode=best", "sweep.mode"),
        ("sweep.metric=test_roc_auc", "sweep.metric"),
        ("gradcam.upscale=0", "gradcam.upscale"),
        ("gradcam.alpha=1.5", "gradcam.alpha"),
        ("evidence.gradcam_checks_per_class=0", "evidence.gradcam_checks_per_class"),
        ("evidence.robustness_images=-1", "evidence.robustness_images"),
        ("evidence.robustness_images=1", "evidence.robustness_images"),
    ],
)
def test_recipe_values_are_checked(compose_train, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} "):
        validate(compose_train(*override.split()))


@pytest.mark.parametrize("preset", ["small_fast", "cifake_best", "seed_repro"])
def test_presets_compose_and_validate(compose_train, preset: str) -> None:
    cfg = compose_train(f"experiment={preset}")
    validate(cfg)
    if preset == "cifake_best":
        assert instantiate(cfg.model).count_params() < 1_000_000
    if preset == "small_fast":
        assert instantiate(cfg.model).count_params() == 94_402 and cfg.epochs == 5
    if preset == "seed_repro":  # the notebook: its model, Adam 1e-4, batch 8, 5 epochs, Keras's separate augmentation layers
        assert instantiate(cfg.model).count_params() == 94_402 and cfg.model.padding == "valid"
        assert (cfg.optimizer.lr, cfg.batch_size, cfg.epochs) == (1.0e-4, 8, 5)
        assert [type(layer).__name__ for layer in instantiate(cfg.augment).layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]


@pytest.mark.parametrize(
    ("overrides", "epoch", "accuracy", "auc"),
    [
        (["early_stopping.restore_best=true"], 2, 0.8, 0.95),  # the best val_auc
        (["early_stopping.restore_best=true", "early_stopping.metric=val_accuracy"], 3, 0.9, 0.9),  # the best val_accuracy
        (["early_stopping.restore_best=false"], 3, 0.9, 0.9),  # the last epoch
    ],
)
def test_the_evaluated_epoch_and_its_validation_figures(compose_train, overrides: list[str], epoch: int, accuracy: float, auc: float) -> None:
    from forgery import train

    cfg = compose_train(*overrides)
    history = {"loss": [0.6, 0.5, 0.4], "val_auc": [0.7, 0.95, 0.9], "val_accuracy": [0.6, 0.8, 0.9]}
    assert train.evaluated_epoch(history, cfg) == epoch
    assert train.evaluated_validation(history, cfg) == {"evaluated_val_accuracy": accuracy, "evaluated_val_auc": auc}


def test_a_nan_validation_metric_is_never_the_best_epoch(compose_train) -> None:
    # nan compares false with everything: as the first epoch's value nothing would ever beat it, and argmax
    # would name the nan epoch while the weights restored were another's.
    from forgery import train

    assert not train.improves(float("nan"), None) and not train.improves(float("nan"), 0.5)
    assert train.improves(0.6, None) and train.improves(0.6, 0.5) and not train.improves(0.5, 0.5)
    cfg = compose_train("early_stopping.restore_best=true")
    nan = float("nan")
    assert train.evaluated_epoch({"loss": [0.6, 0.5, 0.4], "val_auc": [0.8, nan, 0.9]}, cfg) == 3
    assert train.evaluated_epoch({"loss": [0.6, 0.5, 0.4], "val_auc": [nan, 0.8, 0.7]}, cfg) == 2
    assert train.evaluated_epoch({"loss": [0.6, 0.5], "val_auc": [nan, nan]}, cfg) == 2  # none ranked: the last, not restored


@pytest.mark.slow
def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path: Path) -> None:
    result = run_forgery(
        "train", "epochs=6", "early_stopping.patience=1", "early_stopping.restore_best=true",
        "optimizer.lr=3e-3", "data.train_per_class=120", "data.test_per_class=30", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    history = [point.value for point in client.get_metric_history(run.info.run_id, "val_auc")]
    best = int(np.argmax(history)) + 1
    assert run.data.metrics["epochs_run"] == len(history)
    assert run.data.metrics["evaluated_epoch"] == best
    assert run.data.metrics["evaluated_val_auc"] == pytest.approx(history[best - 1])
    accuracy = [point.value for point in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert run.data.metrics["evaluated_val_accuracy"] == pytest.approx(accuracy[best - 1])
    if len(history) < 6:  # it stopped early: exactly `patience` epochs after the best one
        assert len(history) - best == 1


def test_weight_averaging_validates_the_weights_it_keeps(compose_train, tmp_path: Path) -> None:
    import keras

    from forgery import checkpoints, train

    cfg = compose_train(*TINY_DEMO, "epochs=2", "batch_size=16", "optimizer.lr=3e-3", "optimizer.use_ema=true", "optimizer.ema_momentum=0.9", "verbose=0")
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(0)
    model = train.build_model(cfg, len(dataset.train))
    history = train.fit(model, dataset, cfg, checkpoints.CheckpointState(), tmp_path / "checkpoints", log_epoch=lambda metrics, epoch: None)

    # What Keras left in the model after the last epoch is the moving average...
    for weight, average in zip(model.trainable_weights, model.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(weight.numpy(), average.numpy())
    # ...and the logged validation loss is that of these weights, not of the raw ones they averaged.
    scores = model.evaluate(dataset.val.images, train.one_hot(dataset.val.labels), batch_size=256, verbose=0, return_dict=True)
    assert scores["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    # The checkpoint a resume starts from holds the same weights and the average itself.
    saved = checkpoints.load_model(tmp_path / "checkpoints")
    for weight, average in zip(saved.trainable_weights, saved.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(weight.numpy(), average.numpy())
    for weight, kept in zip(saved.trainable_weights, model.trainable_weights):
        np.testing.assert_allclose(weight.numpy(), kept.numpy())
    assert train.weight_averaging(model) and not train.weight_averaging(train.build_model(compose_train(*TINY_DEMO), 80))


@pytest.mark.parametrize(("momentum", "steps", "warned"), [(0.99, 282, False), (0.99, 71, True), (0.999, 500, True), (0.9, 5, True)])
def test_an_average_longer_than_an_epoch_is_warned_about(momentum: float, steps: int, warned: bool) -> None:
    from forgery.train import averaging_span_warning

    warning = averaging_span_warning(momentum, steps)
    assert (warning is not None) == warned
    if warning:
        suggested = float(warning.rsplit("=", 1)[1])
        assert 1 / (1 - suggested) <= steps and "\n" not in warning


def test_a_run_resumed_after_early_stopping_trains_no_further_epoch(compose_train, tmp_path: Path) -> None:
    """A run that failed after early stopping had fired (say, in evaluation) resumes straight to evaluation."""
    import keras

    from forgery import checkpoints, train

    cfg = compose_train(*TINY_DEMO, "epochs=5", "early_stopping.patience=2", "early_stopping.restore_best=true", "verbose=0")
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(0)
    model = train.build_model(cfg, len(dataset.train))
    history = {name: [0.6, 0.5, 0.55] for name in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc")}
    state = checkpoints.CheckpointState(epoch=3, logged_epoch=3, history=history, best_epoch=1, best_value=0.6)
    folder = tmp_path / "checkpoints"
    checkpoints.save(folder, model, state, best=True)  # epoch 1's weights, kept as the best
    best = [weight.numpy().copy() for weight in model.weights]
    for weight in model.trainable_weights:
        weight.assign(weight + 0.5)  # epochs 2 and 3 moved the weights on
    checkpoints.save(folder, model, state)  # the latest model: epoch 3's weights
    logged: list[int] = []
    resumed = train.fit(model, dataset, cfg, state, folder, log_epoch=lambda metrics, epoch: logged.append(epoch))
    assert logged == [] and state.epoch == 3 and len(resumed["val_auc"]) == 3  # no epoch 4
    for weight, kept in zip(model.weights, best):
        np.testing.assert_array_equal(weight.numpy(), kept)  # epoch 1's weights restored, not epoch 3's
    assert train.patience_exhausted(state, 2) and not train.patience_exhausted(state, 3) and not train.patience_exhausted(state, None)


def test_early_stopping_is_reported_only_when_it_cut_the_run_short() -> None:
    from forgery import checkpoints, train

    stopped = checkpoints.CheckpointState(epoch=4, best_epoch=2, best_value=0.72591)
    assert train.early_stop_message(stopped, 2, 6, "val_auc") == "early stopping after epoch 4 of 6: val_auc has not improved for 2 epochs (best 0.7259 at epoch 2)"
    assert train.early_stop_message(stopped, 2, 4, "val_auc") is None  # every planned epoch ran: nothing was stopped
    assert train.early_stop_message(stopped, 3, 6, "val_auc") is None and train.early_stop_message(stopped, None, 6, "val_auc") is None


def test_a_ctrl_c_while_an_epoch_is_logged_is_not_logged_twice_on_resume(compose_train, tmp_path: Path) -> None:
    """SIGINT arriving inside the MLflow write of epoch 1: the checkpoint must already say epoch 1 was logged."""
    import os
    import signal

    import keras

    from forgery import checkpoints, interrupts, train

    cfg = compose_train(*TINY_DEMO, "epochs=2", "verbose=0")
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(0)
    model = train.build_model(cfg, len(dataset.train))
    logged: list[int] = []

    def log_epoch(metrics: dict[str, float], epoch: int) -> None:
        with interrupts.deferred():  # as Tracker's own write is: the signal is held, then raised at its end
            os.kill(os.getpid(), signal.SIGINT)
            logged.append(epoch)

    folder = tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        train.fit(model, dataset, cfg, checkpoints.CheckpointState(), folder, log_epoch=log_epoch)
    state = checkpoints.load_state(folder)
    assert logged == [1] and state is not None and state.epoch == state.logged_epoch == 1
    resumed_logs: list[int] = []
    train.fit(checkpoints.load_model(folder), dataset, cfg, state, folder, log_epoch=lambda metrics, epoch: resumed_logs.append(epoch))
    assert resumed_logs == [2]  # epoch 1 is not logged again


def test_epochs_logged_late_on_resume_are_recorded_as_logged_at_once(compose_train, tmp_path: Path) -> None:
    # A run killed between an epoch's checkpoint and its logging: the resume logs that epoch first, and the
    # state file must say so before anything else can stop the run, or the next resume logs it again.
    import keras

    from forgery import checkpoints, train

    cfg = compose_train(*TINY_DEMO, "epochs=1", "verbose=0")
    dataset = instantiate(cfg.data)
    keras.utils.set_random_seed(0)
    folder = tmp_path / "checkpoints"
    train.fit(train.build_model(cfg, len(dataset.train)), dataset, cfg, checkpoints.CheckpointState(), folder, log_epoch=lambda metrics, epoch: None)
    state = checkpoints.load_state(folder)
    state.logged_epoch = 0  # checkpointed, not logged
    checkpoints.write_state(folder, state)
    logged: list[int] = []
    train.fit(checkpoints.load_model(folder), dataset, cfg, checkpoints.load_state(folder), folder, log_epoch=lambda metrics, epoch: logged.append(epoch))
    assert logged == [1] and checkpoints.load_state(folder).logged_epoch == 1


@pytest.mark.parametrize(
    ("previous", "batch", "steps", "expected"),
    [
        (1, 2, 10, "batch 3"),
        (-1, 31, 4, "batches 1-4"),  # Keras names the call's last batch past the epoch's end
        (31, 63, 100, "batches 33-64"),
        (95, 127, 100, "batches 97-100"),
        (-1, 0, None, "batch 1"),
        (7, 9, 11, "batches 9-10"),  # the on-device loop's calls: 1-4, 5-8, then the leftover 9-10 ...
        (9, 10, 11, "batch 11"),  # ... and the partial batch alone (a fixed span named 7-10 and 8-11)
    ],
)
def test_a_nan_names_the_batches_one_callback_speaks_for(previous: int, batch: int, steps: int | None, expected: str) -> None:
    from forgery.train import batch_span

    assert batch_span(previous, batch, steps) == expected


def test_each_epoch_draws_new_random_numbers_whatever_the_seed() -> None:
    """Augmentation and dropout draws: fixed by (seed, epoch), and never a replay of another epoch's shifted by a batch."""
    import keras

    from forgery import augment
    from forgery.models import cnn
    from forgery.train import reset_random_generators

    block = augment.build_augmentation("light", flip="horizontal", rotation=0.1, zoom=0.1)
    model = cnn("draws", [4], augmentation=block)
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")

    def epoch_draws(seed: int, epoch: int) -> list[np.ndarray]:
        reset_random_generators(model, seed, epoch)
        return [keras.ops.convert_to_numpy(block(images, training=True)) for _ in range(3)]

    first, second = epoch_draws(42, 0), epoch_draws(42, 1)
    for mine in first:
        assert all(not np.allclose(mine, theirs) for theirs in second)
    np.testing.assert_array_equal(epoch_draws(42, 0)[2], first[2])  # the same (seed, epoch), the same draws
    reset_random_generators(model, 2**32 - 1, 7)  # the largest seed config allows: its key still fits JAX's uint32 state
    states = [keras.ops.convert_to_numpy(variable) for variable in model.variables if variable.path.endswith("seed_generator_state")]
    assert states and all(0 <= int(state[0]) < 2**32 and int(state[1]) == 0 for state in states)


@pytest.mark.parametrize(
    ("limit", "expected", "shares"),
    [(1, None, (70, 30)), (2, [1, 1], (70, 30)), (10, [7, 3], (70, 30)), (0, [70, 30], (70, 30)), (500, [70, 30], (70, 30)),
     (5, [3, 2], (50, 50)), (7, [4, 3], (50, 50)), (3, [2, 1], (98, 2))],
)
def test_the_robustness_subset_keeps_both_classes(limit: int, expected: list[int] | None, shares: tuple[int, int]) -> None:
    # Exactly `limit` images: rounding each class's share half to even once gave 2 + 2 for a limit of 5.
    from forgery.train import evidence_subset

    labels = np.array([0] * shares[0] + [1] * shares[1])
    subset = evidence_subset(labels, limit, seed=3)
    assert len(subset) == min(limit or 100, 100) and len(set(subset.tolist())) == len(subset) and list(subset) == sorted(subset)
    if expected is not None:
        assert np.bincount(labels[subset], minlength=2).tolist() == expected
    np.testing.assert_array_equal(subset, evidence_subset(labels, limit, seed=3))


@pytest.mark.parametrize(("epochs", "warned"), [(1, True), (2, False)])
def test_a_warm_up_as_long_as_the_run_is_warned_about(compose_train, caplog: pytest.LogCaptureFixture, epochs: int, warned: bool) -> None:
    from forgery import train

    cfg = compose_train(*TINY_DEMO, "schedule=cosine", "schedule.warmup_epochs=1", f"epochs={epochs}")
    with caplog.at_level("WARNING", logger="forgery.train"):
        train.build_model(cfg, 80)
    assert any("covers the whole run" in record.getMessage() for record in caplog.records) == warned
