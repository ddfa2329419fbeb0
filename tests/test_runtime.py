"""Runtime settings: what `auto` resolves to, refusals, TensorFlow's fixed thread pools, and that batching steps changes no result."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hydra.utils import instantiate

from forgery import runtime, train
from forgery.checkpoints import CheckpointState
from forgery.config import ConfigError, validate
from tests.conftest import TINY_DEMO


def resolve(backend: str = "tensorflow", batch_size: int = 8, gpu: bool = False, **settings: int | str) -> runtime.Runtime:
    chosen = {"steps_per_execution": "auto", "intra_op_threads": "auto", "inter_op_threads": "auto", **settings}
    return runtime.resolve(chosen["steps_per_execution"], chosen["intra_op_threads"], chosen["inter_op_threads"], backend, batch_size, cpus=4, has_gpu=gpu)


def test_small_batches_on_a_cpu_get_one_thread_per_op_and_every_cpu_side_by_side() -> None:
    assert resolve(batch_size=8) == runtime.Runtime("tensorflow", runtime.AUTO_STEPS_PER_EXECUTION, 1, 4)
    assert resolve(batch_size=runtime.SMALL_BATCH - 1).intra_op_threads == 1


def test_larger_batches_a_gpu_or_another_backend_keep_the_defaults() -> None:
    assert resolve(batch_size=runtime.SMALL_BATCH) == runtime.Runtime("tensorflow", runtime.AUTO_STEPS_PER_EXECUTION, 0, 0)
    assert resolve(batch_size=8, gpu=True) == runtime.Runtime("tensorflow", runtime.AUTO_STEPS_PER_EXECUTION, 0, 0)
    assert resolve("jax", batch_size=8) == runtime.Runtime("jax", runtime.AUTO_STEPS_PER_EXECUTION, 0, 0)


def test_torch_runs_one_step_per_execution_and_refuses_more() -> None:
    assert resolve("torch").steps_per_execution == 1
    assert resolve("torch", steps_per_execution=1).steps_per_execution == 1
    with pytest.raises(ConfigError, match=r"^runtime.steps_per_execution must be 1 on the torch backend"):
        resolve("torch", steps_per_execution=8)


def test_numbers_given_are_kept() -> None:
    assert resolve(steps_per_execution=4, intra_op_threads=2, inter_op_threads=3) == runtime.Runtime("tensorflow", 4, 2, 3)
    # Threads per op set by hand: `auto` side by side then leaves TensorFlow's default.
    assert resolve(intra_op_threads=2).inter_op_threads == 0


def test_the_log_line_names_every_setting() -> None:
    line = runtime.Runtime("tensorflow", 32, 1, 2).describe()
    assert line == "runtime: tensorflow backend, 32 steps per execution, threads per op 1, ops side by side 2"
    assert runtime.Runtime("jax", 32, 0, 0).describe() == "runtime: jax backend, 32 steps per execution"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("runtime.steps_per_execution=0", "runtime.steps_per_execution"),
        ("runtime.steps_per_execution=fast", "runtime.steps_per_execution"),
        ("runtime.intra_op_threads=-1", "runtime.intra_op_threads"),
        ("runtime.inter_op_threads=1.5", "runtime.inter_op_threads"),
    ],
)
def test_bad_runtime_values_are_refused_naming_the_key(compose_train, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} must be auto or a whole number"):
        validate(compose_train(override))


def test_a_started_tensorflow_keeps_its_pools_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started: its pools are fixed from here on
    threading = tf.config.threading
    before = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    wanted = (before[0] + 3, before[1] + 3)
    with caplog.at_level(logging.WARNING, logger="forgery.runtime"):
        in_effect = runtime.set_tensorflow_threads(*wanted)
    assert in_effect == before == (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    assert "TensorFlow already started in this process" in caplog.text and f"a fresh process would use {wanted[0]} and {wanted[1]}" in caplog.text


def test_steps_per_execution_changes_no_weight(compose_train, tmp_path) -> None:
    import keras

    cfg = compose_train(*TINY_DEMO, "epochs=1", "batch_size=8", "verbose=0")
    dataset = instantiate(cfg.data)
    weights = []
    for steps in (1, 5):  # 9 steps an epoch: one at a time, or a full execution of 5 and a short one of 4
        keras.utils.set_random_seed(cfg.seed)
        model = train.build_model(cfg, len(dataset.train), steps_per_execution=steps)
        assert model.steps_per_execution == steps
        train.fit(model, dataset, cfg, CheckpointState(), tmp_path / f"checkpoints-{steps}", log_epoch=lambda metrics, epoch: None)
        weights.append(model.get_weights())
    for one_at_a_time, batched in zip(*weights):
        np.testing.assert_allclose(batched, one_at_a_time, rtol=1e-5, atol=1e-6)


def test_configure_reports_the_pools_in_effect_not_the_ones_wanted() -> None:
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    threading = tf.config.threading
    in_effect = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    for batch_size in (8, 256):  # two different wishes; whatever they are, the log line must tell the truth
        chosen = runtime.configure("auto", "auto", "auto", batch_size)
        assert (chosen.intra_op_threads, chosen.inter_op_threads) == in_effect
        assert chosen.steps_per_execution == runtime.AUTO_STEPS_PER_EXECUTION
