"""The real command, end to end: `python -m forgery.train` in an empty folder, checked through MlflowClient."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import PROJECT_ROOT, SAMPLE_ROOT, run_forgery

REPORT_FILES = {
    "training_metrics.json",
    "classification_report.tsv",
    "gradcam_results.json",
    "model_card.json",
    "fake-input.png",
    "fake-gradcam-fake.png",
    "fake-gradcam-real.png",
    "real-input.png",
    "real-gradcam-real.png",
    "real-gradcam-fake.png",
    "calibration.json",
    "gradcam_checks.json",
    "robustness.json",
}
EVIDENCE_METRICS = (
    "test_ece",
    "test_brier",
    "test_ece_calibrated",
    "temperature",
    "gradcam_randomisation_spearman",
    "gradcam_deletion_auc",
    "gradcam_deletion_auc_random",
    "gradcam_insertion_auc",
    "gradcam_insertion_auc_random",
    "robust_jpeg_q50_accuracy",
    "robust_colour_swapped_accuracy",
)
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc")
TEST_METRICS = ("test_loss", "test_accuracy", "test_roc_auc", "test_pr_auc")


def client_for(folder: Path) -> MlflowClient:
    """A client on MLflow's default store of `folder` (what `mlflow ui` there shows)."""
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def only_run(folder: Path, experiment: str = "image-forgery"):
    client = client_for(folder)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    files: set[str] = set()
    for entry in client.list_artifacts(run_id, path):
        files |= artifact_files(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return files


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["model=foo"], "unknown model option 'foo'"),
        (["batch_size=0"], "batch_size must be at least 1"),
        (["optimizer.lr=-1"], "optimizer.lr must be greater than 0"),
        (["data=cifake"], "data.root is required"),
        (["data=cifake", "data.root=/does/not/exist"], "/does/not/exist"),
        (["data=cifake", "data.root=null"], "data.root must be a path, got None"),
        (["data.seed=null"], "data.seed must be a whole number, got None"),
        (["epochs=1,2"], "epochs=1,2 gives several values, a sweep: add -m"),  # Hydra's own report is five lines
        (["seed=-1"], "seed must be a whole number from 0 to 2**32 - 1, got -1"),
        (["evidence.gradcam_checks_per_class=0"], "evidence.gradcam_checks_per_class must be at least 1"),
        (["-m", "sweep.mode=best"], "sweep.mode must be max or min, got 'best'"),
        (["sweep.mode=maximum"], "sweep.mode must be max or min, got 'maximum'"),  # the callback is built for single runs too
        (["model=Wide", "--cfg", "job"], "unknown model option 'Wide'; choose from: highpass_resnet, resnet, small, spectral_resnet, wide"),
        (["-m", "--cfg", "job", "seed=1,2"], "--cfg prints the config instead of running, so it cannot go with -m; drop one of them"),
        (["model.padding=full"], "model.padding must be valid or same, got 'full'"),
        (["-m", "optimizer.lr=interval(1e-4,1e-3)"], "interval(...) needs a sweeper that samples ranges: add hparams_search=optuna"),
        (["-m", "seed=1,2", "optimizer.lr=1e-3,-1"], "optimizer.lr must be greater than 0, got -1"),  # a sweep's every job is checked before the first
        (["-m", "hparams_search=optuna", "optimizer.lr=interval(-1,1e-3)"], "optimizer.lr must be greater than 0, got -1"),  # so is a sampled range's each end
        (["experiment=lr_sweep"], "this config sets sweep parameters (optimizer.lr, augment), which only a multirun uses; add -m"),
        (["data=cifake", "data.root=~/cifake"], "data.root: Hydra cannot read '~' in a value; write $HOME instead"),
        (["augment=flip", "augment.flip=horizonal"], "augment.flip must be null, horizontal, vertical, horizontal_and_vertical, got 'horizonal'"),
        (["early_stopping.restore_best=no"], "early_stopping.restore_best must be true or false, got 'no'"),
        (["data.seed=-1"], "data.seed must be a whole number from 0 to 2**32 - 1, got -1"),
        (["tracking.experiment=2024"], "tracking.experiment must be a name, and Hydra read 2024 as a number; quote it: tracking.experiment=\"'2024'\""),
    ],
)
def test_bad_input_fails_before_training_with_one_line(tmp_path: Path, arguments: list[str], expected: str) -> None:
    result = run_forgery("train", *arguments, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before any run was opened


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["verbose=loud", "--cfg", "job"], "verbose must be auto, 0, 1 or 2, got 'loud'"),
        (["--cfg=job", "epochs=0"], "epochs must be at least 1, got 0"),
        (["data=cifake", "-c", "job", "--resolve"], "data.root is required but not set (data=cifake reads the Kaggle folder or zip from data.root=/path/to/cifake)"),
        (["data=cifake", "data.root=/does/not/exist", "--cfg", "job"], "CIFAKE folder not found: /does/not/exist"),
    ],
)
def test_a_printed_config_comes_with_what_a_run_would_refuse(tmp_path: Path, arguments: list[str], expected: str) -> None:
    result = run_forgery("train", *arguments, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [f"warning: a run with this config would stop with: {expected}"]
    assert "optimizer:" in result.stdout  # Hydra still printed the config


def test_printed_config_overrides_are_told_from_hydras_flags() -> None:
    from forgery.train import printed_config_overrides

    assert printed_config_overrides(["epochs=3"]) is None  # a run: checked the plain way
    assert printed_config_overrides(["epochs=3", "--cfg", "job", "-p", "optimizer", "--resolve", "-m", "seed=1"]) == ["epochs=3", "seed=1"]
    assert printed_config_overrides(["--cfg=all", "model=wide"]) == ["model=wide"]
    assert printed_config_overrides(["--cfg", "job", "--config-dir", "/x"]) is None  # another config folder: Hydra's to read


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["hydra.run.dir=afile"], "hydra.run.dir=afile names a file, not a folder"),
        (["hydra.run.dir=afile/run"], "hydra.run.dir=afile/run: the folder cannot be made (Not a directory)"),
        (["-m", "seed=1,2", "hydra.sweep.dir=afile"], "hydra.sweep.dir=afile names a file, not a folder"),
    ],
)
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path: Path, arguments: list[str], expected: str) -> None:
    (tmp_path / "afile").write_text("mine")
    result = run_forgery("train", *arguments, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {expected}"]  # was Hydra's FileExistsError traceback
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "mlflow.db").exists()


