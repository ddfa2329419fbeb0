"""Distillation: mixed targets, the teacher checks (a real MLflow store), the label-reading AUC, and a student trained end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from forgery import distill, metrics
from forgery.config import ConfigError
from tests.conftest import TINY_DEMO, run_forgery

SPLIT = {"data._target_": "forgery.data.load_cifake", "data.root": "/data/cifake", "data.seed": "42", "data.val_fraction": "0.1", "data.train_fraction": "1.0", "data.cache_dir": "None"}


def test_mixed_targets_keep_the_label_as_each_targets_class() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    teacher = rng.dirichlet([0.3, 0.3], 500).astype("float32")  # often confidently wrong
    targets = distill.mixed_targets(labels, teacher, 0.45)
    assert targets.dtype == np.float32 and targets.shape == (500, 2)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(targets, axis=1), labels)
    np.testing.assert_allclose(targets[0], 0.55 * np.eye(2)[labels[0]] + 0.45 * teacher[0], rtol=1e-6)


def test_mixed_targets_refuse_probabilities_that_do_not_match_the_labels() -> None:
    with pytest.raises(ValueError, match="for 3 labels"):
        distill.mixed_targets(np.array([0, 1, 0]), np.full((2, 2), 0.5, "float32"), 0.3)


def test_label_agreement_counts_the_teachers_top_class() -> None:
    teacher = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    assert distill.label_agreement(np.array([0, 1, 1, 1]), teacher) == 0.75


def test_split_mismatch_names_the_setting_that_moves_images() -> None:
    assert distill.split_mismatch(SPLIT, dict(SPLIT)) is None
    # A teacher trained on a share of the training split, or with another cache, saw no validation image.
    assert distill.split_mismatch({**SPLIT, "data.train_fraction": "0.5", "data.cache_dir": "/tmp/c"}, SPLIT) is None
    assert distill.split_mismatch({**SPLIT, "data.seed": "1"}, SPLIT) == "data.seed=1 (this run: 42)"
    assert distill.split_mismatch({**SPLIT, "data._target_": "forgery.demo_data.load_demo"}, SPLIT) == "data._target_=forgery.demo_data.load_demo (this run: forgery.data.load_cifake)"
    demo = {"data.train_per_class": "40"}
    assert distill.split_mismatch(SPLIT, {**SPLIT, **demo}) == "data.train_per_class=(unset) (this run: 40)"


def logged_run(status: str, params: dict[str, str]) -> str:
    """A run in the current (test) store with these data params, ended with `status`."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_params(params)
    mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_check_teacher_reads_the_store(mlflow_store: str) -> None:
    from forgery import tracking

    finished = logged_run("FINISHED", SPLIT)
    distill.check_teacher(finished, tracking.get_run(finished), SPLIT, mlflow_store)  # accepted: no exception
    with pytest.raises(ConfigError, match=r"data\.seed=42 \(this run: 7\).*would leak"):
        distill.check_teacher(finished, tracking.get_run(finished), {**SPLIT, "data.seed": "7"}, mlflow_store)
    failed = logged_run("FAILED", SPLIT)
    with pytest.raises(ConfigError, match=f"run {failed} is FAILED, not FINISHED"):
        distill.check_teacher(failed, tracking.get_run(failed), SPLIT, mlflow_store)
    with pytest.raises(ConfigError, match="no MLflow run with id 'f00' in sqlite"):
        distill.check_teacher("f00", tracking.get_run("f00"), SPLIT, mlflow_store)


def test_a_sweeps_parent_run_is_refused_as_one(mlflow_store: str) -> None:
    # The sweep's summary lives on its parent, so its id is the one a user has at hand; it logs no data
    # settings, which the split check would report as "trained on another split".
    from forgery import tracking

    parent = tracking.start_parent_run("image-forgery", "sweep", {"sweep": "parent"}, {"sweep.metric": "val_auc"})
    tracking.finish_parent_run(parent, "FINISHED", {}, {}, {})
    with pytest.raises(ConfigError, match=rf"^distill\.teacher: run {parent} is a sweep's parent run, which trains no model; name one of its job runs$"):
        distill.check_teacher(parent, tracking.get_run(parent), SPLIT, mlflow_store)


