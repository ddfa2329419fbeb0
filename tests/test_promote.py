"""Promotion: which run is chosen, what lands in dest, that a refusal or failure leaves dest as it was."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forgery import promote, tracking
from tests.conftest import CONFIG_DIR, run_forgery

DEST = Path("public/projects/image-forgery")


# ---- Helpers ----------------------------------------------------------------------------------------


def write_report(folder: Path, label: str) -> Path:
    """A small but complete report/ in train's format, built with the project's own report functions."""
    import numpy as np
    from PIL import Image

    from forgery import calibration, evaluate, report, robustness

    folder.mkdir(parents=True, exist_ok=True)
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.55, 0.45], [0.1, 0.9]])
    headline = {
        **evaluate.headline_metrics(labels, probabilities),
        "final_train_accuracy": 0.75,
        "final_val_accuracy": 0.7,
        "final_val_auc": 0.8,
        "gradcam_overlays": 4,
    }
    history = {"loss": [0.9, 0.6], "accuracy": [0.6, 0.75], "val_loss": [0.8, 0.7], "val_accuracy": [0.6, 0.7], "val_auc": [0.7, 0.8], "auc": [0.65, 0.8]}
    heatmap = np.linspace(0.0, 1.0, 16).reshape(4, 4)
    explanations = [
        report.Explanation(sample, np.zeros((32, 32, 3), dtype="uint8"), index, probabilities[index * 3], {0: heatmap, 1: heatmap})
        for index, sample in enumerate(report.GRADCAM_SAMPLES)
    ]
    metrics = report.training_metrics(
        history, headline, evaluate.roc_points(labels, probabilities), evaluate.pr_points(labels, probabilities), evaluate.confusion(labels, probabilities)
    )
    card = report.model_card(
        model_name=label, architecture="Conv2D -> Dense", optimizer="Adam", learning_rate=0.001, loss="categorical_crossentropy",
        parameters=1234, epochs=2, batch_size=8, augmentation="none", dataset="unit", counts={"test": {"FAKE": 3, "REAL": 3, "total": 6}},
        issues={}, gradcam_examples=2, seed=0, backend="tensorflow",
    )
    (folder / "training_metrics.json").write_text(json.dumps(metrics))
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "gradcam_results.json").write_text(json.dumps(report.gradcam_results(explanations, "conv", temperature=1.5)))
    (folder / "classification_report.tsv").write_text(evaluate.format_report_tsv(evaluate.classification_report(labels, probabilities)))
    (folder / "calibration.json").write_text(json.dumps(calibration.calibration_report(labels, probabilities, labels, probabilities)))
    images = np.zeros((len(labels), 32, 32, 3), dtype="uint8")
    (folder / "robustness.json").write_text(json.dumps(robustness.robustness_report(lambda batch: probabilities, images, labels, seed=0)))
    # gradcam_checks needs a Keras model; promote only copies the file, so its shape is enough here.
    names = ("randomisation_spearman", "deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random")
    checks = {"checks": {name: {"value": 0.5, "meaning": f"what {name} means"} for name in names}}
    (folder / "gradcam_checks.json").write_text(json.dumps(checks))
    for item in explanations:
        Image.new("RGB", (8, 8), (20, 40, 60)).save(folder / report.input_file(item.name))
        for target in item.heatmaps:
            Image.new("RGB", (8, 8), (200, 40 * target, 0)).save(folder / report.overlay_file(item.name, target))
    return folder


def log_run(
    report_dir: Path | None,
    experiment: str,
    metrics: dict[str, float],
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
    model: bool = False,
) -> str:
    """One MLflow run through forgery.tracking, with `report_dir` logged as report/ (and a tiny model if asked); returns its id."""
    tracker = tracking.Tracker(None)  # no journal: these runs are only read back
    if status == "FAILED":
        with pytest.raises(RuntimeError), tracker.run(experiment, None, tags or {}) as run_id:
            tracker.metrics(metrics)
            raise RuntimeError("training blew up")
        return run_id
    with tracker.run(experiment, None, tags or {}) as run_id:
        tracker.metrics(metrics)
        if report_dir is not None:
            tracker.folder(report_dir, "report")
        if model:
            log_tiny_model()
    return run_id


def log_tiny_model() -> None:
    """Log an untrained tiny forgery model to the active run, as train logs its model."""
    import numpy as np

    from forgery.models import cnn

    network = cnn("tiny", [4, 8, 8])
    example = np.zeros((1, 32, 32, 3), dtype="uint8")
    tracking.log_keras_model(network, example, network.predict(example, verbose=0))


def run_promote(experiment: str, dest: Path, **options: Any) -> dict[str, Any]:
    """forgery.promote.promote with the CLI's defaults, overridden by `options`."""
    settings: dict[str, Any] = {
        "experiment": experiment,
        "metric": "test_roc_auc",
        "mode": "max",
        "run_id": None,
        "parent_run_id": None,
        "dest": dest,
        "dry_run": False,
        "register": False,
        "model_name": "image-forgery",
    }
    return promote.promote(**{**settings, **options})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); {} when the folder is not there."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def beside(dest: Path) -> list[str]:
    """Names in dest's folder but promote's lock file (which stays): only dest, once no staging or retired folder is left."""
    return sorted(path.name for path in dest.parent.iterdir() if path.name != promote.lock_file(dest).name)


