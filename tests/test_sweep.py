"""Hydra multirun sweeps grouped in MLflow: real launchers, a real store, a real tracking server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from forgery.sweep import best_row, summary_columns, summary_rows, to_csv, to_markdown, unlogged_metric_warning, unranked_error
from tests.conftest import run_forgery

TINY = ["epochs=1", "data.train_per_class=60", "data.test_per_class=20"]


def child(job: int, status: str, auc: float | None, reason: str = "") -> dict:
    metrics = {} if auc is None else {"evaluated_val_auc": auc, "test_roc_auc": auc - 0.01, "test_pr_auc": 1 - auc}
    tags = {"sweep_job": str(job), "sweep_overrides": f"optimizer.lr={job}", "failure_reason": reason} if reason else {"sweep_job": str(job), "sweep_overrides": f"optimizer.lr={job}"}
    return {"run_id": f"run{job}", "status": status, "metrics": metrics, "tags": tags}


def test_summary_orders_by_job_and_best_skips_failures() -> None:
    rows = summary_rows([child(2, "FINISHED", 0.7), child(0, "FINISHED", 0.9), child(1, "FAILED", None, "ValueError: boom")])
    assert [row["job"] for row in rows] == ["0", "1", "2"]
    assert rows[1]["failure_reason"] == "ValueError: boom" and rows[1]["evaluated_val_auc"] == ""
    assert best_row(rows, "evaluated_val_auc", "max")["run_id"] == "run0"
    assert best_row(rows, "evaluated_val_auc", "min")["run_id"] == "run2"
    assert best_row([rows[1]], "evaluated_val_auc", "max") is None


def test_summary_tables() -> None:
    rows = summary_rows([child(0, "FINISHED", 0.9), child(1, "FAILED", None, "a|b")])
    columns = summary_columns("evaluated_val_auc")
    csv_lines = to_csv(rows, columns).splitlines()
    assert csv_lines[0].startswith("job,run_id,status,overrides,evaluated_val_auc") and len(csv_lines) == 3
    markdown = to_markdown(rows, columns).splitlines()
    assert len(markdown) == 4 and "a\\|b" in markdown[3]
    # a failure reason of several lines (Keras's often are) stays on its row
    rows = summary_rows([child(0, "FINISHED", 0.9), child(1, "FAILED", None, "ResourceExhaustedError: in Conv2D.call().\n\nOOM when allocating")])
    markdown = to_markdown(rows, columns).splitlines()
    assert len(markdown) == 4 and markdown[3].endswith("| ResourceExhaustedError: in Conv2D.call(). OOM when allocating |")


def test_jobs_closer_than_the_shown_decimals_are_still_ranked_apart() -> None:
    # Rounded to the table's 6 decimals these tie, and a tie would keep the earlier (worse) job.
    close = [child(0, "FINISHED", 0.98765412), child(1, "FINISHED", 0.98765448)]
    assert best_row(summary_rows(close), "evaluated_val_auc", "max")["run_id"] == "run1"
    losses = [{**child(0, "FINISHED", 0.9), "metrics": {"test_loss": 4e-7}}, {**child(1, "FINISHED", 0.9), "metrics": {"test_loss": 1e-9}}]
    best = best_row(summary_rows(losses, "test_loss"), "test_loss", "min")
    assert best["run_id"] == "run1" and float(best["test_loss"]) == 1e-9  # the value the parent run logs as best_test_loss


def test_a_ranking_metric_outside_the_usual_columns_gets_its_own() -> None:
    rows = summary_rows([child(0, "FINISHED", 0.9), child(1, "FINISHED", 0.7)], "test_pr_auc")
    columns = summary_columns("test_pr_auc")
    assert columns[4] == "test_pr_auc" and float(to_csv(rows, columns).splitlines()[1].split(",")[4]) == 1 - 0.9  # every digit
    assert to_markdown(rows, columns).splitlines()[2].split(" | ")[4] == "0.100000"  # rounded for reading
    assert best_row(rows, "test_pr_auc", "max")["run_id"] == "run1"
    assert summary_columns("test_accuracy").count("test_accuracy") == 1


def test_a_metric_no_finished_job_logged_is_an_error_that_names_the_logged_ones() -> None:
    children = [child(0, "FINISHED", 0.9), child(1, "FAILED", None, "ValueError: boom")]
    message = unranked_error(summary_rows(children, "val_acc"), children, "val_acc")
    assert message is not None and message.startswith("sweep.metric 'val_acc' was logged by none of the 1 finished jobs")
    assert message.endswith("they log: evaluated_val_auc, test_pr_auc, test_roc_auc")
    assert unranked_error(summary_rows(children), children, "evaluated_val_auc") is None
    failed_only = [child(1, "FAILED", None, "ValueError: boom")]
    assert unranked_error(summary_rows(failed_only), failed_only, "val_acc") is None  # the failures are the news


def test_a_finished_job_without_the_metric_warns_naming_what_it_logged() -> None:
    children = [child(0, "FAILED", None), child(1, "FINISHED", 0.9), child(2, "RUNNING", None)]
    warning = unlogged_metric_warning(children, "1", "val_acc")
    assert warning is not None and warning.startswith("sweep.metric 'val_acc' is not among the metrics job 1 logged (evaluated_val_auc")
    assert unlogged_metric_warning(children, "1", "evaluated_val_auc") is None  # it logged it
    assert unlogged_metric_warning(children, "0", "val_acc") is None  # a failed job says nothing about the metric
    assert unlogged_metric_warning(children, "2", "val_acc") is None  # nor does one still running


def test_a_metric_logged_only_as_nan_is_called_undefined_not_missing() -> None:
    children = [child(0, "FINISHED", float("nan")), child(1, "FINISHED", None), child(2, "FAILED", None, "ValueError: boom")]
    message = unranked_error(summary_rows(children), children, "evaluated_val_auc")
    assert message == "sweep.metric 'evaluated_val_auc' is undefined (NaN) in all 1 finished job(s) that logged it, so none is ranked best"


def sweep_runs(folder: Path, uri: str | None = None) -> tuple[dict, list]:
    """(parent run, children) of the only sweep in `folder`'s default store."""
    client = MlflowClient(uri or f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-forgery")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # nothing outside the sweep
    return parents[0], children


def check_parent_names_the_best_child(folder: Path, parent, children) -> None:
    finished = [run for run in children if run.info.status == "FINISHED"]
    # The summary ranks values as it shows them (6 decimals); between equal ones the first job wins.
    score = lambda run: round(run.data.metrics["evaluated_val_auc"], 6)  # noqa: E731
    top = [run for run in finished if score(run) == max(map(score, finished))]
    best = min(top, key=lambda run: int(run.data.tags["sweep_job"]))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_evaluated_val_auc"] == pytest.approx(best.data.metrics["evaluated_val_auc"], abs=1e-6)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    table = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(folder))).read_text()
    assert all(run.info.run_id in table for run in children)


@pytest.mark.slow
def test_grid_sweep_groups_children_under_one_parent(tmp_path: Path) -> None:
    result = run_forgery("train", "-m", "optimizer.lr=1e-3,1e-4", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(tmp_path)
    assert sorted(run.data.params["optimizer.lr"] for run in children) == ["0.0001", "0.001"]
    assert all(run.info.status == "FINISHED" for run in children)
    assert parent.data.params["sweep.overrides"] == " ".join(["optimizer.lr=1e-3,1e-4", *TINY])
    assert parent.data.tags["sweep_metric_checked"] == "logged"
    check_parent_names_the_best_child(tmp_path, parent, children)


@pytest.mark.slow
def test_a_sweep_ranked_by_a_metric_nobody_logs_fails_loudly_and_keeps_the_runs(tmp_path: Path) -> None:
    result = run_forgery("train", "-m", "optimizer.lr=1e-3,1e-4", "sweep.metric=val_acc", *TINY, cwd=tmp_path, merged=True)
    output = result.stdout
    assert result.returncode == 1
    assert "error: sweep.metric 'val_acc' was logged by none of the 2 finished jobs" in output
    assert "evaluated_val_auc" in output.split("they log:")[1]
    # said once, as soon as the first job ended, not only after every job had run
    warning = "warning: sweep.metric 'val_acc' is not among the metrics job 0 logged ("
    assert output.count("warning: sweep.metric") == 1 and warning in output
    assert output.index(warning) < output.index("#1 : optimizer.lr=0.0001")
    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FAILED" and "val_acc" in parent.data.tags["failure_reason"]
    assert parent.data.tags["sweep_metric_checked"] == "missing"
    assert [run.info.status for run in children] == ["FINISHED", "FINISHED"] and "best_run_id" not in parent.data.tags


@pytest.mark.parametrize(("local_jobs", "cut_short", "job_status"), [(True, False, "KILLED"), (True, True, "KILLED"), (False, False, "RUNNING")])
def test_an_abandoned_sweep_ends_its_parent_and_its_local_jobs_runs(mlflow_store: str, monkeypatch, capsys, local_jobs: bool, cut_short: bool, job_status: str) -> None:
    # A job run still RUNNING after the grace was killed with its worker; a SLURM job still runs on its cluster.
    # A second Ctrl-C during the wait cuts it short, and nothing is left RUNNING.
    from forgery import sweep, tracking

    monkeypatch.setattr(sweep, "JOB_GRACE_SECONDS", 1.0)
    callback = sweep.MlflowSweepCallback()
    callback.parent, callback.local_jobs = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {}), local_jobs
    job = tracking.start_parent_run("unit", None, {"mlflow.parentRunId": callback.parent}, {})
    done = tracking.start_parent_run("unit", None, {"mlflow.parentRunId": callback.parent}, {})
    tracking.end_run_by_id(done, "FINISHED")
    client = MlflowClient(mlflow_store)

    def interrupted(seconds: float) -> None:
        assert client.get_run(callback.parent).info.status == "KILLED"  # ended before the wait began
        raise KeyboardInterrupt

    if cut_short:
        monkeypatch.setattr(sweep.time, "sleep", interrupted)
    callback._end_if_abandoned()
    assert client.get_run(callback.parent).info.status == "KILLED"
    assert (client.get_run(job).info.status, client.get_run(done).info.status) == (job_status, "FINISHED")
    jobs = " and 1 unfinished job run(s)" if local_jobs else ""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"error: the sweep stopped before it finished; its parent run {callback.parent}{jobs} ended KILLED"
    assert ("the sweep stopped: waiting up to 1 s for 1 job run(s) to end" in lines) == local_jobs
    callback._end_if_abandoned()  # at exit again (a second callback instance, say): nothing left to end, nothing said
    assert "error:" not in capsys.readouterr().err


def exit_of(call, callback=None) -> tuple[object, bool]:
    """Run `call`, which must end in SystemExit, with `callback` (if given) handling SIGTERM as a sweep's does.

    Returns the exit code and whether SIGTERM's and SIGINT's handlers were left as they were; restores them either way.
    """
    from forgery import interrupts

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    if callback is not None:
        callback.previous_handler = interrupts.install(signal.SIGTERM, callback._stop)
    try:
        with pytest.raises(SystemExit) as stopped:
            call()
    finally:
        left = {sig: signal.getsignal(sig) for sig in before}
        for sig, handler in before.items():
            signal.signal(sig, handler)
    return stopped.value.code, left == before


def summary_config(folder: Path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"tracking": {"experiment": "unit"}, "hydra": {"sweep": {"dir": str(folder)}}})


