"""Hydra multirun sweeps grouped in MLflow: a parent run per sweep, a child run per job, a summary at the end.

`MlflowSweepCallback` (registered under `hydra.callbacks` in conf/train.yaml) opens the parent run when
a multirun starts and hands its id to every job through an environment variable, which worker processes
(joblib, submitit) inherit. Each job tags its run with `mlflow.parentRunId`. A job that fails ends
FAILED with its reason and the sweep goes on; when the sweep ends, the parent gets the best child's id
and metric and a table of every child, and the command exits non-zero if any job failed.
"""

from __future__ import annotations

import atexit
import csv
import io
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from forgery import interrupts

log = logging.getLogger(__name__)

PARENT_ENV = "FORGERY_SWEEP_PARENT_RUN_ID"
# A tag on the parent run: whether a finished job logged sweep.metric ("logged" or "missing"), once one has.
METRIC_CHECKED_TAG = "sweep_metric_checked"
# The figures a reader compares, of the weights each run tested (the best epoch's when early stopping restores it).
METRIC_COLUMNS = ("evaluated_val_auc", "evaluated_val_accuracy", "test_roc_auc", "test_accuracy")
# How long a stopped sweep waits for its jobs to end their runs before ending those still RUNNING itself
# (twice at most: told by SIGTERM, then at exit; under `docker stop`'s 10 s before it kills).
JOB_GRACE_SECONDS = 4.0


