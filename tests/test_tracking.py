"""The MLflow door: params flattening, and runs that always end with the right status in a real store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from forgery import tracking


def test_flatten_params_uses_dotted_keys() -> None:
    params = tracking.flatten_params({"optimizer": {"lr": 0.001, "name": "adam"}, "epochs": 5, "model": {"filters": [32, 64]}})
    assert params == {"optimizer.lr": "0.001", "optimizer.name": "adam", "epochs": "5", "model.filters": "[32, 64]"}


def test_overlong_params_are_cut_not_fatal() -> None:
    assert len(tracking.flatten_params({"text": "x" * 7000})["text"]) == 6000


def _only_run(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_ends_finished_with_metrics_at_steps(mlflow_store: str) -> None:
    tracker = tracking.Tracker(None)
    with tracker.run("unit", "ok", {"purpose": "test"}):
        tracker.metrics({"loss": 0.5}, step=1)
        tracker.metrics({"loss": 0.4}, step=2)
    run = _only_run(mlflow_store)
    assert run.info.status == "FINISHED" and run.data.tags["purpose"] == "test"
    history = MlflowClient(mlflow_store).get_metric_history(run.info.run_id, "loss")
    assert [(point.step, point.value) for point in history] == [(1, 0.5), (2, 0.4)]


def test_run_ends_failed_with_the_reason(mlflow_store: str) -> None:
    with pytest.raises(RuntimeError), tracking.Tracker(None).run("unit", None, {}):
        raise RuntimeError("disk full")
    run = _only_run(mlflow_store)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "RuntimeError: disk full"


def test_a_reopened_run_that_finishes_drops_the_earlier_failure_reason(mlflow_store: str) -> None:
    with pytest.raises(KeyboardInterrupt), tracking.Tracker(None).run("unit", None, {}) as run_id:
        raise KeyboardInterrupt
    assert MlflowClient(mlflow_store).get_run(run_id).data.tags["failure_reason"] == "interrupted (KeyboardInterrupt)"
    with tracking.Tracker(None).run("unit", None, {}, run_id=run_id):  # as resume= reopens it
        pass
    run = MlflowClient(mlflow_store).get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags


def test_run_ends_killed_on_ctrl_c(mlflow_store: str) -> None:
    with pytest.raises(KeyboardInterrupt), tracking.Tracker(None).run("unit", None, {}):
        raise KeyboardInterrupt
    assert _only_run(mlflow_store).info.status == "KILLED"


def test_a_refused_call_leaves_the_store_copy_failed_and_the_whole_run_journalled(mlflow_store: str, tmp_path) -> None:
    import json

    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    tracker = tracking.Tracker(journal)
    with tracker.run("unit", "refused", {}):
        tracker.params({"lr": "0.1"})
        tracker.params({"lr": "0.2"})  # MLflow refuses to change a logged param: the store's copy is now incomplete
        tracker.metrics({"test_accuracy": 0.9})
    assert tracker.lost is not None and tracker.lost.startswith("MlflowException: ")
    run = _only_run(mlflow_store)
    # Not FINISHED (MLflow's exit hook would have said so): promote must never take it for a complete run.
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].endswith(f"python -m forgery.upload {journal.parent}")
    assert "test_accuracy" not in run.data.metrics
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [entry["kind"] for entry in entries] == ["start", "params", "params", "metrics", "end"]
    assert entries[-1]["status"] == "FINISHED"  # what forgery.upload replays: the run itself completed


def test_git_tags_outside_a_checkout_are_empty(tmp_path) -> None:
    assert tracking.git_tags(tmp_path) == {}


def test_seeded_runs_still_get_different_names(mlflow_store: str) -> None:
    import random

    names = []
    for _ in range(2):
        random.seed(42)  # what keras.utils.set_random_seed does before every run
        with tracking.Tracker(None).run("unit", None, {}):
            pass
        names.append(MlflowClient(mlflow_store).search_runs([MlflowClient(mlflow_store).get_experiment_by_name("unit").experiment_id], max_results=1, order_by=["start_time DESC"])[0].info.run_name)
    assert names[0] != names[1]
    random.seed(42)
    expected = random.random()
    random.seed(42)
    with tracking.Tracker(None).run("unit", None, {}):
        assert random.random() == expected  # the training's seeded stream is left as it was