def test_a_stopped_sweep_ends_its_parent_before_passing_sigterm_on(mlflow_store: str, monkeypatch, capsys) -> None:
    # A job still starting that misses the signal must find its parent ended (and not train): so the parent
    # ends first, then the jobs are signalled.
    from forgery import interrupts, sweep, tracking

    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})
    seen = []
    monkeypatch.setattr(interrupts, "forward", lambda signum: seen.append((signum, tracking.run_status(callback.parent))) or [])
    callback._end_if_abandoned(signal.SIGTERM)
    assert seen == [(signal.SIGTERM, "KILLED")]
    callback._end_if_abandoned()  # at exit: already ended, nothing passed on again
    assert len(seen) == 1
    with pytest.raises(sweep.SweepStopped, match=f"parent run {callback.parent} has already ended KILLED"):
        sweep.check_parent_running(callback.parent)
    sweep.check_parent_running(None)  # outside a sweep: nothing to check
    sweep.check_parent_running("0" * 32)  # a parent this store lacks: left to the job's run


def test_sigterm_with_the_store_gone_still_reaches_the_jobs_and_exits_143(mlflow_store: str, monkeypatch, capsys) -> None:
    from forgery import interrupts, sweep, tracking

    callback = sweep.MlflowSweepCallback()
    callback.parent = parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})
    seen = []
    monkeypatch.setattr(interrupts, "forward", lambda signum: seen.append(signum) or [])
    monkeypatch.setattr(interrupts, "child_processes", lambda pid: [pid + 1])  # a parallel launcher's job process

    def gone(run_id: str) -> str:
        raise ConnectionError("connection refused\nmore detail")

    monkeypatch.setattr(tracking, "run_status", gone)
    code, _ = exit_of(lambda: callback._stop(signal.SIGTERM, None))
    assert (code, seen, callback.parent) == (143, [signal.SIGTERM], None)
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: the sweep stopped, but its parent run {parent} could not be ended in MLflow (connection refused)"