def test_an_output_folder_named_on_the_command_line_is_made_before_hydra_needs_it(tmp_path: Path) -> None:
    from forgery.train import output_folder_error

    assert output_folder_error(["epochs=1", f"hydra.run.dir={tmp_path / 'a' / 'b'}"]) is None
    assert (tmp_path / "a" / "b").is_dir()
    assert output_folder_error([f"hydra.run.dir={tmp_path}/${{now:%H}}"]) is None  # interpolations are Hydra's
    assert not (tmp_path / "${now:%H}").exists()


@pytest.mark.parametrize("left", ["checkpoints/state.json", "tracking_journal.jsonl"])
def test_a_new_run_refuses_a_folder_holding_another_runs_files(tmp_path: Path, left: str) -> None:
    (tmp_path / "used" / left).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "used" / left).write_text("{}")
    result = run_forgery("train", "hydra.run.dir=used", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: output folder {tmp_path / 'used'} already holds another run's {left}; choose a new hydra.run.dir, or delete them (resume=<run id> goes on with an interrupted run)"
    ]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_deleted_experiment_is_refused_before_the_data_loads(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    experiment = client.create_experiment("gone")
    client.delete_experiment(experiment)
    result = run_forgery("train", "tracking.experiment=gone", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: experiment 'gone' is deleted in sqlite:///{tmp_path / 'mlflow.db'}: restore it (mlflow experiments restore --experiment-id {experiment}) or choose another tracking.experiment"
    ]
    assert "data demo" not in result.stdout + result.stderr  # refused before loading


@pytest.mark.slow
def test_demo_run_logs_everything(tmp_path: Path) -> None:
    import mlflow
    import numpy as np

    result = run_forgery("train", "model=small", "epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    client = client_for(tmp_path)
    assert run.info.status == "FINISHED"
    for name in EPOCH_METRICS:
        assert [point.step for point in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    for name in TEST_METRICS:
        assert 0.0 <= run.data.metrics[name] <= (10.0 if name == "test_loss" else 1.0)
    assert set(EVIDENCE_METRICS) <= set(run.data.metrics), sorted(set(EVIDENCE_METRICS) - set(run.data.metrics))
    assert run.data.params["optimizer.lr"] == "0.0001" and run.data.params["model.name"] == "small"
    assert run.data.params["epochs"] == "2" and run.data.params["batch_size"] == "8"
    assert {"hydra_output_dir", "command_line"} <= set(run.data.tags)
    if (PROJECT_ROOT / ".git").exists():  # the commit of the code that trained, wherever the command ran (tmp_path is no checkout)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        assert run.data.tags.get("git_commit") == head == run.data.tags.get("mlflow.source.git.commit")
    files = artifact_files(client, run.info.run_id)
    assert {f"report/{name}" for name in REPORT_FILES} <= files
    assert {"plots/loss.png", "plots/accuracy.png", "plots/roc_curve.png", "plots/pr_curve.png", "plots/confusion_matrix.png", "plots/reliability.png"} <= files
    assert {"config/resolved.yaml", "config/overrides.yaml"} <= files

    assert run.info.run_id in runs_listed_by_mlflow_ui(tmp_path, run.info.experiment_id)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
        pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
        probabilities = model.predict(pixels, verbose=0)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        np.testing.assert_allclose(pyfunc.predict(pixels), probabilities, rtol=1e-4, atol=1e-6)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_ctrl_c_ends_the_run_killed(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.train", "epochs=200", "verbose=2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_environment(tmp_path), "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    assert process.stdout is not None
    for line in process.stdout:  # wait until the first epoch has ended inside an open run
        if "val_auc" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode != 0
    run = only_run(tmp_path)
    assert run.info.status == "KILLED"


def reading_from(pid: int, folder: Path) -> bool:
    """Whether process `pid` has a file under `folder` open right now (Linux's /proc)."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}").startswith(str(folder)):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc to see when loading starts")
def test_ctrl_c_while_the_data_loads_is_one_line(tmp_path: Path) -> None:
    import io
    import zipfile

    # A Kaggle-layout zip: the loader keeps it open while it decodes, so the test sees when loading runs.
    image = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, dtype="uint8")).save(image, format="JPEG")
    root = tmp_path / "cifake.zip"
    with zipfile.ZipFile(root, "w", zipfile.ZIP_STORED) as archive:
        for split, count in (("train", 3000), ("test", 100)):
            for name in ("FAKE", "REAL"):
                for index in range(count):
                    archive.writestr(f"{split}/{name}/{index}.jpg", image.getvalue())
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.train", "data=cifake", f"data.root={root}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**_environment(tmp_path), "FORGERY_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not reading_from(process.pid, root):  # the loader is decoding the images
        assert process.poll() is None and time.monotonic() < deadline, "the data never started loading"
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == ["interrupted: stopped before the run started; nothing was recorded"]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="the CIFAKE sample is not beside the project")
def test_cifake_sample_run_reports_full_test_support(tmp_path: Path) -> None:
    result = run_forgery("train", "data=cifake", f"data.root={SAMPLE_ROOT}", "epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    report = Path(client_for(tmp_path).download_artifacts(run.info.run_id, "report/classification_report.tsv", str(tmp_path)))
    support = {line.split("\t")[0]: line.split("\t")[-1] for line in report.read_text().splitlines()[1:]}
    assert (support["FAKE"], support["REAL"], support["macro avg"]) == ("2000", "2000", "4000")
    assert run.data.metrics["test_accuracy"] > 0.6


def runs_listed_by_mlflow_ui(folder: Path, experiment_id: str) -> list[str]:
    """Start a real `mlflow ui` (no store flags) in `folder` and return the run ids its REST API lists."""
    import json
    import os
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=_environment(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers share the group, so one signal stops them all
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                    data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    return [run["info"]["run_id"] for run in json.load(response).get("runs", [])]
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _environment(folder: Path) -> dict[str, str]:
    return {**{key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}, "FORGERY_CACHE_DIR": str(folder / "cache")}


def test_native_startup_noise_is_dropped_and_everything_else_replayed(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from forgery.runtime import quiet_native_startup

    with quiet_native_startup():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"a real problem the user must see\n")
    assert capfd.readouterr().err == "a real problem the user must see\n"


def test_the_epoch_speed_line_gives_images_per_second_and_the_saving_apart() -> None:
    from forgery.train import epoch_timing

    assert epoch_timing(2, 18000, 0.5, 0.04) == "epoch 2: 18,000 training images in 0.50 s with validation (36,000 images/s); checkpoint and logging 0.04 s"
    assert "too fast to time" in epoch_timing(1, 8, 0.0, 0.0)


def test_a_model_scoring_nan_fails_the_evaluation_in_one_line_before_any_metric() -> None:
    """One NaN probability turned calibration off silently and counted as a FAKE call; now it fails the run."""
    import keras
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from forgery.train import NumericalError, evaluate_and_explain, non_finite_scores_problem

    assert non_finite_scores_problem(np.array([[0.2, 0.8], [0.5, 0.5]]), "test") is None
    problem = non_finite_scores_problem(np.array([[0.2, 0.8], [np.nan, np.nan], [np.inf, 0.0]]), "validation")
    assert problem == "the trained model scored 2 of 3 validation images NaN or infinite, so no metric of it would be right; the run ends FAILED"
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.set_weights([np.full(weight.shape, np.nan, dtype=weight.dtype) for weight in model.get_weights()])
    split = SimpleNamespace(images=np.zeros((4, 32, 32, 3), dtype=np.uint8), labels=np.array([0, 1, 0, 1]))
    with pytest.raises(NumericalError, match="scored 4 of 4 test images NaN or infinite"):
        evaluate_and_explain(model, SimpleNamespace(test=split, val=split), {}, OmegaConf.create({"tta": "none"}))


def test_evaluation_fits_the_temperature_on_validation_and_scores_test_with_the_served_view(compose_train, tmp_path: Path) -> None:
    # Validation and test differ here, so a swap of the two (the temperature fitted on test) or scoring the
    # single view instead of the mirror average that is served would change the numbers checked.
    import keras
    from hydra.utils import instantiate

    from forgery import calibration, evaluate, models
    from forgery.train import evaluate_and_explain
    from tests.conftest import TINY_DEMO

    cfg = compose_train(*TINY_DEMO, "tta=flip", "evidence.robustness_images=8", "evidence.gradcam_checks_per_class=1")
    dataset = instantiate(cfg.data)
    model = instantiate(cfg.model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(dataset.train.images, keras.utils.to_categorical(dataset.train.labels, 2), epochs=1, batch_size=32, verbose=0)
    history = {"loss": [0.5], "accuracy": [0.7], "val_accuracy": [0.7], "val_auc": [0.8]}
    result = evaluate_and_explain(model, dataset, history, cfg)

    served = models.tta_view(model, "flip")
    val_probabilities = served.predict(dataset.val.images, verbose=0)
    test_probabilities = served.predict(dataset.test.images, verbose=0)
    on_validation, _ = calibration.temperature_fit(dataset.val.labels, val_probabilities)
    on_test, _ = calibration.temperature_fit(dataset.test.labels, test_probabilities)
    assert abs(on_validation - on_test) > 1e-3  # else the check below could not tell them apart
    assert result["calibration"]["temperature"] == pytest.approx(on_validation, rel=1e-4)
    expected = evaluate.headline_metrics(dataset.test.labels, test_probabilities)
    single = evaluate.headline_metrics(dataset.test.labels, model.predict(dataset.test.images, verbose=0))
    assert single["test_loss"] != pytest.approx(expected["test_loss"], rel=1e-4)
    for key, value in expected.items():
        assert result["headline"][key] == pytest.approx(value, rel=1e-4), key

    # The overlays written draw each heatmap cell where it looks (the seed's unpadded grid), not stretched.
    from PIL import Image

    from forgery import gradcam, report
    from forgery.train import write_outputs

    write_outputs(tmp_path, result, upscale=8, alpha=0.45)
    item = result["explanations"][0]
    written = np.asarray(Image.open(tmp_path / "report" / report.overlay_file(item.name, 1)))
    grid = gradcam.cut_model(model).grid
    assert grid == gradcam.Grid((8.5, 8.5), (4.0, 4.0))
    np.testing.assert_array_equal(written, gradcam.overlay(item.image, item.heatmaps[1], 8, 0.45, grid))
    assert not np.array_equal(written, gradcam.overlay(item.image, item.heatmaps[1], 8, 0.45))


def test_a_non_finite_loss_names_the_checkpoint_kept_only_when_one_is(tmp_path: Path) -> None:
    from forgery.train import non_finite_loss_message

    assert non_finite_loss_message(float("nan"), 1, "batch 3", tmp_path) == "loss became nan at epoch 1, batch 3; no epoch had completed, so no checkpoint was kept"
    assert non_finite_loss_message(float("inf"), 4, "batches 1-32", tmp_path) == f"loss became inf at epoch 4, batches 1-32; the checkpoint of epoch 3, the last good one, is kept in {tmp_path}"


def test_a_job_without_a_score_returns_the_failed_jobs_score() -> None:
    # Optuna's plugin ends the whole study on a nan; a one-class validation split's AUC is one.
    from forgery.train import FAILED_JOB_SCORE, objective

    assert objective(float("nan")) == FAILED_JOB_SCORE == float("-inf")
    assert objective(0.97) == 0.97


@pytest.mark.parametrize("in_sweep", [True, False])
def test_a_run_that_lost_its_store_still_scores_what_it_reached(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], in_sweep: bool) -> None:
    # The run trained and evaluated offline; only the store's copy is incomplete, so a sweeper (Optuna)
    # must rank the job by its real score, not as a failed one.
    from omegaconf import OmegaConf

    from forgery import sweep, train
    from forgery.tracking import TrackingLost

    def lost(cfg: object) -> float:
        raise TrackingLost("error: an MLflow call failed during the run (...)", score=0.9731)

    monkeypatch.setattr(train, "train", lost)
    monkeypatch.setattr(sweep, "parent_run_id", lambda: "parent" if in_sweep else None)
    entrypoint = train.main.__wrapped__  # the function under Hydra's decorator
    if in_sweep:
        assert entrypoint(OmegaConf.create({})) == 0.9731
    else:
        with pytest.raises(SystemExit) as stopped:
            entrypoint(OmegaConf.create({}))
        assert stopped.value.code == 1
    assert capsys.readouterr().err == "error: an MLflow call failed during the run (...)\n"