def test_a_teacher_without_a_model_is_refused_in_one_line(mlflow_store: str) -> None:
    from forgery import train
    from forgery.data import Split

    finished = logged_run("FINISHED", SPLIT)  # finished, but it logged no model
    images = np.zeros((4, 32, 32, 3), "uint8")
    with pytest.raises(ConfigError, match=f"^distill.teacher: run {finished} has no loadable model"):
        train.teacher_targets(finished, Split(images, np.array([0, 1, 0, 1])), 0.3)


def test_a_teacher_whose_answers_cannot_be_targets_is_refused_in_one_line(monkeypatch) -> None:
    import keras

    from forgery import tracking, train
    from forgery.data import Split

    def model(units: int, bias: float) -> keras.Model:
        inputs = keras.Input((32, 32, 3))
        outputs = keras.layers.Dense(units, activation="softmax", bias_initializer=keras.initializers.Constant(bias))(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, outputs)

    images, labels = np.zeros((4, 32, 32, 3), "uint8"), np.array([0, 1, 0, 1])
    monkeypatch.setattr(tracking, "load_run_model", lambda run_id: model(2, float("nan")))
    with pytest.raises(ConfigError, match=r"^distill\.teacher: run abc's model gives non-finite probabilities \(nan or inf\) for 4 of the 4 training images"):
        train.teacher_targets("abc", Split(images, labels), 0.3)
    monkeypatch.setattr(tracking, "load_run_model", lambda run_id: model(3, 0.0))
    with pytest.raises(ConfigError, match=r"^distill\.teacher: run abc's model answers with shape \(4, 3\) for 4 images"):
        train.teacher_targets("abc", Split(images, labels), 0.3)
    monkeypatch.setattr(tracking, "load_run_model", lambda run_id: model(2, 0.0))
    targets, agreement = train.teacher_targets("abc", Split(images, labels), 0.3)  # a sound teacher: accepted
    assert targets.shape == (4, 2) and np.isfinite(targets).all()


def test_label_auc_reads_soft_targets_as_their_labels() -> None:
    import keras

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    predictions = np.stack([1 - scores, scores], axis=1).astype("float32")
    hard = np.eye(2, dtype="float32")[labels]
    soft = distill.mixed_targets(labels, rng.dirichlet([1, 1], 400).astype("float32"), 0.4)

    def score(metric: keras.metrics.Metric, targets: np.ndarray) -> float:
        metric.update_state(targets, predictions)
        return float(metric.result())

    def make(kind: type) -> keras.metrics.Metric:
        return kind(multi_label=True, num_labels=2, num_thresholds=500)

    expected = score(make(keras.metrics.AUC), hard)
    assert 0.6 < expected < 0.95
    assert score(make(metrics.LabelAUC), soft) == pytest.approx(expected, abs=1e-6)
    assert score(make(metrics.LabelAUC), hard) == pytest.approx(expected, abs=1e-6)
    # Why the metric exists: Keras's own AUC counts every non-zero share of a soft target as a positive.
    assert abs(score(make(keras.metrics.AUC), soft) - expected) > 0.05


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["distill.teacher=abc", "distill.weight=0.5"], "distill.weight must be above 0 and below 0.5"),
        (["distill.teacher=abc", "distill.weight=0"], "distill.weight must be above 0 and below 0.5"),
        (["distill.teacher=' '"], "distill.teacher must be an MLflow run id (or null for no teacher)"),
        (["distill.teacher=3"], "distill.teacher must be an MLflow run id (or null for no teacher), got 3"),
    ],
)
def test_config_refuses_bad_distillation_settings(compose_train, overrides: list[str], expected: str) -> None:
    from forgery.config import validate

    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_train(*overrides))