@pytest.mark.parametrize("children", [[], [12345]])
def test_sigterm_ends_the_parent_in_the_handler_only_when_the_jobs_run_in_other_processes(mlflow_store: str, monkeypatch, children: list[int]) -> None:
    # With the basic launcher (no job processes) this process may be inside a job's MLflow write, whose lock
    # ending the parent would wait on: the parent is left to the exit handler. With job processes, it ends first.
    from forgery import interrupts, sweep, tracking

    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})
    seen = []
    monkeypatch.setattr(interrupts, "child_processes", lambda pid: children)
    monkeypatch.setattr(interrupts, "forward", lambda signum: seen.append((signum, tracking.run_status(callback.parent))) or children)
    assert exit_of(lambda: callback._stop(signal.SIGTERM, None))[0] == 143
    assert seen == [(signal.SIGTERM, "KILLED" if children else "RUNNING")]
    callback._end_if_abandoned()  # at exit
    assert tracking.run_status(callback.parent) == "KILLED"


def test_a_signal_held_while_the_store_fails_during_the_summary_still_names_the_exit(mlflow_store: str, monkeypatch, capsys, tmp_path: Path) -> None:
    from forgery import sweep, tracking

    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})

    def signalled_then_gone(name: str) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        raise ConnectionError("connection refused")

    monkeypatch.setattr(tracking, "experiment_id", signalled_then_gone)
    code, _ = exit_of(lambda: callback.on_multirun_end(summary_config(tmp_path)), callback)
    assert code == 143  # not the summary's 1: the signal is what ended it
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2].startswith("error: could not summarise sweep") and lines[-1] == "error: stopped by SIGTERM"


