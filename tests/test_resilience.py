"""Interrupt and resume, SIGTERM, numerical faults: real signals to real training subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from forgery import checkpoints
from tests.conftest import run_forgery

# Epochs of 2-5 s, so a signal sent half a second into epoch 2 lands inside it on the machines we know;
# the assertions read which epoch the run kept, so a faster machine cannot turn that into a failure.
RESUMABLE = ["epochs=3", "data.train_per_class=2500", "data.test_per_class=100", "verbose=2"]


def only_run(folder: Path):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    return client, run


def start_and_signal(folder: Path, arguments: list[str], sig: int, marker: str = "Epoch 2/3") -> subprocess.CompletedProcess:
    """Start a training, send `sig` half a second after `marker` is printed, return what it printed."""
    import time

    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.train", *arguments],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environment, "PYTHONUNBUFFERED": "1", "FORGERY_CACHE_DIR": str(folder / "cache")},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if marker in line:
            time.sleep(0.5)
            process.send_signal(sig)
            break
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_interrupted_run_resumes_into_the_same_run_with_the_same_result(tmp_path: Path) -> None:
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    interrupted.mkdir()
    straight.mkdir()
    stopped = start_and_signal(interrupted, RESUMABLE, signal.SIGINT)
    assert stopped.returncode == 130
    client, run = only_run(interrupted)
    assert run.info.status == "KILLED"
    kept = re.search(r"the checkpoint of epoch (\d+) is in", stopped.stderr)
    assert kept is not None, stopped.stderr
    last_epoch = int(kept.group(1))
    assert 1 <= last_epoch < 3, stopped.stderr  # it stopped inside training, with an epoch left to resume
    # Exactly the completed epochs are logged: the one the signal cut short left no metrics behind.
    assert [point.step for point in client.get_metric_history(run.info.run_id, "val_auc")] == list(range(1, last_epoch + 1))
    command = re.search(r"resume with: python -m forgery\.train (resume=\w+)", stopped.stderr)
    assert command is not None, stopped.stderr

    resumed = run_forgery("train", command.group(1), "verbose=0", cwd=interrupted)  # how it runs may change, not what
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The saved config says verbose=2 (a line per epoch); the override silenced the resumed epochs.
    assert not re.search(r"^\d+/\d+ - ", resumed.stdout + resumed.stderr, re.MULTILINE), resumed.stdout[-2000:]
    client, run = only_run(interrupted)  # still one run: the same one, now finished
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags  # the interruption's reason went with it
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc"):
        assert [point.step for point in client.get_metric_history(run.info.run_id, name)] == [1, 2, 3], name

    assert run_forgery("train", *RESUMABLE, cwd=straight).returncode == 0
    _, reference = only_run(straight)
    # Each epoch's batches and augmentations are fixed by (seed, epoch), so resuming changes nothing
    # beyond floating-point noise.
    for name in ("final_train_accuracy", "final_val_auc", "test_accuracy", "test_roc_auc"):
        assert run.data.metrics[name] == pytest.approx(reference.data.metrics[name], abs=1e-3), name


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_with_a_resume_command(tmp_path: Path) -> None:
    stopped = start_and_signal(tmp_path, RESUMABLE, signal.SIGTERM)
    assert stopped.returncode == 143  # 128 + SIGTERM, as a shell or a batch scheduler reads it
    assert "resume with: python -m forgery.train resume=" in stopped.stderr
    assert only_run(tmp_path)[1].info.status == "KILLED"


@pytest.mark.slow
def test_nan_loss_stops_within_the_epoch_and_fails_the_run(tmp_path: Path) -> None:
    result = run_forgery("train", "optimizer=sgd", "optimizer.lr=1e30", "epochs=3", "data.train_per_class=200", "data.test_per_class=20", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss became nan at epoch 1" in errors[0], result.stderr[-2000:]
    assert errors[0].endswith("no epoch had completed, so no checkpoint was kept")  # none is on disk to point to
    client, run = only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("NumericalError: loss became nan at epoch 1")
    assert client.get_metric_history(run.info.run_id, "loss") == []  # the broken epoch was never logged


def test_resume_refuses_without_a_store(tmp_path: Path) -> None:
    result = run_forgery("train", "resume=0123456789abcdef", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: resume: no MLflow store at sqlite:///")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # asking did not create an empty store


def test_resume_refuses_an_override_that_would_change_the_run(tmp_path: Path) -> None:
    result = run_forgery("train", "resume=0123456789abcdef", "epochs=2", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: resume: a run goes on with its own saved config, so 'epochs=2' cannot change it; beside resume= only runtime.* and verbose may be set"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was touched


def killed_run(tmp_path: Path, compose_train, status: str = "KILLED") -> tuple[MlflowClient, str, Path]:
    """A run that stopped after its first epoch, as MLflow and its output folder keep it: (client, run id, folder)."""
    from omegaconf import OmegaConf

    output_dir = tmp_path / "out"  # where compose_train puts a run's folder: the saved config names it, as a real run's does
    (output_dir / "config").mkdir(parents=True)
    cfg = compose_train("epochs=2")
    assert Path(cfg.output_dir) == output_dir
    (output_dir / "config" / "resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    state = checkpoints.CheckpointState(epoch=1, logged_epoch=1, history={"val_auc": [0.5]})
    (output_dir / "checkpoints").mkdir()
    checkpoints.write_state(output_dir / "checkpoints", state)
    (output_dir / "checkpoints" / checkpoints.MODEL_FILE).write_bytes(b"weights")  # only its presence is read before the checks
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("image-forgery"), tags={"hydra_output_dir": str(output_dir)})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return client, run.info.run_id, output_dir


def one_line_refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_resume_checks_the_runtime_values_it_lets_through(tmp_path: Path, compose_train) -> None:
    client, run_id, _ = killed_run(tmp_path, compose_train)
    result = run_forgery("train", f"resume={run_id}", "runtime.steps_per_execution=0", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result).startswith("error: runtime.steps_per_execution must be")
    assert client.get_run(run_id).info.status == "KILLED"  # refused before the run was reopened


def test_resume_refuses_a_run_another_process_is_still_training(tmp_path: Path, compose_train) -> None:
    # A run killed outright (kill -9) stays RUNNING and is resumable; one whose process lives is not.
    client, run_id, output_dir = killed_run(tmp_path, compose_train, status="RUNNING")
    holder = checkpoints.claim(output_dir)  # this test process plays the training that still runs
    try:
        result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    finally:
        holder.close()
    assert one_line_refusal(result) == f"error: resume: run {run_id} is still running (process {os.getpid()} holds {output_dir}); stop it first, or let it finish"
    assert client.get_run(run_id).info.status == "RUNNING"
    assert [point.step for point in client.get_metric_history(run_id, "val_auc")] == []  # nothing was trained into it


def test_a_new_run_refuses_a_folder_another_training_holds(tmp_path: Path) -> None:
    folder = tmp_path / "fixed"
    holder = checkpoints.claim(folder)  # a training started a moment earlier with the same hydra.run.dir
    try:
        result = run_forgery("train", f"hydra.run.dir={folder}", cwd=tmp_path, timeout=120)
    finally:
        holder.close()
    assert one_line_refusal(result) == f"error: output folder {folder} is in use by another training (process {os.getpid()}); choose a new hydra.run.dir (hydra.sweep.dir in a sweep)"


def test_resume_looks_again_once_it_holds_the_folder(tmp_path: Path, compose_train, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgery import train
    from forgery.config import ConfigError

    client, run_id, _ = killed_run(tmp_path, compose_train, status="RUNNING")
    monkeypatch.chdir(tmp_path)  # MLflow's default store, where killed_run made the run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    claim = checkpoints.claim

    def claim_as_the_holder_finishes(folder: Path):
        client.set_terminated(run_id, "FINISHED")  # the process that held the folder finished the run a moment before
        return claim(folder)

    monkeypatch.setattr(checkpoints, "claim", claim_as_the_holder_finishes)
    with pytest.raises(ConfigError, match=f"^resume: run {run_id} already FINISHED; nothing to resume$"):
        train.train(compose_train(f"resume={run_id}"))
    checkpoints.claim(tmp_path / "out").close()  # and the folder was let go


def test_a_folder_that_cannot_be_locked_is_trained_unguarded_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import errno

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")  # NFS mounted with nolock, say

    monkeypatch.setattr(checkpoints.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING"):
        checkpoints.claim(tmp_path).close()
    assert [record.getMessage() for record in caplog.records] == [
        f"cannot lock {tmp_path / checkpoints.LOCK_FILE} (No locks available); nothing stops a second process from training into this folder"
    ]


def test_resume_refuses_data_other_than_the_runs(tmp_path: Path, compose_train) -> None:
    # Another training set would draw another validation split: the run's training images could be validated on.
    client, run_id, output_dir = killed_run(tmp_path, compose_train)
    record = {"fingerprint": "0" * 16, "counts": "train 1 FAKE + 1 REAL; val 1 FAKE + 1 REAL; test 1 FAKE + 1 REAL", "issues": {"skipped_files": 2}}
    checkpoints.write_data_record(output_dir / "checkpoints", record)
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    refusal = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(refusal) == 1, result.stderr[-2000:]
    assert refusal[0].startswith(f"error: resume: the data is not what run {run_id} trained on (it had train 1 FAKE + 1 REAL; val 1 FAKE + 1 REAL; test 1 FAKE + 1 REAL (2 skipped files); now train ")
    assert refusal[0].endswith("); put its files back as they were, or start a new run")
    assert client.get_run(run_id).info.status == "KILLED" and client.get_metric_history(run_id, "val_auc") == []  # nothing was trained into it
    # data.json removed: the check fell silent, though the run had logged its fingerprint to MLflow
    (output_dir / "checkpoints" / checkpoints.DATA_FILE).unlink()
    client.log_param(run_id, "data_fingerprint", "0" * 16)
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    refusal = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and refusal == [
        f"error: resume: the data is not what run {run_id} trained on (its fingerprint, logged to MLflow, differs; "
        f"{output_dir / 'checkpoints' / 'data.json'}, which held its counts, is gone); put its files back as they were, or start a new run"
    ], result.stderr[-2000:]


def test_a_damaged_data_record_is_one_error(tmp_path: Path) -> None:
    (tmp_path / checkpoints.DATA_FILE).write_text('{"counts": "x"}')
    with pytest.raises(checkpoints.DamagedCheckpoint, match="holds no data fingerprint$"):
        checkpoints.read_data_record(tmp_path)
    (tmp_path / checkpoints.DATA_FILE).write_text("{")
    with pytest.raises(checkpoints.DamagedCheckpoint, match=r"cannot be read \(JSONDecodeError\)$"):
        checkpoints.read_data_record(tmp_path)
    assert checkpoints.read_data_record(tmp_path / "none") is None  # a run from before the record: nothing to compare


def test_resume_refuses_a_run_that_finished_offline_and_was_uploaded(tmp_path: Path, compose_train) -> None:
    # Its upload is the whole run: a resume would end a second FINISHED copy that a ranking counts twice.
    client, run_id, _ = killed_run(tmp_path, compose_train, status="FAILED")
    copy = client.create_run(client.get_experiment_by_name("image-forgery").experiment_id).info.run_id
    client.set_tag(run_id, "uploaded_as", copy)
    client.set_terminated(copy, "FINISHED")
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == f"error: resume: run {run_id} finished offline and was uploaded as run {copy} (FINISHED); nothing to resume"


def test_resume_refuses_a_run_that_finished_offline_and_points_to_upload(tmp_path: Path, compose_train) -> None:
    # The store's copy ended FAILED (incomplete) while the run itself finished: a resume would re-send it all
    # and evaluate it again, logging a second model into the run; the upload is what it needs.
    import json

    from forgery import tracking

    client, run_id, output_dir = killed_run(tmp_path, compose_train, status="FAILED")
    attempts = [{"kind": "start", "run_id": run_id}, {"kind": "end", "status": "KILLED"}, {"kind": "start", "run_id": run_id}, {"kind": "end", "status": "FINISHED"}]
    (output_dir / tracking.JOURNAL_FILE).write_text("".join(json.dumps(entry) + "\n" for entry in attempts))
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == f"error: resume: run {run_id} finished offline (its journal ends FINISHED); upload it instead: python -m forgery.upload {output_dir}"
    # A last attempt that was itself interrupted is resumable (the refusal is then the missing model's, further on).
    (output_dir / tracking.JOURNAL_FILE).write_text("".join(json.dumps(entry) + "\n" for entry in [*attempts, {"kind": "start", "run_id": run_id}]))
    assert "finished offline" not in run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120).stderr


def test_resume_refuses_a_run_that_is_no_training_run(tmp_path: Path, compose_train) -> None:
    # A sweep's parent has no output folder tag: read as "" it was this folder, and the refusal blamed a missing checkpoint.
    client, _, _ = killed_run(tmp_path, compose_train)
    experiment_id = client.get_experiment_by_name("image-forgery").experiment_id
    parent = client.create_run(experiment_id, tags={"sweep": "parent"}).info.run_id
    client.set_terminated(parent, "KILLED")
    result = run_forgery("train", f"resume={parent}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == f"error: resume: run {parent} is a sweep's parent run, which trains nothing; resume one of its jobs (each is a run of its own)"
    other = client.create_run(experiment_id).info.run_id  # a run another program made
    client.set_terminated(other, "KILLED")
    result = run_forgery("train", f"resume={other}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == f"error: resume: run {other} is no training run of forgery (it has no hydra_output_dir tag); name the run to resume"
    # A sweep's job refused by its checks is a FAILED run with its reason and no output folder: it was called no run of forgery.
    job = client.create_run(experiment_id, tags={"failure_reason": "ConfigError: runtime.loop=scan needs the jax backend\nmore"}).info.run_id
    client.set_terminated(job, "FAILED")
    result = run_forgery("train", f"resume={job}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == (
        f"error: resume: run {job} failed before its training started (ConfigError: runtime.loop=scan needs the jax backend); nothing to resume, start a new run"
    )


def test_resume_says_a_checkpoint_state_went_missing_after_epochs_were_logged(tmp_path: Path, compose_train) -> None:
    # It blamed the run ("it stopped before its first epoch ended") for a folder moved away after epoch 1.
    client, run_id, output_dir = killed_run(tmp_path, compose_train)
    (output_dir / "checkpoints" / checkpoints.STATE_FILE).unlink()
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == f"error: resume: run {run_id} left no checkpoint in {output_dir / 'checkpoints'} (it stopped before its first epoch ended)"
    client.log_metric(run_id, "loss", 0.7, step=1)
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == (
        f"error: resume: run {run_id} completed epochs, but {output_dir / 'checkpoints' / 'state.json'} is gone (moved or deleted?); put the checkpoint folder back"
    )


def test_resume_with_m_is_refused_before_a_sweep_opens(tmp_path: Path) -> None:
    # -m opened a new parent run and filed the resumed run under it, out of its own sweep (promote parent_run_id= lost it).
    result = run_forgery("train", "-m", "resume=abc", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == "error: resume= continues one run where it stopped, in its own sweep if it had one: drop -m (one resume per command)"
    assert sorted(os.listdir(tmp_path)) == []


def test_resume_names_a_moved_output_folder(tmp_path: Path, compose_train) -> None:
    client, run_id, output_dir = killed_run(tmp_path, compose_train)
    output_dir.rename(tmp_path / "elsewhere")
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == (
        f"error: resume: run {run_id}'s output folder {output_dir} is gone (moved or deleted?); its checkpoint is read from there, so put the folder back"
    )


def test_resume_names_a_damaged_checkpoint_state_or_a_missing_config(tmp_path: Path, compose_train) -> None:
    client, run_id, output_dir = killed_run(tmp_path, compose_train)
    state_path = output_dir / "checkpoints" / checkpoints.STATE_FILE
    state_path.write_text(state_path.read_text()[:20])  # cut short, as a full disk or a hand edit leaves it
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result).startswith(f"error: resume: run {run_id}'s checkpoint state {state_path} cannot be read (JSONDecodeError: ")
    assert result.stderr.rstrip().endswith("; it cannot resume (start a new run)")
    state_path.unlink()
    checkpoints.write_state(output_dir / "checkpoints", checkpoints.CheckpointState(epoch=1, logged_epoch=1, history={"val_auc": [0.5]}))
    (output_dir / "config" / "resolved.yaml").unlink()
    result = run_forgery("train", f"resume={run_id}", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == (
        f"error: resume: run {run_id}'s saved config {output_dir / 'config' / 'resolved.yaml'} is gone; resume trains with the run's own config, so put the file back"
    )


@pytest.mark.parametrize("text", ["", "[1, 2]", '{"epoch": 1}', '{"epoch": "x", "logged_epoch": 1, "history": {}}', '{"epoch": 1, "logged_epoch": 1, "history": 3}'])
def test_a_damaged_state_file_is_one_error(tmp_path: Path, text: str) -> None:
    (tmp_path / checkpoints.MODEL_FILE).write_bytes(b"weights")
    (tmp_path / checkpoints.STATE_FILE).write_text(text)
    with pytest.raises(checkpoints.DamagedCheckpoint, match=f"^{re.escape(str(tmp_path / checkpoints.STATE_FILE))} cannot be read \\("):
        checkpoints.load_state(tmp_path)


def test_a_printed_config_with_resume_says_what_the_run_would_do(tmp_path: Path, compose_train) -> None:
    # --cfg job prints the composed defaults, but a resumed run goes on with its own saved config.
    _, run_id, output_dir = killed_run(tmp_path, compose_train)
    cases = {
        (f"resume={run_id}",): f"resume={run_id} goes on with the run's own saved config, not the one printed: {output_dir / 'config' / 'resolved.yaml'}",
        (f"resume={run_id}", "epochs=9"): "a run with this config would stop with: resume: a run goes on with its own saved config, so 'epochs=9' cannot change it; beside resume= only runtime.* and verbose may be set",
        ("resume=0123456789abcdef",): f"a run with this config would stop with: resume: no MLflow run with id '0123456789abcdef' in sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for arguments, expected in cases.items():
        result = run_forgery("train", *arguments, "--cfg", "job", cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines() == [f"warning: {expected}"]
        assert "optimizer:" in result.stdout


def test_an_empty_resume_is_refused_not_taken_for_a_new_run(tmp_path: Path) -> None:
    result = run_forgery("train", "resume=", cwd=tmp_path, timeout=120)
    assert one_line_refusal(result) == "error: resume= needs a run id (resume=<run id>, as the interrupted run printed it)"
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob(checkpoints.STATE_FILE))


def test_a_claimed_folder_is_refused_until_released(tmp_path: Path) -> None:
    first = checkpoints.claim(tmp_path / "run")
    with pytest.raises(checkpoints.FolderBusy) as busy:
        checkpoints.claim(tmp_path / "run")
    assert busy.value.holder == str(os.getpid())
    first.close()  # as the process ending does
    checkpoints.claim(tmp_path / "run").close()


@pytest.mark.slow
def test_resume_refuses_an_unknown_or_finished_run(tmp_path: Path) -> None:
    assert run_forgery("train", "epochs=1", "data.train_per_class=40", "data.test_per_class=10", cwd=tmp_path).returncode == 0
    unknown = run_forgery("train", "resume=0123456789abcdef", cwd=tmp_path, timeout=120)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [f"error: resume: no MLflow run with id '0123456789abcdef' in sqlite:///{tmp_path / 'mlflow.db'}"]
    _, run = only_run(tmp_path)
    finished = run_forgery("train", f"resume={run.info.run_id}", cwd=tmp_path, timeout=120)
    assert finished.returncode == 2 and "already FINISHED" in finished.stderr


def test_checkpoint_round_trip_and_atomic_state(tmp_path: Path) -> None:
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    assert checkpoints.load_state(tmp_path) is None
    state = checkpoints.CheckpointState(epoch=2, logged_epoch=1, history={"loss": [0.9, 0.7]})
    checkpoints.save(tmp_path, model, state)
    assert checkpoints.load_state(tmp_path) == state
    restored = checkpoints.load_model(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(restored(pixels, training=False), model(pixels, training=False), rtol=1e-5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0002.keras", "state.json"]  # no partial files left


def test_best_checkpoint_survives_later_saves_and_restores(tmp_path: Path) -> None:
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    best_weights = [weights.copy() for weights in model.get_weights()]
    best_output = np.asarray(model(pixels, training=False))
    state = checkpoints.CheckpointState(epoch=1, best_epoch=1)
    checkpoints.save(tmp_path, model, state, best=True)
    model.set_weights([weights + 0.5 for weights in best_weights])  # a later, worse epoch
    state.epoch = 2
    checkpoints.save(tmp_path, model, state)
    assert not np.allclose(model(pixels, training=False), best_output)
    checkpoints.restore_best(tmp_path, model)
    np.testing.assert_allclose(model(pixels, training=False), best_output, rtol=1e-6)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0001.keras", "epoch-0002.keras", "state.json"]
    state.epoch = 3
    checkpoints.save(tmp_path, model, state)  # epoch 2's file is no longer named: removed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0001.keras", "epoch-0003.keras", "state.json"]


@pytest.mark.parametrize("best", [False, True])
def test_a_process_killed_between_the_model_and_the_state_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, best: bool
) -> None:
    # kill -9 or the out-of-memory killer cannot be deferred: whenever it lands, the state on disk and the
    # weights it names must be of one epoch, or a resume retrains an epoch from weights already past it.
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    epoch_one = np.asarray(model(pixels, training=False))
    state = checkpoints.CheckpointState(epoch=1, logged_epoch=1, history={"loss": [0.9]}, best_epoch=1, best_value=0.9)
    checkpoints.save(tmp_path, model, state, best=True)
    model.set_weights([weights + 0.5 for weights in model.get_weights()])

    class Killed(BaseException):
        pass

    def killed(folder: Path, state: checkpoints.CheckpointState) -> None:
        raise Killed  # the process is gone before the state is replaced

    monkeypatch.setattr(checkpoints, "write_state", killed)
    with pytest.raises(Killed):
        checkpoints.save(tmp_path, model, checkpoints.CheckpointState(epoch=2, logged_epoch=1, history={"loss": [0.9, 0.8]}), best=best)
    monkeypatch.undo()
    saved = checkpoints.load_state(tmp_path)
    assert saved is not None and saved.epoch == 1 and saved.best_epoch == 1
    np.testing.assert_allclose(checkpoints.load_model(tmp_path)(pixels, training=False), epoch_one, rtol=1e-5)
    checkpoints.restore_best(tmp_path, model)
    np.testing.assert_allclose(model(pixels, training=False), epoch_one, rtol=1e-5)


def test_each_checkpoint_file_reaches_the_disk_before_its_rename_and_the_rename_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power cut can reorder what a killed process cannot: unflushed, the state's rename may reach the
    # disk before the model file's bytes (a resume then loads an empty or missing model).
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(("flush", os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}"))))
        real_fsync(descriptor)

    def replace(source: Path, target: Path) -> None:
        events.append(("rename", f"{Path(source).name} -> {Path(target).name}"))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    checkpoints.save(tmp_path, model, checkpoints.CheckpointState(epoch=1, logged_epoch=1, best_epoch=1), best=True)
    assert events == [
        ("flush", ".epoch-0001.keras.partial.keras"),
        ("rename", ".epoch-0001.keras.partial.keras -> epoch-0001.keras"),
        ("flush", tmp_path.name),
        ("flush", ".state.json.partial"),
        ("rename", ".state.json.partial -> state.json"),
        ("flush", tmp_path.name),
    ]
    assert checkpoints.load_state(tmp_path).best_file == "epoch-0001.keras"
    events.clear()
    checkpoints.write_data_record(tmp_path, {"fingerprint": "abc"})
    assert events == [("flush", ".data.json.partial"), ("rename", ".data.json.partial -> data.json"), ("flush", tmp_path.name)]


def test_a_file_system_that_cannot_flush_a_folder_still_keeps_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{descriptor}")):
            raise OSError(22, "Invalid argument")  # as some network file systems answer
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    checkpoints.save(tmp_path, model, checkpoints.CheckpointState(epoch=1, logged_epoch=1))
    checkpoints.write_data_record(tmp_path, {"fingerprint": "abc"})
    assert checkpoints.load_state(tmp_path).model_file == "epoch-0001.keras"
    assert checkpoints.read_data_record(tmp_path) == {"fingerprint": "abc"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"epoch": 5}, "does not add up: epoch 5, but loss has 1 values"),  # a resume logged history[loss][1..4]: IndexError
        ({"history": {"loss": 0.9}}, "does not add up: epoch 1, but loss has no list of values"),
        ({"logged_epoch": 2}, "does not add up: epoch 1, but logged epoch 2, best epoch 1"),
        ({"best_epoch": 3}, "does not add up: epoch 1, but logged epoch 1, best epoch 3"),
    ],
)
def test_a_state_whose_numbers_disagree_is_damaged_not_a_crash(tmp_path: Path, fields: dict, expected: str) -> None:
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    checkpoints.save(tmp_path, model, checkpoints.CheckpointState(epoch=1, logged_epoch=1, history={"loss": [0.9]}, best_epoch=1), best=True)
    saved = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**saved, **fields}))  # a hand edit
    with pytest.raises(checkpoints.DamagedCheckpoint, match=re.escape(expected)):
        checkpoints.load_state(tmp_path)


def test_a_checkpoint_from_before_the_epoch_files_still_loads(tmp_path: Path) -> None:
    from forgery.models import cnn

    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.save(tmp_path / "last.keras")
    os.link(tmp_path / "last.keras", tmp_path / "best.keras")
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 2, "logged_epoch": 2, "history": {}, "best_epoch": 2, "best_value": 0.7}))
    state = checkpoints.load_state(tmp_path)
    assert state is not None and (state.model_file, state.best_file) == ("last.keras", "best.keras")
    checkpoints.restore_best(tmp_path, checkpoints.load_model(tmp_path))
    state.epoch = 3
    checkpoints.save(tmp_path, model, state)  # the best epoch stays in best.keras; last.keras goes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.keras", "epoch-0003.keras", "state.json"]
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 2, "logged_epoch": 2, "history": {}, "model_file": "../elsewhere.keras"}))
    with pytest.raises(checkpoints.DamagedCheckpoint, match="names no model file of its folder"):
        checkpoints.load_state(tmp_path)
    # a file the state names, removed by hand: said at once, not found missing at the end of a resumed run
    checkpoints.write_state(tmp_path, state)
    (tmp_path / "best.keras").unlink()
    with pytest.raises(checkpoints.DamagedCheckpoint, match=r"names best\.keras as the best epoch's model, and it is gone$"):
        checkpoints.load_state(tmp_path)
    (tmp_path / "epoch-0003.keras").unlink()
    with pytest.raises(checkpoints.DamagedCheckpoint, match=r"names epoch-0003\.keras as the latest epoch's model, and it is gone$"):
        checkpoints.load_state(tmp_path)


def test_an_interrupted_run_says_what_it_kept(tmp_path: Path) -> None:
    from forgery.models import cnn
    from forgery.train import interrupted_lines

    assert interrupted_lines("abc", tmp_path) == ["interrupted: run abc ended KILLED; no epoch had completed, so nothing to resume"]
    model = cnn("tiny", [4], padding="same")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    checkpoints.save(tmp_path, model, checkpoints.CheckpointState(epoch=2, logged_epoch=2))
    assert interrupted_lines("abc", tmp_path) == [
        f"interrupted: run abc ended KILLED; the checkpoint of epoch 2 is in {tmp_path}",
        "resume with: python -m forgery.train resume=abc",
    ]
    (tmp_path / "epoch-0002.keras").unlink()  # a damaged checkpoint: still one line on how the run ended, no resume offered
    assert interrupted_lines("abc", tmp_path) == [
        f"interrupted: run abc ended KILLED; its checkpoint cannot be resumed: {tmp_path / 'state.json'} names epoch-0002.keras as the latest epoch's model, and it is gone"
    ]