def parent_run_id() -> str | None:
    """The sweep's parent run id when this process runs a job of a multirun, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return os.environ.get(PARENT_ENV) or None


def job_tags() -> dict[str, str]:
    """Tags that tie a job's run to its sweep: parent run, job number and the job's own overrides."""
    parent = parent_run_id()
    if parent is None:
        return {}
    job = HydraConfig.get().job
    return {"mlflow.parentRunId": parent, "sweep_job": str(job.num), "sweep_overrides": " ".join(HydraConfig.get().overrides.task)}


class SweepStopped(Exception):
    """A job about to start under a parent run that has ended: its sweep was stopped, so it must not train."""


def check_parent_running(parent: str | None) -> None:
    """Raise SweepStopped when a job's sweep `parent` run has ended; nothing outside a sweep (`parent` None).

    A job process that was still starting when the sweep was stopped can miss the SIGTERM passed on to it
    (submitit's job wrapper ignores SIGTERM until the training installs its own handler), and would then
    train on with no sweep to report to. The sweep ends its parent before passing the signal on, so such a
    job sees it here. A parent this store lacks (deleted, or another store) is left to the job's own run.
    """
    from forgery import tracking

    status = tracking.run_status(parent) if parent else None
    if status not in (None, "RUNNING"):
        raise SweepStopped(f"job not started: its sweep's parent run {parent} has already ended {status} (the sweep was stopped, or its parent ended by hand)")


def record_job_failure(experiment: str, error: BaseException) -> None:
    """Make sure a failed job shows in MLflow: a FAILED child run unless the job had opened its own.

    Best effort: when the store itself is what failed, a warning says so and the sweep goes on.
    """
    from forgery import tracking

    tags = job_tags()
    try:
        experiment_id = tracking.experiment_id(experiment)
        runs = tracking.search_runs(experiment_id) if experiment_id else []
        if any(run["tags"].get("mlflow.parentRunId") == tags["mlflow.parentRunId"] and run["tags"].get("sweep_job") == tags["sweep_job"] for run in runs):
            return  # its run exists and Tracker.run already ended it FAILED with the reason
        tracking.record_failed_run(experiment, f"job-{tags['sweep_job']}-failed", tags, f"{type(error).__name__}: {error}")
    except Exception as problem:  # the tracking store is gone too
        log.warning("job %s: could not record its failure in MLflow (%s)", tags["sweep_job"], str(problem).splitlines()[0] if str(problem) else type(problem).__name__)


def metric_columns(metric: str) -> tuple[str, ...]:
    """The summary's metric columns: the usual ones, led by the ranking `metric` when it is not one of them."""
    return METRIC_COLUMNS if metric in METRIC_COLUMNS else (metric, *METRIC_COLUMNS)


TEXT_COLUMNS = ("job", "run_id", "status", "overrides", "failure_reason")  # the summary's columns that are not metrics


def summary_columns(metric: str) -> tuple[str, ...]:
    """Every column of the summary table, in order."""
    return (*TEXT_COLUMNS[:4], *metric_columns(metric), TEXT_COLUMNS[4])


def summary_rows(children: list[dict[str, Any]], metric: str = METRIC_COLUMNS[0]) -> list[dict[str, str]]:
    """One row per child run, in job order, with the metrics a reader compares and the one the sweep ranks by."""

    def job_number(run: dict[str, Any]) -> int:
        return int(run["tags"].get("sweep_job", "0"))

    rows = []
    for run in sorted(children, key=job_number):
        metrics = run["metrics"]
        row = {
            "job": str(job_number(run)),
            "run_id": run["run_id"],
            "status": run["status"],
            "overrides": run["tags"].get("sweep_overrides", ""),
            "failure_reason": run["tags"].get("failure_reason", ""),
        }
        for name in metric_columns(metric):
            row[name] = repr(float(metrics[name])) if name in metrics else ""  # in full: the ranking reads it; the markdown rounds
        rows.append(row)
    return rows


def best_row(rows: list[dict[str, str]], metric: str, mode: str) -> dict[str, str] | None:
    """The FINISHED row with the best `metric` (`mode` max or min), or None when no finished row has it."""
    candidates = [row for row in rows if row["status"] == "FINISHED" and row.get(metric) and not math.isnan(float(row[metric]))]
    if not candidates:
        return None
    pick = max if mode == "max" else min
    return pick(candidates, key=lambda row: float(row[metric]))


def unranked_error(rows: list[dict[str, str]], children: list[dict[str, Any]], metric: str) -> str | None:
    """Why jobs finished but none could be ranked (`metric` logged by none of them, or only as NaN), else None."""
    finished = [run for run in children if run["status"] == "FINISHED"]
    if not finished or best_row(rows, metric, "max") is not None:
        return None
    logged = [run for run in finished if metric in run["metrics"]]
    if logged:  # logged, but undefined (NaN) wherever it was, as a one-class subset's ROC AUC is
        return f"sweep.metric {metric!r} is undefined (NaN) in all {len(logged)} finished job(s) that logged it, so none is ranked best"
    known = sorted({name for run in finished for name in run["metrics"]})
    return f"sweep.metric {metric!r} was logged by none of the {len(finished)} finished jobs, so none is ranked best; they log: {', '.join(known)}"


def to_csv(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    """The summary as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    """The summary as a markdown table (pipes in values escaped, line breaks, as in a multi-line failure reason, made spaces)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (_shown(row[column]) if column not in TEXT_COLUMNS else row[column] for column in columns)
        lines.append("| " + " | ".join(" ".join(cell.split()).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _shown(value: str) -> str:
    """A metric cell for reading: 6 decimals (the CSV keeps every digit)."""
    return f"{float(value):.6f}" if value else value


def unlogged_metric_warning(children: list[dict[str, Any]], job: str, metric: str) -> str | None:
    """Why the sweep will rank none of its jobs, when job `job` finished without logging `metric`; else None."""
    finished = [run for run in children if run["tags"].get("sweep_job") == job and run["status"] == "FINISHED"]
    if not finished or metric in finished[0]["metrics"]:
        return None
    logged = ", ".join(sorted(finished[0]["metrics"]))
    return (f"sweep.metric {metric!r} is not among the metrics job {job} logged ({logged}): if it is misspelt, the sweep "
            f"will rank none of its jobs best; the jobs go on and their runs are kept, so stop it with Ctrl-C and rerun with one of those")


def sampler_mismatch(sweeper: str, direction: str, metric: str, mode: str) -> str | None:
    """Why a searching sweeper and the parent run would disagree on the best job, or None.

    Optuna steers its trials by what each job returns, the validation ROC AUC of the evaluated weights,
    which must be maximised; the parent run ranks by sweep.metric and sweep.mode, so they must say the same.
    """
    if "optuna" not in sweeper.lower():
        return None
    if direction != "maximize":
        return f"hydra.sweeper.direction={direction}: each job returns {METRIC_COLUMNS[0]}, higher is better, so Optuna must maximize"
    if (metric, mode) != (METRIC_COLUMNS[0], "max"):
        return (f"hparams_search=optuna maximises {METRIC_COLUMNS[0]} (what each job returns), but sweep.metric={metric} "
                f"sweep.mode={mode} would rank the jobs another way; leave sweep.metric and sweep.mode at their defaults")
    return None


class MlflowSweepCallback(Callback):
    """Hydra callback: a parent MLflow run around every multirun, closed with a summary of its children."""

    def __init__(self, metric: str = METRIC_COLUMNS[0], mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"sweep mode must be max or min, got {mode!r}")
        self.metric, self.mode = metric, mode
        self.parent: str | None = None
        self.metric_checked = False  # whether a finished job has shown if sweep.metric is logged
        self.local_jobs = True  # whether the jobs run on this machine, so stop when the sweep does
        self.previous_handler: Any = None  # SIGTERM's handler before the sweep, restored when it ends
        self.summarising = False  # whether the summary is being written: a SIGTERM then waits for it
        self.held_signal: int | None = None  # a SIGTERM that arrived while the summary was written
        self.failed_or_unranked = False  # whether the summary found failed jobs or no ranking: exit 1

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the parent run and publish its id to the jobs."""
        from forgery import tracking

        sweeper = config.hydra.sweeper
        problem = sampler_mismatch(str(sweeper.get("_target_", "")), str(sweeper.get("direction", "maximize")), self.metric, self.mode)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
        try:  # a dead server or a deleted experiment: one line now, not minutes of MLflow's retries first
            tracking.check_reachable()
            tracking.check_experiment(config.tracking.experiment)
        except tracking.TrackingUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        overrides = list(config.hydra.overrides.task)
        source = Path(__file__).resolve().parent  # the code that trains, not the folder the sweep started in
        tags = {"sweep": "parent", "sweep_dir": str(config.hydra.sweep.dir), "command_line": " ".join(sys.argv), **tracking.git_tags(source)}
        params = {"sweep.overrides": " ".join(overrides), "sweep.metric": self.metric, "sweep.mode": self.mode}
        self.parent = tracking.start_parent_run(config.tracking.experiment, config.tracking.run_name or None, tags, params)
        os.environ[PARENT_ENV] = self.parent
        atexit.register(self._end_if_abandoned)  # Ctrl-C or a crash in the sweeper must not leave it RUNNING
        # Jobs on this machine (in this process or its children) end when the sweeper is stopped; a cluster's do not.
        self.local_jobs = "slurm" not in str(config.hydra.launcher.get("_target_", "")).lower()
        # `kill <pid>` or `docker stop` signals this process only: pass SIGTERM on to parallel jobs (joblib, submitit
        # local), whose processes would otherwise train on under a parent left RUNNING. A job in this process
        # (the basic launcher) holds its own handler while it runs.
        self.previous_handler = interrupts.install(signal.SIGTERM, self._stop)
        log.info("sweep parent run %s in experiment %r", self.parent, config.tracking.experiment)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """After the first job that finishes, warn at once if it did not log sweep.metric, not only once every job has run.

        The parent run's METRIC_CHECKED_TAG records that a job has checked, so that jobs a parallel launcher
        runs elsewhere (each with its own copy of this callback) neither query nor warn again.
        """
        from forgery import tracking

        parent = os.environ.get(PARENT_ENV)
        job = OmegaConf.select(config, "hydra.job.num")
        if self.metric_checked or not parent or job is None or getattr(job_return, "status", None) == JobStatus.FAILED:
            return
        try:
            parent_run = tracking.get_run(parent)
            if parent_run is None or METRIC_CHECKED_TAG in parent_run["tags"]:
                self.metric_checked = True
                return
            experiment_id = parent_run["experiment_id"]
            runs = tracking.search_runs(experiment_id, f"tags.mlflow.parentRunId = '{parent}' and tags.sweep_job = '{job}'")
            if not any(run["status"] == "FINISHED" for run in runs):
                return  # a failed job says nothing about which metrics a run logs
            warning = unlogged_metric_warning(runs, str(job), self.metric)
            self.metric_checked = True
            tracking.set_run_tag(parent, METRIC_CHECKED_TAG, "missing" if warning else "logged")
        except Exception:  # a store that went away is reported, in one line, when the sweep ends
            return
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the children on the parent run, end it, and exit non-zero if any job failed."""
        if self.parent is None:
            return
        # Every job has ended: a SIGTERM or Ctrl-C now waits until the summary is saved (handler first, flag
        # second; restored in the reverse order, so no signal falls between them).
        previous_int = interrupts.install(signal.SIGINT, self._stop)
        status: Any = 0
        try:
            self.summarising = True
            self._summarise(config)
        except SystemExit as stop:  # the store went away: said in one line; a held signal still names the exit
            status = stop.code
        finally:
            if previous_int is not None:
                interrupts.install(signal.SIGINT, previous_int)
            if self.previous_handler is not None:
                interrupts.install(signal.SIGTERM, self.previous_handler)
            self.summarising = False
        if self.held_signal is not None:
            saved = f" after the sweep's summary was saved on parent run {self.parent}" if status == 0 and not self.failed_or_unranked else ""
            print(f"error: stopped by {signal.Signals(self.held_signal).name}{saved}", file=sys.stderr)
            raise SystemExit(128 + self.held_signal)
        if status:
            raise SystemExit(status)
        if self.failed_or_unranked:
            raise SystemExit(1)

    def _summarise(self, config: DictConfig) -> None:
        """Log the summary table, best run and failures on the parent run, end it, and print the table."""
        from forgery import tracking

        try:
            experiment_id = tracking.experiment_id(config.tracking.experiment)
            children = [run for run in tracking.search_runs(experiment_id) if run["tags"].get("mlflow.parentRunId") == self.parent]
        except Exception as error:  # the tracking store went away during the sweep: say so in one line
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"error: could not summarise sweep {self.parent} in MLflow ({reason}); the jobs' outputs are in {config.hydra.sweep.dir}", file=sys.stderr)
            self.parent = None  # nothing more to end at exit: the store is unreachable
            raise SystemExit(1) from None
        rows, columns = summary_rows(children, self.metric), summary_columns(self.metric)
        best = best_row(rows, self.metric, self.mode)
        failed = [row for row in rows if row["status"] != "FINISHED"]
        unranked = unranked_error(rows, children, self.metric)
        metrics = {"children": len(rows), "children_failed": len(failed)}
        tags = {}
        if best is not None:
            metrics[f"best_{self.metric}"] = float(best[self.metric])
            tags = {"best_run_id": best["run_id"], "best_job": best["job"], "best_overrides": best["overrides"]}
        if unranked:
            tags["failure_reason"] = unranked[:5000]  # MLflow's limit on a tag's length
        texts = {"sweep_summary.csv": to_csv(rows, columns), "sweep_summary.md": to_markdown(rows, columns)}
        status = "FINISHED" if best is not None else "FAILED"
        ended = tracking.run_status(self.parent)
        if ended != "RUNNING":  # ended by hand (or a stop) while the jobs ran: its record is not rewritten
            print(to_markdown(rows, columns), end="")
            print(f"error: the sweep's parent run {self.parent} had already ended {ended}; its summary was not written to it", file=sys.stderr)
            self.failed_or_unranked = True
            return
        tracking.finish_parent_run(self.parent, status, metrics, tags, texts)
        os.environ.pop(PARENT_ENV, None)
        print(to_markdown(rows, columns), end="")
        if best is not None:
            log.info("sweep %s: best run %s (job %s, %s = %s)", self.parent, best["run_id"], best["job"], self.metric, best[self.metric])
        if unranked:
            print(f"error: {unranked}; the jobs' runs are kept, see parent run {self.parent}", file=sys.stderr)
        if failed:
            print(f"error: {len(failed)} of {len(rows)} sweep jobs failed; see parent run {self.parent}", file=sys.stderr)
        self.failed_or_unranked = bool(unranked or failed)

    def _stop(self, signum: int, frame: Any) -> None:
        """SIGTERM to the sweeper: pass it on to the jobs' processes, give them a moment to end their runs, exit 128 + it.

        The wait comes before the exit because a worker pool's shutdown (joblib's) kills its workers outright.
        """
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends this process at once
        if self.summarising:  # cut short, the parent run would be left half-summarised and then KILLED at exit
            self.held_signal = signum
            return
        if not (self.local_jobs and interrupts.child_processes(os.getpid())):
            # No job processes here (the basic launcher runs jobs and their MLflow writes in this process, and
            # ending the parent now could wait on the lock of a write the signal cut short): at exit instead.
            interrupts.forward(signum)
            raise SystemExit(128 + signum)
        try:  # this process only waits on its jobs' processes, so it is between writes
            self._end_if_abandoned(signum)
        except Exception as error:  # the store went away: the jobs were still told; exit as the signal asks
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"error: the sweep stopped, but its parent run {self.parent} could not be ended in MLflow ({reason})", file=sys.stderr)
            self.parent = None  # nothing more to try at exit
        raise SystemExit(128 + signum)

    def _running_jobs(self) -> list[dict[str, Any]]:
        """The parent's job runs still RUNNING."""
        from forgery import tracking

        parent = tracking.get_run(str(self.parent))
        query = f"tags.mlflow.parentRunId = '{self.parent}' and attributes.status = 'RUNNING'"
        return tracking.search_runs(parent["experiment_id"], query) if parent else []

    def _wait_for_jobs(self) -> list[dict[str, Any]]:
        """Wait up to JOB_GRACE_SECONDS for the job runs still RUNNING to end; those that did not (a Ctrl-C cuts it short)."""
        deadline = time.monotonic() + JOB_GRACE_SECONDS
        try:
            while (running := self._running_jobs()) and time.monotonic() < deadline:
                time.sleep(0.25)  # a job told to stop is ending its run KILLED itself
        except KeyboardInterrupt:
            running = self._running_jobs()
        return running

    def _end_if_abandoned(self, signum: int | None = None) -> None:
        """At exit, end a parent run the sweep never closed (KILLED), and its local jobs' runs left RUNNING.

        With `signum` (a SIGTERM to the sweeper) the signal is passed on to the jobs' processes once the parent
        has ended, so a job still starting then either gets it or finds the parent ended and does not train.
        """
        from forgery import tracking

        try:
            open_parent = bool(self.parent) and tracking.run_status(str(self.parent)) == "RUNNING"
            if open_parent:
                tracking.end_run_by_id(str(self.parent), "KILLED", "the sweep stopped before it finished")  # first: a second Ctrl-C may follow
        finally:  # passed on even when the store cannot be reached: no job may train on orphaned
            if signum is not None:
                interrupts.forward(signum)
        if not self.parent or not (open_parent or signum is not None):
            return  # ended already, and no stop to see through (at exit after a stop or a summary)
        running = self._running_jobs() if self.local_jobs else []  # a parent ended by hand may still have some
        if running:
            print(f"the sweep stopped: waiting up to {JOB_GRACE_SECONDS:g} s for {len(running)} job run(s) to end", file=sys.stderr, flush=True)
            running = self._wait_for_jobs()
        for run in running:  # killed before it could (a worker pool's shutdown kills its processes)
            tracking.end_run_by_id(run["run_id"], "KILLED", "the sweep stopped before this job finished")
        jobs = f"{len(running)} unfinished job run(s)"
        if open_parent:
            print(f"error: the sweep stopped before it finished; its parent run {self.parent}{' and ' + jobs if running else ''} ended KILLED", file=sys.stderr)
        elif running:
            print(f"error: the sweep stopped before it finished; {jobs} of parent run {self.parent} ended KILLED", file=sys.stderr)
