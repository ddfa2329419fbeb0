"""A dead or dying tracking server: refuse before work starts, never lose a run that is under way."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from forgery import checkpoints
from forgery.runtime import NATIVE_STARTUP_NOISE
from tests.conftest import run_forgery


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on localhost with its store in `store`, ready to answer."""
    store.mkdir(exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
            return server
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_server(server)
                raise
            time.sleep(1)


def stop_server(server: subprocess.Popen) -> None:
    """Kill the server and its workers at once, like a crash."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


@pytest.mark.parametrize(
    "command",
    [["train", "epochs=1"], ["train", "-m", "epochs=1", "optimizer.lr=1e-3,1e-4"], ["promote"], ["predict", "image.png", "run_id=0123456789abcdef0123456789abcdef"]],
    ids=["train", "sweep", "promote", "predict"],
)
def test_unreachable_server_stops_the_command_before_any_work(tmp_path: Path, command: list[str]) -> None:
    started = time.monotonic()
    result = run_forgery(*command, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: MLflow tracking server http://127\.0\.0\.1:\d+ is not reachable", lines[0]), result.stderr
    assert time.monotonic() - started < 60  # one health check, not minutes of MLflow's retries
    assert not list(tmp_path.rglob("checkpoints")) and not (tmp_path / "public").exists()  # no work happened


def test_upload_refuses_a_folder_without_a_journal(tmp_path: Path) -> None:
    result = run_forgery("upload", str(tmp_path), cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == f"error: no tracking journal at {tmp_path / 'tracking_journal.jsonl'}"


def train_while_the_server_dies(store: Path, work: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python -m forgery.train ARGUMENTS` in `work` against a real server on `store`, killed while epoch 2 of 3 trains."""
    work.mkdir(exist_ok=True)
    port = free_port()
    server = start_server(store, port)
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    environment.update({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1", "FORGERY_CACHE_DIR": str(work / "cache")})
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.train", *arguments, "epochs=3", "data.test_per_class=100", "verbose=2"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "Epoch 2/3" in line:
                stop_server(server)
                break
        stdout, stderr = process.communicate(timeout=900)
    finally:
        stop_server(server)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_server_lost_mid_run_keeps_the_outputs_and_uploads_later(tmp_path: Path) -> None:
    store, work = tmp_path / "server", tmp_path / "work"
    training = train_while_the_server_dies(store, work, "data.train_per_class=2500")
    stderr = training.stderr
    assert training.returncode == 1, stderr[-2000:]
    assert "error: an MLflow call failed during the run" in stderr
    upload = re.search(r"python -m forgery\.upload (\S+)", stderr)
    assert upload is not None, stderr[-2000:]
    output_dir = Path(upload.group(1))
    assert (output_dir / "report" / "training_metrics.json").is_file()  # the work finished and stayed on disk
    assert checkpoints.load_state(output_dir / "checkpoints") is not None  # its state, with the model file it names

    port = free_port()
    server = start_server(store, port)  # the server is back, with the same store
    try:
        result = run_forgery("upload", str(output_dir), cwd=work, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert not NATIVE_STARTUP_NOISE.search(result.stderr), result.stderr  # TensorFlow's start-up chatter is held back
        client = MlflowClient(f"http://127.0.0.1:{port}")
        runs = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
        (uploaded,) = [run for run in runs if "original_run_id" in run.data.tags]
        links = [line for line in result.stdout.splitlines() if "View run" in line]  # not one for the original it ends
        assert len(links) == 1 and links[0].endswith(f"/runs/{uploaded.info.run_id}"), result.stdout
        assert uploaded.info.status == "FINISHED"
        assert [point.step for point in client.get_metric_history(uploaded.info.run_id, "val_auc")] == [1, 2, 3]
        assert "test_roc_auc" in uploaded.data.metrics and uploaded.data.params["epochs"] == "3"
        reports = {entry.path for entry in client.list_artifacts(uploaded.info.run_id, "report")}
        assert {"report/training_metrics.json", "report/model_card.json", "report/fake-gradcam-fake.png"} <= reports
        # The incomplete original (left RUNNING when the server died) now points at the whole run, ended FAILED.
        original = client.get_run(uploaded.data.tags["original_run_id"])
        assert original.info.status == "FAILED" and original.data.tags["uploaded_as"] == uploaded.info.run_id
        # A second upload would add a duplicate run: refused in one line.
        again = run_forgery("upload", str(output_dir), cwd=work, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        assert again.returncode == 2
        assert again.stderr.strip().splitlines() == [f"error: run {original.info.run_id} was already uploaded as run {uploaded.info.run_id}; delete that run to upload it again"]
        assert len(client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])) == 2
    finally:
        stop_server(server)


@pytest.mark.slow
def test_server_lost_mid_sweep_keeps_the_finished_job_and_ends_with_one_line_each(tmp_path: Path) -> None:
    sweeping = train_while_the_server_dies(tmp_path / "server", tmp_path / "work", "-m", "seed=1,2", "data.train_per_class=1500")
    stdout, stderr = sweeping.stdout, sweeping.stderr
    assert sweeping.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    # The first job finished offline, its work on disk with the command to upload it.
    assert stderr.count("error: an MLflow call failed during the run") == 1, stderr[-3000:]
    upload = re.search(r"python -m forgery\.upload (\S+)", stderr)
    assert upload is not None and (Path(upload.group(1)) / "report" / "training_metrics.json").is_file()
    # The second job was refused before any work (the server was gone), and the sweep still ended.
    assert "MLflow tracking server http://127.0.0.1" in stdout + stderr
    assert stderr.strip().splitlines()[-1].startswith("error: could not summarise sweep "), stderr[-3000:]