def test_no_teacher_needs_no_weight_check(compose_train) -> None:
    from forgery.config import validate

    validate(compose_train("distill.weight=0.9"))  # unused without a teacher: accepted


def test_missing_teacher_is_one_line_and_creates_no_store(tmp_path: Path) -> None:
    result = run_forgery("train", "distill.teacher=0123abc", *TINY_DEMO, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: distill.teacher: no MLflow run with id '0123abc' in sqlite:///{tmp_path / 'mlflow.db'} (train in the folder of the teacher's store)"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_student_learns_from_a_teacher_run_and_refuses_another_split(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    small = [*TINY_DEMO, "epochs=2", "evidence.robustness_images=100", "evidence.gradcam_checks_per_class=4"]
    teacher = run_forgery("train", *small, cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-forgery")
    (teacher_run,) = client.search_runs([experiment.experiment_id])

    student = run_forgery("train", *small, f"distill.teacher={teacher_run.info.run_id}", "distill.weight=0.25", cwd=tmp_path)
    assert student.returncode == 0, student.stderr[-3000:]
    assert f"distillation: teacher {teacher_run.info.run_id} scored 72 training images" in student.stdout + student.stderr
    assert "Downloading artifacts" not in student.stderr
    runs = client.search_runs([experiment.experiment_id], filter_string=f"params.`distill.teacher` = '{teacher_run.info.run_id}'")
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.params["distill.weight"] == "0.25"
    assert 0.0 <= logged.metrics["distill_teacher_label_agreement"] <= 1.0
    # Trained on soft targets, the run still reports a training AUC read from labels, within [0, 1].
    assert [point.step for point in client.get_metric_history(runs[0].info.run_id, "auc")] == [1, 2]
    assert 0.0 <= logged.metrics["auc"] <= 1.0

    other_split = run_forgery("train", *small, "seed=7", f"distill.teacher={teacher_run.info.run_id}", cwd=tmp_path, timeout=120)
    assert other_split.returncode == 2
    assert f"error: distill.teacher: run {teacher_run.info.run_id} trained on another split or dataset, data.seed=42 (this run: 7)" in other_split.stderr
    assert len(client.search_runs([experiment.experiment_id])) == 2  # refused before a run opened


@pytest.mark.parametrize(("spread", "tolerance"), [(0.1, 3e-4), (0.5, 6e-5), (5.0, 1e-5)])
def test_the_tracked_auc_matches_the_exact_roc_auc_on_timid_scores(spread: float, tolerance: float) -> None:
    # A first epoch's logits crowd near 0, where cut-offs 0.064 apart tied enough images to be 1e-3 off.
    from sklearn.metrics import roc_auc_score

    from forgery.evaluate import ranking_scores
    from forgery.train import run_metrics

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 5000)
    margins = (labels * 2 - 1) * spread * 0.5 + rng.normal(0, spread, 5000)
    predictions = softmax(np.stack([np.zeros(5000), margins], axis=1), axis=1).astype("float32")
    tracked = run_metrics()[1]
    tracked.update_state(np.eye(2, dtype="float32")[labels], predictions)
    assert float(tracked.result()) == pytest.approx(roc_auc_score(labels, ranking_scores(predictions)), abs=tolerance)


def test_the_tracked_auc_matches_the_exact_roc_auc_on_confident_scores() -> None:
    from sklearn.metrics import roc_auc_score

    from forgery.train import run_metrics

    import keras

    labels = np.repeat([0, 1], 1000)
    # a confident network: most scores within 0.002 of 0 or 1, where evenly spaced cut-offs see one bucket,
    # and many REAL margins past 16.6, where a float32 softmax rounds p(REAL) to exactly 1
    wrong = np.arange(2000) % 20 == 0  # one FAKE image in twenty confidently called REAL
    margins = np.where(labels == 1, 22.0, np.where(wrong, 20.0, -22.0)) + np.random.default_rng(0).normal(0, 4, 2000)
    predictions = keras.ops.convert_to_numpy(keras.ops.softmax(np.stack([np.zeros(2000), margins], axis=1).astype("float32")))
    targets = np.eye(2, dtype="float32")[labels]
    exact = roc_auc_score(labels, margins)  # on the float64 margins: no ties
    assert abs(roc_auc_score(labels, predictions[:, 1]) - exact) > 1e-3  # one float32 column ties the confident calls
    tracked = run_metrics()[1]
    tracked.update_state(targets, predictions)
    assert float(tracked.result()) == pytest.approx(exact, abs=1e-4)
    evenly_spaced = metrics.LabelAUC(multi_label=True, num_labels=2, num_thresholds=500)
    evenly_spaced.update_state(targets, predictions)
    assert abs(float(evenly_spaced.result()) - exact) > 1e-3  # what the spacing fixes
    # and it compiles into a training step whose batches are all full (a fixed batch shape)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=run_metrics())
    history = model.fit(np.random.default_rng(1).random((16, 4)), np.eye(2)[np.arange(16) % 2], batch_size=8, epochs=1, verbose=0)
    assert 0.0 <= history.history["auc"][0] <= 1.0
    restored = metrics.LabelAUC.from_config(run_metrics()[1].get_config())
    assert restored.logit_spaced is True  # a checkpoint's metric keeps the spacing


def test_a_teacher_that_validated_on_other_images_is_refused() -> None:
    """Same data settings on a folder that has changed draw another validation split, most of whose
    images the teacher trained on: the settings alone passed it."""
    from types import SimpleNamespace

    from forgery.data import validation_fingerprint

    rng = np.random.default_rng(0)
    val = SimpleNamespace(images=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), labels=np.array([0, 1, 0, 1, 0, 1]))
    dataset = SimpleNamespace(val=val, train=SimpleNamespace(images=np.zeros((2, 32, 32, 3), np.uint8)))
    print_ = validation_fingerprint(dataset)
    dataset.train.images[0, 0, 0, 0] = 1  # training images are the teacher's business (train_fraction may differ)
    assert validation_fingerprint(dataset) == print_
    relabelled = SimpleNamespace(val=SimpleNamespace(images=val.images, labels=val.labels[::-1].copy()))
    changed = SimpleNamespace(val=SimpleNamespace(images=val.images.copy(), labels=val.labels))
    changed.val.images[5, 31, 31, 2] ^= 1
    assert len({print_, validation_fingerprint(relabelled), validation_fingerprint(changed)}) == 3

    assert distill.check_teacher_validation("abc", {distill.VALIDATION_PARAM: print_}, print_) is None
    with pytest.raises(ConfigError, match="run abc validated on other images than this run's .* would leak into training$"):
        distill.check_teacher_validation("abc", {distill.VALIDATION_PARAM: validation_fingerprint(changed)}, print_)
    note = distill.check_teacher_validation("abc", {}, print_)  # a run from before the record
    assert note == "distill.teacher: run abc predates the validation-split record, so whether it trained on this run's validation images cannot be checked"


@pytest.mark.slow
def test_a_teacher_trained_before_its_folder_changed_is_refused_end_to_end(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "cifake"
    for split, count in (("train", 30), ("test", 6)):
        for name in ("FAKE", "REAL"):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / name / f"{index}.jpg")
    small = ["data=cifake", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "epochs=1", "evidence.robustness_images=8", "evidence.gradcam_checks_per_class=2"]
    teacher = run_forgery("train", *small, cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (teacher_run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    assert len(teacher_run.data.params[distill.VALIDATION_PARAM]) == 16
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "train" / "FAKE" / "new.jpg")
    student = run_forgery("train", *small, f"distill.teacher={teacher_run.info.run_id}", cwd=tmp_path, timeout=180)
    assert student.returncode == 2, student.stderr[-3000:]
    errors = [line for line in student.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: distill.teacher: run {teacher_run.info.run_id} validated on other images than this run's (same settings, but the data has changed since: files added, removed or altered draw another split); its answers on this run's validation images would leak into training"]
    assert len(client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])) == 1  # refused before a run opened
