"""Runs that overlap in one folder: both are recorded whole, and promote never sees a half-finished one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_forgery

TINY = ["epochs=1", "data.train_per_class=60", "data.test_per_class=20"]


def environment(folder: Path) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**base, "PYTHONUNBUFFERED": "1", "FORGERY_CACHE_DIR": str(folder / "cache")}


def training(folder: Path, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "forgery.train", *arguments],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment(folder),
    )  # fmt: skip


@pytest.mark.slow
def test_two_trainings_started_at_once_in_an_empty_folder_both_finish(tmp_path: Path) -> None:
    # The first use of a new SQLite store migrates its schema: without the lock, one of the two fails there.
    processes = [training(tmp_path, *TINY, f"seed={seed}") for seed in (1, 2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    # Started in the same second, each still has a folder of its own (one shared folder mixed their files).
    folders = {run.data.tags["hydra_output_dir"] for run in runs}
    assert len(folders) == 2, folders
    for run in runs:
        logged = Path(client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path / run.info.run_id)))
        assert f"seed: {run.data.params['seed']}" in logged.read_text().splitlines()
        assert (Path(run.data.tags["hydra_output_dir"]) / "model" / "model.keras").is_file()
        reports = {entry.path for entry in client.list_artifacts(run.info.run_id, "report")}
        assert {"report/training_metrics.json", "report/gradcam_results.json", "report/robustness.json"} <= reports
        assert "test_roc_auc" in run.data.metrics


@pytest.mark.slow
def test_promote_during_training_sees_only_finished_runs(tmp_path: Path) -> None:
    process = training(tmp_path, "epochs=3", "data.train_per_class=1500", "data.test_per_class=50", "verbose=2")
    assert process.stdout is not None
    for line in process.stdout:
        if "Epoch 1/3" in line:  # the run is open and writing
            break
    during = run_forgery("promote", cwd=tmp_path, timeout=120)
    assert during.returncode == 2 and "FINISHED" in during.stderr, during.stderr
    assert not (tmp_path / "public").exists()
    process.communicate(timeout=600)
    assert process.returncode == 0
    after = run_forgery("promote", cwd=tmp_path, timeout=120)
    assert after.returncode == 0, after.stderr
    assert (tmp_path / "public" / "projects" / "image-forgery" / "training_metrics.json").is_file()