def test_a_stop_after_the_parent_was_ended_by_hand_still_waits_for_and_ends_its_jobs(mlflow_store: str, monkeypatch, capsys) -> None:
    from forgery import interrupts, sweep, tracking

    monkeypatch.setattr(sweep, "JOB_GRACE_SECONDS", 0.5)
    monkeypatch.setattr(interrupts, "forward", lambda signum: [])
    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})
    job = tracking.start_parent_run("unit", None, {"mlflow.parentRunId": callback.parent}, {})
    tracking.end_run_by_id(callback.parent, "KILLED", "ended by hand")
    callback._end_if_abandoned(signal.SIGTERM)
    assert tracking.run_status(job) == "KILLED"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"error: the sweep stopped before it finished; 1 unfinished job run(s) of parent run {callback.parent} ended KILLED"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_summary_is_written_waits_for_it_then_exits(mlflow_store: str, monkeypatch, capsys, tmp_path: Path, signum: int) -> None:
    # A real SIGTERM or Ctrl-C to this process between the summary's writes: the parent run is still summarised
    # and ended FINISHED (not left half-written, then KILLED at exit), and the sweep exits as the signal ends it.
    from forgery import sweep, tracking

    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.start_parent_run("unit", None, {"sweep": "parent"}, {})
    job = tracking.start_parent_run("unit", None, {"mlflow.parentRunId": callback.parent, "sweep_job": "0", "sweep_overrides": "seed=1"}, {})
    MlflowClient(mlflow_store).log_metric(job, "evaluated_val_auc", 0.9)
    tracking.end_run_by_id(job, "FINISHED")
    real_finish = tracking.finish_parent_run

    def signalled_midway(run_id, status, metrics, tags, texts) -> None:
        os.kill(os.getpid(), signum)  # Python runs the handler at the next line
        real_finish(run_id, status, metrics, tags, texts)

    monkeypatch.setattr(tracking, "finish_parent_run", signalled_midway)
    code, restored = exit_of(lambda: callback.on_multirun_end(summary_config(tmp_path)), callback)
    assert code == 128 + signum
    assert restored  # the sweep's handlers are gone once it has ended
    parent = MlflowClient(mlflow_store).get_run(callback.parent)
    assert parent.info.status == "FINISHED" and parent.data.tags["best_run_id"] == job
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: stopped by {signal.Signals(signum).name} after the sweep's summary was saved on parent run {callback.parent}"