def promoted_run(dest: Path) -> str:
    """The run id recorded in dest/promotion.json."""
    return json.loads((dest / "promotion.json").read_text())["run_id"]


@pytest.fixture
def make_report(tmp_path: Path) -> Callable[[str], Path]:
    """make_report(label) -> a report folder whose model card names `label`, outside the store and dest."""
    return lambda label: write_report(tmp_path / "reports" / label, label)


@pytest.fixture
def experiment(mlflow_store: str) -> str:
    """An experiment name inside the fresh tmp store (mlflow_store also moves the working folder to tmp)."""
    return "unit-promote"


@pytest.fixture
def promoted(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> tuple[Path, str]:
    """dest already holding an earlier promotion, for tests that check a refusal or failure leaves it alone."""
    run_id = log_run(make_report("old"), experiment, {"test_roc_auc": 0.5, "test_loss": 0.9})
    dest = tmp_path / DEST
    run_promote(experiment, dest)
    assert promoted_run(dest) == run_id
    return dest, run_id


# ---- Choosing the run ----------------------------------------------------------------------------------


def test_promotes_the_best_finished_run_with_its_files(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    runs = {label: log_run(make_report(label), experiment, {"test_roc_auc": auc}) for label, auc in [("a", 0.61), ("b", 0.93), ("c", 0.72)]}
    log_run(make_report("failed"), experiment, {"test_roc_auc": 0.99}, status="FAILED")
    dest = tmp_path / DEST

    record = run_promote(experiment, dest)

    assert record["run_id"] == runs["b"] == promoted_run(dest)
    assert json.loads((dest / "model_card.json").read_text())["model"] == "b"
    for name in promote.REPORT_FILES:
        assert (dest / name).read_bytes() == (tmp_path / "reports" / "b" / name).read_bytes(), name
    for name in promote.SITE_FILES:
        assert (dest / name).read_bytes() == (promote.SITE_FOLDER / name).read_bytes(), name
    written = json.loads((dest / "promotion.json").read_text())
    assert written["experiment"] == experiment and written["metric"] == "test_roc_auc" and written["metric_value"] == 0.93
    assert written["files"] == sorted(promote.REPORT_FILES + promote.SITE_FILES)
    assert {"calibration.json", "gradcam_checks.json", "robustness.json"} <= set(written["files"])  # the page's Evidence section
    assert sorted(path.name for path in dest.iterdir()) == sorted([*written["files"], "promotion.json"])
    assert written["promoted_at"].endswith("+00:00")
    assert written["source_commit"] == tracking.get_run(runs["b"])["tags"].get("mlflow.source.git.commit")


def test_mode_min_promotes_the_lowest_value(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    losses = {label: log_run(make_report(label), experiment, {"test_loss": loss}) for label, loss in [("a", 0.7), ("b", 0.3), ("c", 0.5)]}
    record = run_promote(experiment, tmp_path / DEST, metric="test_loss", mode="min")
    assert record["run_id"] == losses["b"] and record["metric_value"] == 0.3


def test_runs_without_the_metric_are_skipped(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    log_run(make_report("a"), experiment, {"other": 5.0})
    wanted = log_run(make_report("b"), experiment, {"test_roc_auc": 0.2})
    assert run_promote(experiment, tmp_path / DEST)["run_id"] == wanted


def test_run_id_promotes_that_run_even_when_another_is_better(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    chosen = log_run(make_report("a"), experiment, {"test_roc_auc": 0.6})
    log_run(make_report("b"), experiment, {"test_roc_auc": 0.9})
    dest = tmp_path / DEST
    run_promote(experiment, dest, run_id=chosen)
    assert promoted_run(dest) == chosen
    assert json.loads((dest / "model_card.json").read_text())["model"] == "a"


def start_sweep(experiment: str) -> str:
    """A sweep's parent run, as forgery.sweep opens it; returns its id."""
    return tracking.start_parent_run(experiment, None, {"sweep": "parent"}, {"sweep.metric": "val_auc", "sweep.mode": "max"})


def test_parent_run_id_limits_the_choice_to_one_sweep(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    sweep_a, sweep_b = start_sweep(experiment), start_sweep(experiment)
    best_of_a = log_run(make_report("a1"), experiment, {"test_roc_auc": 0.7}, tags={"mlflow.parentRunId": sweep_a})
    log_run(make_report("a2"), experiment, {"test_roc_auc": 0.6}, tags={"mlflow.parentRunId": sweep_a})
    best_of_b = log_run(make_report("b1"), experiment, {"test_roc_auc": 0.95}, tags={"mlflow.parentRunId": sweep_b})
    loose = log_run(make_report("loose"), experiment, {"test_roc_auc": 0.99})
    assert run_promote(experiment, tmp_path / "a", parent_run_id=sweep_a)["run_id"] == best_of_a
    assert run_promote(experiment, tmp_path / "b", parent_run_id=sweep_b)["run_id"] == best_of_b
    empty = start_sweep(experiment)
    with pytest.raises(promote.PromoteError, match=f"no FINISHED run in experiment 'unit-promote' under parent run {empty} \\(0 runs in all\\)"):
        run_promote(experiment, tmp_path / "c", parent_run_id=empty)
    with pytest.raises(promote.PromoteError, match="^parent run c{32} does not exist$"):
        run_promote(experiment, tmp_path / "c", parent_run_id="c" * 32)
    with pytest.raises(promote.PromoteError, match=f"^run {loose} is not a sweep's parent run \\(promote it with run_id={loose}\\)$"):
        run_promote(experiment, tmp_path / "c", parent_run_id=loose)
    with pytest.raises(promote.PromoteError, match="^run_id and parent_run_id both pick the run; give one of them$"):
        run_promote(experiment, tmp_path / "c", run_id=best_of_a, parent_run_id=sweep_a)
    assert not (tmp_path / "c").exists()


def test_parent_run_id_finds_a_sweep_logged_to_another_experiment(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    # A sweep run with tracking.experiment=other: its parent says where to look, not promote's experiment= default.
    sweep = start_sweep("other")
    child = log_run(make_report("child"), "other", {"test_roc_auc": 0.7}, tags={"mlflow.parentRunId": sweep})
    log_run(make_report("here"), experiment, {"test_roc_auc": 0.9})
    record = run_promote(experiment, tmp_path / DEST, parent_run_id=sweep)
    assert record["run_id"] == child and record["experiment"] == "other"
    assert promoted_run(tmp_path / DEST) == child


def test_parent_run_id_publishes_the_child_the_sweep_recorded_on_a_tie(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    def sweep(metric: str) -> tuple[str, str, str]:
        """A finished sweep of two children tied on test_roc_auc; its parent names the first as best by `metric`."""
        parent = tracking.start_parent_run(experiment, None, {"sweep": "parent"}, {"sweep.metric": metric, "sweep.mode": "max"})
        first = log_run(make_report("first"), experiment, {"test_roc_auc": 0.8}, tags={"mlflow.parentRunId": parent})
        second = log_run(make_report("second"), experiment, {"test_roc_auc": 0.8}, tags={"mlflow.parentRunId": parent})
        tracking.finish_parent_run(parent, "FINISHED", {f"best_{metric}": 0.8}, {"best_run_id": first}, {})
        return parent, first, second

    parent, first, _ = sweep("test_roc_auc")
    assert run_promote(experiment, tmp_path / "recorded", parent_run_id=parent)["run_id"] == first
    # A sweep ranked by another metric says nothing about this one: promote ranks (a tie goes to the newest).
    parent, _, second = sweep("val_auc")
    assert run_promote(experiment, tmp_path / "ranked", parent_run_id=parent)["run_id"] == second
    # A job killed in the sweep, resumed to FINISHED after it ended, with a better score than the recorded best: it wins.
    parent, first, _ = sweep("test_roc_auc")
    resumed = log_run(make_report("resumed"), experiment, {"test_roc_auc": 0.9}, tags={"mlflow.parentRunId": parent})
    assert run_promote(experiment, tmp_path / "resumed", parent_run_id=parent)["run_id"] == resumed


def test_best_run_breaks_ties_by_the_newest_and_ignores_nan() -> None:
    def run(run_id: str, value: float, start: int) -> dict[str, Any]:
        return {"run_id": run_id, "status": "FINISHED", "start_time": start, "metrics": {"m": value}, "tags": {}}

    runs = [run("old", 0.8, 1), run("new", 0.8, 2), run("nan", float("nan"), 3), run("low", 0.1, 4)]
    assert promote.best_run(runs, "m", "max", None, "e")["run_id"] == "new"
    assert promote.best_run(runs, "m", "min", None, "e")["run_id"] == "low"


# ---- What lands in dest -------------------------------------------------------------------------------


def test_a_new_promotion_replaces_the_whole_folder(promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path]) -> None:
    dest, old_run = promoted
    (dest / "stale-from-old-run.png").write_bytes(b"old")
    new_run = log_run(make_report("new"), experiment, {"test_roc_auc": 0.9})
    run_promote(experiment, dest)
    assert promoted_run(dest) == new_run != old_run
    assert not (dest / "stale-from-old-run.png").exists()
    assert json.loads((dest / "model_card.json").read_text())["model"] == "new"
    assert beside(dest) == [dest.name]  # no staging or retired folder left


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_failure_mid_copy_leaves_the_old_page(
    promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    dest, _ = promoted
    before = snapshot(dest)
    log_run(make_report("new"), experiment, {"test_roc_auc": 0.9})
    copies: list[Path] = []
    real_copy = promote.copy_file

    def copy_then_fail(source: Path, target: Path) -> None:
        if copies:
            raise error
        copies.append(target)
        real_copy(source, target)

    monkeypatch.setattr(promote, "copy_file", copy_then_fail)
    with pytest.raises((promote.PromoteError, KeyboardInterrupt)):
        run_promote(experiment, dest)
    assert len(copies) == 1 and copies[0].parent != dest  # the one file that was copied went to staging
    assert snapshot(dest) == before
    assert beside(dest) == [dest.name]


def test_a_promote_killed_mid_swap_is_repaired_by_the_next(promoted: tuple[Path, str]) -> None:
    dest, _ = promoted
    before = snapshot(dest)
    retired = dest.with_name(f".{dest.name}.old-killed")
    dest.rename(retired)  # killed after renaming the old page away, before renaming the new one in
    staging = dest.with_name(f".{dest.name}.staging-killed")
    staging.mkdir()
    (staging / "half.png").write_bytes(b"half")
    promote.recover_interrupted(dest)
    assert snapshot(dest) == before
    assert beside(dest) == [dest.name]


def test_recovery_restores_the_whole_page_not_a_newer_half_removed_leftover(promoted: tuple[Path, str]) -> None:
    import os
    import shutil

    dest, _ = promoted
    before = snapshot(dest)
    leftover = dest.with_name(f".{dest.name}.old-leftover")  # an earlier page whose removal failed part-way
    shutil.copytree(dest, leftover)
    next(path for path in leftover.iterdir() if path.name != "promotion.json").unlink()
    dest.rename(dest.with_name(f".{dest.name}.old-killed"))  # then a promote killed mid-swap
    os.utime(leftover, (2e9, 2e9))  # the failed removal touched it last
    promote.recover_interrupted(dest)
    assert snapshot(dest) == before
    assert beside(dest) == [dest.name]


def test_a_previous_page_that_cannot_be_removed_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import shutil

    dest, staging = tmp_path / "page", tmp_path / "staging"
    dest.mkdir()
    staging.mkdir()
    (staging / "new.txt").write_text("new")

    def busy(path: Path) -> None:
        raise OSError(16, "Device or resource busy", str(path))

    monkeypatch.setattr(shutil, "rmtree", busy)
    promote.swap_in(staging, dest)
    assert (dest / "new.txt").read_text() == "new"
    error = capsys.readouterr().err
    assert error.startswith("warning: the previous page could not all be removed from") and "(Device or resource busy); remove it by hand" in error


def test_a_dest_that_cannot_be_looked_into_is_one_line(experiment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python raises PermissionError from exists() and is_symlink() below a folder this user may not enter
    # (root may enter any, so the refusal is made here).
    dest = tmp_path / "private" / "page"

    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_symlink", refused)
    with pytest.raises(promote.PromoteError, match=f"^dest {re.escape(str(dest))} cannot be checked: Permission denied \\({re.escape(str(dest))}\\)$"):
        run_promote(experiment, dest)


def test_dry_run_changes_nothing(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    run_id = log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    dest = tmp_path / DEST
    record = run_promote(experiment, dest, dry_run=True)
    assert record["run_id"] == run_id and record["metric_value"] == 0.7
    assert not dest.parent.exists()


def test_dry_run_leaves_an_existing_page(promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path]) -> None:
    dest, old_run = promoted
    before = snapshot(dest)
    new_run = log_run(make_report("new"), experiment, {"test_roc_auc": 0.9})
    assert run_promote(experiment, dest, dry_run=True)["run_id"] == new_run
    assert snapshot(dest) == before and promoted_run(dest) == old_run


# ---- Refusals ------------------------------------------------------------------------------------------


def _drop_file(report_dir: Path) -> Path:
    (report_dir / "real-gradcam-fake.png").unlink()
    return report_dir


def _drop_calibration(report_dir: Path) -> Path:
    (report_dir / "calibration.json").unlink()
    return report_dir


def _break_robustness(report_dir: Path) -> Path:
    (report_dir / "robustness.json").write_text("{not json")
    return report_dir


def _add_folder(report_dir: Path) -> Path:
    (report_dir / "nested").mkdir()
    (report_dir / "nested" / "x.png").write_bytes(b"x")
    return report_dir


def _point_outside(report_dir: Path) -> Path:
    results = json.loads((report_dir / "gradcam_results.json").read_text())
    results["samples"][0]["input"] = "../../../outside.png"
    (report_dir / "gradcam_results.json").write_text(json.dumps(results))
    return report_dir


def _nan_robustness(report_dir: Path) -> Path:
    text = (report_dir / "robustness.json").read_text()
    (report_dir / "robustness.json").write_text(text.replace('"roc_auc": ', '"roc_auc": NaN, "was": ', 1))
    return report_dir


def _gradcam_not_an_object(report_dir: Path) -> Path:
    (report_dir / "gradcam_results.json").write_text("[]")
    return report_dir


def _gradcam_samples_not_a_list(report_dir: Path) -> Path:
    (report_dir / "gradcam_results.json").write_text('{"samples": 5}')
    return report_dir


def _break_json(report_dir: Path) -> Path:
    (report_dir / "training_metrics.json").write_text("{not json")
    return report_dir


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_drop_file, "report/real-gradcam-fake.png is missing"),
        (_drop_calibration, "report/calibration.json is missing"),
        (_add_folder, "unsafe artefact name 'nested/'"),
        (_point_outside, "names '../../../outside.png'"),
        (_gradcam_not_an_object, "gradcam_results.json is not laid out as train writes it"),
        (_gradcam_samples_not_a_list, "gradcam_results.json is not laid out as train writes it"),
        (_break_json, "training_metrics.json is not valid JSON"),
        (_break_robustness, "robustness.json is not valid JSON"),
        (_nan_robustness, "robustness.json is not valid JSON (it holds NaN, which a browser cannot read"),
    ],
    ids=["missing-artefact", "missing-calibration", "nested-folder", "path-outside", "gradcam-list", "gradcam-samples", "broken-json", "broken-robustness", "nan"],
)
def test_a_run_with_bad_artefacts_is_refused(
    promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path], spoil: Callable[[Path], Path], reason: str
) -> None:
    dest, _ = promoted
    before = snapshot(dest)
    log_run(spoil(make_report("bad")), experiment, {"test_roc_auc": 0.99})
    with pytest.raises(promote.PromoteError, match=re.escape(reason)):
        run_promote(experiment, dest)
    assert snapshot(dest) == before
    assert beside(dest) == [dest.name]
    assert not list(dest.parents[2].rglob("outside.png"))


def test_refusals_name_the_reason_and_leave_dest(promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path]) -> None:
    dest, old_run = promoted
    before = snapshot(dest)
    failed = log_run(None, "only-failed", {"test_roc_auc": 0.9}, status="FAILED")
    no_metric = log_run(make_report("no-metric"), "no-metric", {"other": 1.0})
    cases = {
        "experiment 'missing' does not exist": {"experiment": "missing"},
        "no FINISHED run in experiment 'only-failed'": {"experiment": "only-failed"},
        "metric 'test_roc_auc' is missing on all 1 FINISHED runs .* \\(known: other\\)": {"experiment": "no-metric"},
        f"run {no_metric} has no metric 'test_roc_auc'": {"run_id": no_metric},
        f"run {failed} is FAILED, not FINISHED": {"run_id": failed},
        "run f{32} does not exist": {"run_id": "f" * 32},
        "run x' or '1'='1 does not exist": {"run_id": "x' or '1'='1"},
        "mode must be max or min": {"mode": "best"},
        "could not register the model": {"run_id": old_run, "register": True},
    }
    for reason, options in cases.items():
        with pytest.raises(promote.PromoteError, match=reason):
            run_promote(options.pop("experiment", experiment), dest, **options)
        assert snapshot(dest) == before, reason
        assert beside(dest) == [dest.name], reason


def test_dest_below_a_file_is_refused_in_one_line(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    (tmp_path / "afile").write_text("mine")
    for dry_run in (True, False):
        with pytest.raises(promote.PromoteError, match=f"dest .* cannot be made: {re.escape(str(tmp_path / 'afile'))} is a file"):
            run_promote(experiment, tmp_path / "afile" / "page", dry_run=dry_run)
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_folder_that_cannot_be_made_is_one_line(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(promote.tempfile, "mkdtemp", refuse)
    with pytest.raises(promote.PromoteError, match="failed before staging, .* left as it was: .*Permission denied"):
        run_promote(experiment, tmp_path / "site")


def test_dest_that_promote_did_not_write_is_refused(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    (tmp_path / "site" / "notes.txt").parent.mkdir()
    (tmp_path / "site" / "notes.txt").write_text("mine")
    with pytest.raises(promote.PromoteError, match="holds files but no promotion.json"):
        run_promote(experiment, tmp_path / "site")
    with pytest.raises(promote.PromoteError, match="working folder"):
        run_promote(experiment, tmp_path)
    assert (tmp_path / "site" / "notes.txt").read_text() == "mine"


def test_a_linked_dest_is_published_through_the_link(promoted: tuple[Path, str], experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    dest, _ = promoted
    link = tmp_path / "page-link"
    link.symlink_to(dest, target_is_directory=True)
    new_run = log_run(make_report("new"), experiment, {"test_roc_auc": 0.9})
    run_promote(experiment, link)
    assert link.is_symlink() and link.resolve() == dest.resolve()  # the link stays, and the folder it names got the page
    assert promoted_run(dest) == new_run
    assert beside(dest) == [dest.name]
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".page-link.")]
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for dry_run in (True, False):
        with pytest.raises(promote.PromoteError, match=f"^dest {re.escape(str(tmp_path / 'dangling'))} is a link to .*gone, which leads nowhere"):
            run_promote(experiment, tmp_path / "dangling", dry_run=dry_run)
    assert (tmp_path / "dangling").is_symlink() and not (tmp_path / "gone").exists()


def test_dry_run_refuses_what_the_real_promote_would(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})  # no model logged
    for dry_run in (True, False):
        with pytest.raises(promote.PromoteError, match=f"^could not register the model of run {run_id}: it logged none"):
            run_promote(experiment, tmp_path / "site", register=True, dry_run=dry_run)
    # Tests may run as root, whom permission bits do not stop: the folder is made unwritable where promote asks.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **options: Path(path) != locked and real_access(path, mode, **options))
    for dry_run in (True, False):
        with pytest.raises(promote.PromoteError, match=f"^dest {re.escape(str(locked / 'site'))} cannot be written: {re.escape(str(locked))} is not writable$"):
            run_promote(experiment, locked / "site", dry_run=dry_run)
    assert list(locked.iterdir()) == [] and not (tmp_path / "site").exists()


def test_a_sweep_parent_named_by_run_id_is_refused_with_parent_run_id(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    sweep = start_sweep(experiment)
    child = log_run(make_report("child"), experiment, {"test_roc_auc": 0.7}, tags={"mlflow.parentRunId": sweep})
    tracking.finish_parent_run(sweep, "FINISHED", {"best_test_roc_auc": 0.7}, {"best_run_id": child}, {})
    refusal = f"^run {sweep} is a sweep's parent run, which holds no report; promote its best job with parent_run_id={sweep}$"
    for metric in ("test_roc_auc", "best_test_roc_auc"):  # the metric it lacks, and the summary metric it has
        with pytest.raises(promote.PromoteError, match=refusal):
            run_promote(experiment, tmp_path / DEST, run_id=sweep, metric=metric)
    assert run_promote(experiment, tmp_path / DEST, parent_run_id=sweep)["run_id"] == child


def test_two_promotes_of_one_dest_take_turns(
    experiment: str, make_report: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as the command sets it: stderr holds only promote's lines
    run_id = log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    dest = tmp_path / DEST
    copying, release = threading.Event(), threading.Event()
    real_copy = promote.copy_file

    def copy_slowly(source: Path, target: Path) -> None:
        if threading.current_thread().name == "first" and not copying.is_set():  # the first promote stops mid-staging
            copying.set()
            release.wait(120)
        real_copy(source, target)

    monkeypatch.setattr(promote, "copy_file", copy_slowly)
    capsys.readouterr()  # what the store said as it was made
    outcomes: dict[str, str] = {}

    def attempt() -> None:
        try:
            outcomes[threading.current_thread().name] = run_promote(experiment, dest)["run_id"]
        except promote.PromoteError as error:
            outcomes[threading.current_thread().name] = str(error)

    first = threading.Thread(target=attempt, name="first")
    first.start()
    assert copying.wait(120)
    second = threading.Thread(target=attempt, name="second")
    second.start()
    said = ""
    deadline = time.monotonic() + 60
    while second.is_alive() and "waiting for" not in said and time.monotonic() < deadline:
        time.sleep(0.05)
        said += capsys.readouterr().err
    release.set()
    first.join(120)
    second.join(120)
    assert said.splitlines() == [f"waiting for another promote of {dest} to finish"]
    assert outcomes == {"first": run_id, "second": run_id}
    assert promoted_run(dest) == run_id and beside(dest) == [dest.name]


def test_a_file_store_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in ("./mlruns", "/abs/mlruns", "file:///abs/mlruns"):
        assert "set MLFLOW_ALLOW_FILE_STORE=true" in tracking.file_store_problem(uri), uri
    for uri in ("sqlite:///mlflow.db", "http://localhost:5000", "databricks"):
        assert tracking.file_store_problem(uri) is None, uri
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking.file_store_problem("./mlruns") is None


# ---- Registering the model ------------------------------------------------------------------------------


def test_a_failed_promotion_puts_the_champion_alias_back(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7}, model=True)
    dest = tmp_path / DEST
    assert run_promote(experiment, dest, dry_run=True, register=True)["run_id"]  # a run with a model passes the dry run's check
    run_promote(experiment, dest, register=True)
    assert tracking.model_version_by_alias("image-forgery", "champion")["version"] == "1"
    before = snapshot(dest)

    def refuse(staging: Path, dest: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(promote, "swap_in", refuse)
    with pytest.raises(promote.PromoteError, match=r"left as it was, as is alias 'champion' \(back on version 1\): .*Permission denied"):
        run_promote(experiment, dest, register=True)
    assert tracking.model_version_by_alias("image-forgery", "champion")["version"] == "1"
    with pytest.raises(promote.PromoteError, match=r"as is alias 'champion' \(back on no version\)"):  # a model that had no champion
        run_promote(experiment, dest, register=True, model_name="newcomer")
    assert tracking.model_version_by_alias("newcomer", "champion") is None

    def store_gone(*args: Any) -> None:
        raise RuntimeError("store gone")

    monkeypatch.setattr(tracking, "point_alias", store_gone)
    with pytest.raises(promote.PromoteError, match=r"; alias 'champion' of 'image-forgery' could not be put back on version 1 \(store gone\), so it names the new version: "):
        run_promote(experiment, dest, register=True)
    assert snapshot(dest) == before and beside(dest) == [dest.name]


def test_registering_does_not_warn_of_missing_model_artefacts(experiment: str, make_report: Callable[[str], Path], tmp_path: Path) -> None:
    # MLflow 3 keeps a run's model as a LoggedModel, so every registration takes the path MLflow warns about.
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7}, model=True)
    registry_log = logging.getLogger("mlflow.tracking._model_registry.fluent")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    registry_log.addHandler(handler)
    try:
        record = run_promote(experiment, tmp_path / "site", register=True)
        registry_log.warning("another warning")  # the filter drops that one message only
    finally:
        registry_log.removeHandler(handler)
    assert record["registered_model"]["version"] == "1"
    assert seen == ["another warning"]


# ---- The real command ----------------------------------------------------------------------------------


def test_cli_refuses_a_missing_experiment_with_one_line(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, mlflow_store: str) -> None:
    log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    result = run_forgery("promote", "experiment=no-such-experiment", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_store}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: experiment 'no-such-experiment' does not exist (python -m forgery.train creates it)"]
    assert not (tmp_path / DEST).exists() and not (tmp_path / "outputs").exists()


def test_a_deleted_experiment_is_named_deleted_with_how_to_restore_it(experiment: str, make_report: Callable[[str], Path], mlflow_store: str) -> None:
    from mlflow.tracking import MlflowClient

    run_id = log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    client = MlflowClient(mlflow_store)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    client.delete_experiment(experiment_id)
    with pytest.raises(promote.PromoteError) as refused:
        promote.choose_run(experiment, "test_roc_auc", "max", None, None)
    assert str(refused.value) == (
        f"experiment {experiment!r} is deleted in {mlflow_store}: restore it (mlflow experiments restore --experiment-id {experiment_id}) or name another with experiment="
    )
    with pytest.raises(promote.PromoteError) as refused:  # named by its id, the run went with its experiment
        promote.choose_run(experiment, "test_roc_auc", "max", run_id, None)
    assert str(refused.value) == (
        f"run {run_id} was deleted with its experiment {experiment!r} in {mlflow_store}: "
        f"restore that (mlflow experiments restore --experiment-id {experiment_id}) or promote another run"
    )


def test_a_deleted_run_is_named_deleted_with_how_to_restore_it(experiment: str, make_report: Callable[[str], Path], mlflow_store: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    alone = log_run(make_report("a"), experiment, {"test_roc_auc": 0.7})
    client.delete_run(alone)
    with pytest.raises(promote.PromoteError) as refused:
        promote.choose_run(experiment, "test_roc_auc", "max", alone, None)
    assert str(refused.value) == f"run {alone} is deleted in {mlflow_store}: restore it (mlflow runs restore --run-id {alone}) or promote another run"
    with pytest.raises(promote.PromoteError, match="^run 0123456789abcdef does not exist$"):
        promote.choose_run(experiment, "test_roc_auc", "max", "0123456789abcdef", None)


def test_cli_refuses_a_file_store_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlruns").mkdir()
    result = run_forgery("promote", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "./mlruns"}, timeout=120)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: MLflow ") and "refuses the file store ./mlruns" in line
    assert "sqlite:///mlflow.db" in line and "MLFLOW_ALLOW_FILE_STORE=true" in line


def test_cli_without_a_store_refuses_and_creates_none(tmp_path: Path) -> None:
    result = run_forgery("promote", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: no MLflow store here")
    assert sorted(os.listdir(tmp_path)) == []


def test_cli_promotes_and_writes_nothing_else(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, mlflow_store: str) -> None:
    # By default the run best on validation wins, not the one best on test: picking by test would tune on it.
    best = log_run(make_report("a"), experiment, {"evaluated_val_auc": 0.8, "test_roc_auc": 0.7})
    log_run(make_report("b"), experiment, {"evaluated_val_auc": 0.4, "test_roc_auc": 0.9})
    log_run(None, experiment, {"evaluated_val_auc": 0.99}, tags={"sweep": "parent"})  # a sweep's summary run, no report
    before = set(os.listdir(tmp_path))
    dry = run_forgery("promote", f"experiment={experiment}", "dry_run=true", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_store}, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would promote run {best}" in dry.stdout and str(DEST) in dry.stdout
    assert all(name in dry.stdout for name in ("training_metrics.json", "calibration.json", "gradcam_checks.json", "robustness.json"))
    assert set(os.listdir(tmp_path)) == before

    result = run_forgery("promote", f"experiment={experiment}", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_store}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"promoted run {best}" in result.stdout and "evaluated_val_auc = 0.8" in result.stdout and "http.server" in result.stdout
    assert promoted_run(tmp_path / DEST) == best
    assert set(os.listdir(tmp_path)) == before | {"public"}  # no outputs/, .hydra/ or promote.log
    assert not list(tmp_path.rglob("*.log"))


def test_cli_warns_when_a_test_metric_picks_the_run(experiment: str, make_report: Callable[[str], Path], tmp_path: Path, mlflow_store: str) -> None:
    best_on_test = log_run(make_report("b"), experiment, {"evaluated_val_auc": 0.4, "test_roc_auc": 0.9})
    arguments = [f"experiment={experiment}", "dry_run=true"]
    picked = run_forgery("promote", *arguments, "metric=test_roc_auc", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_store}, timeout=120)
    assert picked.returncode == 0 and f"would promote run {best_on_test}" in picked.stdout, picked.stderr
    assert picked.stderr.strip().splitlines() == [
        "warning: metric=test_roc_auc picks the run by its test split, so the test figures the page shows are the best of several draws, "
        "not a fair estimate; rank by a validation metric (evaluated_val_auc, the default, or val_loss mode=min)"
    ]
    named = run_forgery("promote", *arguments, "metric=test_roc_auc", f"run_id={best_on_test}", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_store}, timeout=120)
    assert named.returncode == 0 and "warning" not in named.stderr  # a run named by id is not picked by any metric


def test_config_defaults_match_the_documented_ones() -> None:
    from hydra import compose, initialize

    assert promote.CONFIG_FILE == CONFIG_DIR / "promote.yaml"
    with initialize(version_base="1.3", config_path=None):  # as promote's main composes it: from the config store
        cfg = compose(config_name="promote", return_hydra_config=True)
        chosen = compose(config_name="promote", overrides=["experiment=lr_sweep", "mode=min"])
    assert (cfg.experiment, cfg.metric, cfg.mode, cfg.dest) == ("image-forgery", "evaluated_val_auc", "max", "public/projects/image-forgery")
    assert cfg.run_id is None and cfg.parent_run_id is None and cfg.dry_run is False and cfg.register is False
    assert cfg.hydra.output_subdir is None and cfg.hydra.run.dir == "." and cfg.hydra.job.chdir is False
    assert cfg.hydra.job_logging.handlers.console.stream == "ext://sys.stdout" and "file" not in cfg.hydra.job_logging.handlers
    # A plain key even though conf/ has an experiment/ presets group for train.
    assert (chosen.experiment, chosen.mode) == ("lr_sweep", "min")
    assert promote.CONFIG_FILE.read_text().startswith("# ")


# ---- A real training run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real `python -m forgery.train epochs=1` in a tmp folder; returns (folder, run id)."""
    folder = tmp_path_factory.mktemp("trained")
    result = run_forgery("train", "epochs=1", "hydra.run.dir=out", cwd=folder, env={"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tracking_runs(folder)
    assert len(runs) == 1
    return folder, runs[0]


def tracking_runs(folder: Path) -> list[str]:
    """Run ids in the image-forgery experiment of the store in `folder`."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:
        return [run["run_id"] for run in tracking.search_runs(tracking.experiment_id("image-forgery"))]
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_cli_promotes_a_real_run_file_for_file(trained: tuple[Path, str], tmp_path: Path) -> None:
    folder, run_id = trained
    dest = tmp_path / "public" / "projects" / "image-forgery"
    result = run_forgery("promote", f"dest={dest}", cwd=folder, env={"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in promote.REPORT_FILES:
        assert (dest / name).read_bytes() == (folder / "out" / "report" / name).read_bytes(), name
    record = json.loads((dest / "promotion.json").read_text())
    headline = json.loads((folder / "out" / "report" / "training_metrics.json").read_text())["headline"]
    assert record["run_id"] == run_id and record["metric"] == "evaluated_val_auc"  # the default: validation, never test
    assert record["metric_value"] == pytest.approx(headline["evaluated_val_auc"])


@pytest.mark.slow
def test_register_points_champion_at_each_new_version(trained: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    folder, run_id = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:
        assert tracking.model_version_by_alias("image-forgery", "champion") is None
        first = run_promote("image-forgery", tmp_path / "site", register=True)
        assert tracking.model_version_by_alias("image-forgery", "champion") == {"version": "1", "run_id": run_id}
        assert first["registered_model"] == {"name": "image-forgery", "version": "1", "alias": "champion"}
        run_promote("image-forgery", tmp_path / "site", register=True)
        assert tracking.model_version_by_alias("image-forgery", "champion") == {"version": "2", "run_id": run_id}
        assert json.loads((tmp_path / "site" / "promotion.json").read_text())["registered_model"]["version"] == "2"
    finally:
        mlflow.set_tracking_uri(None)


def test_cli_refuses_a_misspelt_key_in_one_line(tmp_path: Path) -> None:
    result = run_forgery("promote", "dryrun=true", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown config key 'dryrun' (check the spelling; the same command with --cfg job lists every key)"]
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, not even a store


def test_cli_refuses_an_empty_dest_in_one_line(tmp_path: Path) -> None:
    # Path("") is the working folder: it was refused as such ("dest . is the working folder"), which it is not.
    result = run_forgery("promote", "dest=", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: dest is empty; give the page's folder (public/projects/image-forgery by default)"]
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("option", ["register=no", "dry_run=off"])
def test_cli_refuses_a_flag_that_is_not_true_or_false(option: str, tmp_path: Path) -> None:
    # Python's bool("no") is True: register=no used to register the model and move the champion alias.
    result = run_forgery("promote", option, cwd=tmp_path, timeout=120)
    key, value = option.split("=")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {key} must be true or false, got '{value}'"]
    assert sorted(os.listdir(tmp_path)) == []