@pytest.mark.slow
def test_sigterm_to_a_parallel_sweeps_process_stops_its_workers_and_ends_every_run(tmp_path: Path) -> None:
    # `kill <pid>` or `docker stop` reaches the sweeper's process alone: its joblib workers must not train on,
    # orphaned, under a parent left RUNNING, and must end their runs themselves (with their resume commands)
    # before the pool's shutdown kills them.
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    arguments = ["-m", "optimizer.lr=1e-3,1e-4", "epochs=3", "data.train_per_class=2500", "data.test_per_class=100", "verbose=2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.train", *arguments, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**environment, "PYTHONUNBUFFERED": "1", "FORGERY_CACHE_DIR": str(tmp_path / "cache")},
        start_new_session=True,  # its own process group, which the test checks is empty afterwards
    )
    try:
        assert process.stdout is not None
        training = 0
        for line in process.stdout:
            training += "Epoch 2/3" in line
            if training == 2:  # both jobs are training
                break
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        deadline = time.monotonic() + 20
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not group_members(process.pid), "the sweep's workers outlived it"
    finally:
        for member in group_members(process.pid):
            os.kill(member, signal.SIGKILL)
    assert process.returncode == 143, output[-3000:]
    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "KILLED" and len(children) == 2
    assert all(run.info.status == "KILLED" for run in children), [run.info.status for run in children]
    assert all(run.data.tags["failure_reason"].startswith("interrupted") for run in children), [run.data.tags for run in children]
    for run in children:
        assert f"resume with: python -m forgery.train resume={run.info.run_id}" in output
    assert f"error: the sweep stopped before it finished; its parent run {parent.info.run_id} ended KILLED" in output


def group_members(group: int) -> list[int]:
    """Live processes (zombies left aside: a container's init may not reap them) of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.slow
def test_a_job_starting_after_its_sweep_was_stopped_does_not_train(tmp_path: Path) -> None:
    # The parent ends KILLED as job 0 starts (a stopped sweeper ends it before passing SIGTERM on, which a
    # job still starting under submitit would miss; or someone ended it by hand): each job refuses in one line
    # and opens no run, without ending the sweep's process (a worker pool would kill the other jobs with it),
    # and the summary leaves the ended parent as it was.
    stopper = ["+hydra.callbacks.stopper._target_=tests.sweep_stopper.EndParentAtJobStart"]
    root = str(Path(__file__).resolve().parents[1])
    result = run_forgery("train", "-m", "seed=1,2", *TINY, *stopper, cwd=tmp_path, env={"PYTHONPATH": root})
    assert result.returncode == 1, result.stderr[-3000:]
    parent, children = sweep_runs(tmp_path)
    assert (parent.info.status, children) == ("KILLED", []) and "best_run_id" not in parent.data.tags
    refused = f"error: job not started: its sweep's parent run {parent.info.run_id} has already ended KILLED (the sweep was stopped, or its parent ended by hand)"
    lines = result.stderr.strip().splitlines()
    assert lines.count(refused) == 2 and "Traceback" not in result.stderr
    assert lines[-1] == f"error: the sweep's parent run {parent.info.run_id} had already ended KILLED; its summary was not written to it"


@pytest.mark.slow
def test_parallel_joblib_sweep_records_every_job(tmp_path: Path) -> None:
    result = run_forgery("train", "-m", "optimizer.lr=1e-3,1e-4", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    parent, children = sweep_runs(tmp_path)
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:  # metrics and artefacts of both processes made it into the one SQLite store
        assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 1
        assert {entry.path for entry in client.list_artifacts(run.info.run_id, "report")} >= {"report/model_card.json"}
    check_parent_names_the_best_child(tmp_path, parent, children)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    # Job 1's learning rate is legal but makes the loss nan in its first batches: it fails, the sweep goes on.
    result = run_forgery("train", "-m", "optimizer.lr=1e-3,1e30", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    assert "1 of 2 sweep jobs failed" in result.stderr
    parent, children = sweep_runs(tmp_path)
    by_status = {run.info.status: run for run in children}
    assert set(by_status) == {"FINISHED", "FAILED"}
    assert "loss became nan" in by_status["FAILED"].data.tags["failure_reason"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    table = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.md", str(tmp_path))).read_text()
    assert "FAILED" in table and by_status["FAILED"].info.run_id in table
    assert parent.data.tags["best_run_id"] == by_status["FINISHED"].info.run_id


@pytest.mark.parametrize(
    ("ranking", "message"),
    [
        (["sweep.mode=min"], "error: hparams_search=optuna maximises evaluated_val_auc (what each job returns), but sweep.metric=evaluated_val_auc sweep.mode=min"),
        (["sweep.metric=evaluated_val_accuracy"], "error: hparams_search=optuna maximises evaluated_val_auc (what each job returns), but sweep.metric=evaluated_val_accuracy sweep.mode=max"),
        (["hydra.sweeper.direction=minimize"], "error: hydra.sweeper.direction=minimize: each job returns evaluated_val_auc, higher is better, so Optuna must maximize"),
    ],
)
def test_optuna_refuses_a_ranking_other_than_what_it_maximises(tmp_path: Path, ranking: list[str], message: str) -> None:
    result = run_forgery("train", "-m", "hparams_search=optuna", *ranking, *TINY, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()  # refused before a parent run or any job


@pytest.mark.slow
def test_optuna_search_runs_trials_on_the_validation_metric(tmp_path: Path) -> None:
    result = run_forgery("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(tmp_path)
    assert len(children) == 2
    for run in children:
        assert run.data.params["augment.name"] in {"none", "light", "strong"}
        assert 1e-4 <= float(run.data.params["optimizer.lr"]) <= 3e-3
    best_value = max(run.data.metrics["evaluated_val_auc"] for run in children)
    assert f"Best value: {best_value}"[:17] in result.stdout + result.stderr  # what optuna maximised is val AUC
    check_parent_names_the_best_child(tmp_path, parent, children)


@pytest.mark.slow
def test_an_optuna_trial_that_fails_does_not_end_the_study(tmp_path: Path) -> None:
    # Every trial's loss turns nan: each is told to Optuna as the worst score, so the study runs them all.
    result = run_forgery("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=1e30", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: 2 of 2 sweep jobs failed")
    parent, children = sweep_runs(tmp_path)
    assert len(children) == 2 and all(run.info.status == "FAILED" for run in children)
    assert all("loss became nan" in run.data.tags["failure_reason"] for run in children)


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_in_their_own_processes(tmp_path: Path) -> None:
    result = run_forgery("train", "-m", "hydra/launcher=local_processes", "optimizer.lr=1e-3,1e-4", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(tmp_path)
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    assert list((tmp_path / "multirun").rglob(".submitit"))  # submitit really ran them


def test_slurm_preset_composes(compose_train) -> None:
    from hydra import compose

    cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.slow
def test_remote_tracking_server(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}", "--artifacts-destination", str(server_dir / "artifacts")],
        cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                MlflowClient(uri).search_experiments()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        work = tmp_path / "work"
        work.mkdir()
        result = run_forgery("train", *TINY, cwd=work, env={"MLFLOW_TRACKING_URI": uri})
        assert result.returncode == 0, result.stderr[-3000:]
        assert not (work / "mlflow.db").exists()  # everything went to the server
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
        assert run.info.status == "FINISHED" and "test_roc_auc" in run.data.metrics
        assert {entry.path for entry in client.list_artifacts(run.info.run_id, "report")} >= {"report/training_metrics.json", "report/fake-gradcam-fake.png"}
        assert list((server_dir / "artifacts").rglob("training_metrics.json"))  # stored by the server, not locally
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
