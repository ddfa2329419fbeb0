"""The one door to MLflow: runs with a guaranteed end status, params, metrics, artefacts and the model.

The tracking URI is MLflow's own choice: `MLFLOW_TRACKING_URI` when set, else MLflow's default
(`sqlite:///mlflow.db` with artefacts under `./mlruns`), so `mlflow ui` in the same folder shows the run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from forgery import interrupts

# MLflow refuses longer param values; longer ones are cut with a marker rather than failing the run.
_MAX_PARAM_LENGTH = 6000


# A run's tracking calls are appended here (in its output folder) before they are sent, so a run that
# loses its tracking server can be uploaded later with `python -m forgery.upload <output folder>`.
JOURNAL_FILE = "tracking_journal.jsonl"
FAILURE_TAG = "failure_reason"  # why a run ended FAILED or KILLED; only such runs have it
JOURNALLED_NOTE = "the whole run is journalled"  # in the failure_reason of a run whose store copy is incomplete
UPLOADED_AS_TAG = "uploaded_as"  # on an incomplete original: the run forgery.upload made of its journal
UPLOAD_COMPLETE_TAG = "upload_complete"  # on a run forgery.upload replayed to the end; a partial replay lacks it
SUPERSEDED_TAG = "superseded_by"  # on a partial upload: the complete one a later upload made
SENDABLE = ("params", "metrics", "folder", "model")  # the journal's kinds that are tracking calls
# MLflow's HTTP defaults (7 retries, doubling back-off, 120 s timeout) would stall a run for minutes per
# call once a server is gone; these apply unless the user set their own.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackingUnavailable(Exception):
    """The tracking store cannot be reached before a run starts; the message is one line."""


class TrackingLost(Exception):
    """A run finished offline after an MLflow call failed; the message says where its outputs are and how to upload them.

    `score` is the finished run's own score (its evaluated validation AUC): only the store's copy is incomplete,
    so a sweeper still ranks the job by what it reached.
    """

    def __init__(self, message: str, score: float) -> None:
        super().__init__(message)
        self.score = score


def check_reachable(timeout: float = 5.0) -> None:
    """Raise TrackingUnavailable when the tracking URI is a server that does not answer its health check."""
    import urllib.error
    import urllib.request

    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = tracking_uri()
    problem = file_store_problem(uri)
    if problem:
        raise TrackingUnavailable(problem)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = str(getattr(error, "reason", error))
    raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable ({problem}); start it, or unset MLFLOW_TRACKING_URI to use ./mlflow.db")


def file_store_problem(uri: str) -> str | None:
    """Why MLflow will refuse `uri` as a file store (./mlruns), or None: MLflow 3 raises a page-long exception on first use."""
    from urllib.parse import urlparse

    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    if urlparse(uri).scheme not in ("", "file") or uri.startswith("databricks"):  # "databricks" alone has no scheme
        return None
    try:
        if MLFLOW_ALLOW_FILE_STORE.get():
            return None
    except ValueError:  # a value MLflow cannot read as true or false: MLflow refuses the store too
        pass
    return (
        f"MLflow {mlflow.__version__} refuses the file store {uri} (its filesystem backend is in maintenance mode): "
        "use the default SQLite store (unset MLFLOW_TRACKING_URI, or set it to sqlite:///mlflow.db; "
        "`mlflow migrate-filestore` moves existing runs), or set MLFLOW_ALLOW_FILE_STORE=true to keep it"
    )


class Tracker:
    """One run's tracking calls: journalled to disk first, then sent to MLflow until a call fails.

    After the first failed call (a lost server, or a store that refuses a call) the run goes on offline:
    nothing more is sent, everything is still journalled, and `lost` says why, so the caller can print
    how to upload the run later. The store's copy of the run, which misses what came after, is ended
    FAILED if the store still answers, so it never passes for a complete run.
    """

    def __init__(self, journal: Path | None) -> None:
        self.journal = journal
        self.lost: str | None = None
        self.reopened = False  # a resumed run: an earlier attempt may have left a failure_reason

    @contextmanager
    def run(self, experiment: str, run_name: str | None, tags: Mapping[str, str], run_id: str | None = None) -> Iterator[str]:
        """Start a run (or reopen `run_id`) and yield its id; end it FINISHED, KILLED (Ctrl-C) or FAILED (any other error)."""
        ensure_experiment(experiment)
        mlflow.set_experiment(experiment)
        if run_id is None and run_name is None:
            run_name = _fresh_run_name()
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags))
        # From here on every failure ends the run here (MLflow's exit hook would end it FINISHED, however
        # little it holds), and this attempt's start is journalled before anything is sent: a call that
        # fails below is then journalled after it, as one this attempt missed, so the next one re-sends it.
        try:
            missed = self._missed_by_store() if run_id is not None else []
            self._record("start", experiment=experiment, run_name=run.info.run_name, run_id=run.info.run_id, tags=dict(tags), tracking_uri=tracking_uri())
            self.reopened = run_id is not None
            if run_id is not None:
                self._send(lambda: take_back_upload(run_id))
            if missed:
                self._resend(missed)
            yield run.info.run_id
        except KeyboardInterrupt:
            self._end("KILLED", "interrupted (KeyboardInterrupt)")
            raise
        except BaseException as error:
            self._end("FAILED", f"{type(error).__name__}: {error}"[:5000])
            raise
        self._end("FINISHED", None)

    def params(self, params: Mapping[str, str]) -> None:
        """Log params to the active run."""
        self._record("params", params=dict(params))
        self._send(lambda: mlflow.log_params(dict(params)))

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics to the active run, at `step` when given."""
        values = {name: float(value) for name, value in metrics.items()}
        self._record("metrics", metrics=values, step=step)
        self._send(lambda: mlflow.log_metrics(values, step=step))

    def folder(self, folder: Path, artifact_path: str) -> None:
        """Upload every file under `folder` as artefacts under `artifact_path`."""
        # The files are listed, so an upload can tell that one inside the folder has gone since.
        files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
        self._record("folder", folder=self._journal_path(folder), artifact_path=artifact_path, files=files)
        self._send(lambda: mlflow.log_artifacts(str(folder), artifact_path=artifact_path))

    def model(self, model: Any, saved_at: Path, example_input: np.ndarray, example_output: np.ndarray) -> None:
        """Log the Keras model (also saved at `saved_at`, which the journal points to)."""
        self._record("model", path=self._journal_path(saved_at), example_input=example_input.tolist(), example_output=example_output.tolist())
        self._send(lambda: log_keras_model(model, example_input, example_output))

    def _end(self, status: str, reason: str | None) -> None:
        """Record and send the run's end; offline, the journal's run is left for `forgery.upload` to finish."""
        self._record("end", status=status, reason=reason)
        if self.lost is not None:
            self._end_incomplete()
            return

        def end() -> None:
            if reason:
                mlflow.set_tag(FAILURE_TAG, reason)
            elif self.reopened and FAILURE_TAG in mlflow.active_run().data.tags:
                mlflow.delete_tag(FAILURE_TAG)  # the earlier attempt's reason; the run has now finished
            mlflow.end_run(status)

        self._send(end)

    def _journal_path(self, path: Path) -> str:
        """`path` as the journal records it: relative to the journal's folder when inside it, so the folder can move."""
        resolved = path.resolve()
        if self.journal is not None and resolved.is_relative_to(self.journal.parent.resolve()):
            return str(resolved.relative_to(self.journal.parent.resolve()))
        return str(resolved)

    def _record(self, kind: str, **payload: Any) -> None:
        """Append one journal line (flushed at once: the process may be killed next)."""
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with interrupts.deferred(), self.journal.open("a") as handle:
            handle.write(json.dumps({"kind": kind, **payload}) + "\n")

    def _missed_by_store(self) -> list[dict[str, Any]]:
        """The calls an earlier attempt of this run journalled while offline, which the store never got."""
        if self.journal is None or not self.journal.exists():
            return []
        try:
            entries, _ = read_journal(self.journal)
        except JournalDamaged as error:
            logging.getLogger(__name__).warning("%s; what an earlier attempt logged offline is not sent again", error)
            return []
        return missed_by_store(entries)

    def _resend(self, entries: list[dict[str, Any]]) -> None:
        """Send a resumed run's missed calls first, so the run it finishes is whole in the store."""
        for entry in entries:
            self._send(lambda entry=entry: send_entry(entry, entry_path(entry, self.journal.parent)))
        if self.lost is None:
            self._record("resent", count=len(entries))
            logging.getLogger(__name__).info("sent the %d tracking calls an earlier attempt journalled offline", len(entries))

    def _end_incomplete(self) -> None:
        """End the store's copy of an offline run FAILED, saying where the whole run is; best effort.

        Left open, MLflow's exit hook would end it FINISHED, and a run missing its later metrics,
        artefacts or model would pass for complete (forgery.promote picks among FINISHED runs).
        """
        folder = self.journal.parent if self.journal is not None else "its output folder"
        reason = f"an MLflow call failed mid-run ({self.lost}); {JOURNALLED_NOTE}: python -m forgery.upload {folder}"
        try:
            with interrupts.deferred():
                mlflow.set_tag("failure_reason", reason[:5000])
                mlflow.end_run("FAILED")
        except Exception as error:  # the server is gone: its copy stays RUNNING, the journal has the run
            logging.getLogger(__name__).warning("could not mark the incomplete run FAILED either (%s)", _first_line(error))

    def _send(self, action: Any) -> None:
        """Run one MLflow call unless one already failed; the first failure switches to offline."""
        if self.lost is not None:
            return
        try:
            with interrupts.deferred():  # Ctrl-C mid-write would leave the store's transaction open
                action()
        except Exception as error:  # a lost server or a refused call: the work must not be lost over it
            self.lost = _first_line(error)
            self._record("offline", reason=self.lost)  # the call journalled just before never reached the store, nor will those after
            logging.getLogger(__name__).warning("an MLflow call failed (%s); the run goes on offline, journalled in %s", self.lost, self.journal)


def _first_line(error: Exception) -> str:
    """`Type: first line of the message`, at most 300 characters: MLflow's messages run to pages."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]


def ensure_experiment(experiment: str) -> str:
    """The experiment's id, creating the store's tables and the experiment first if needed.

    Two runs started at once in one folder would otherwise race: both migrate a new SQLite database
    (one fails inside alembic) or both create the experiment (one fails). A file lock beside the
    database makes the first do it and the second find it done.
    """
    from mlflow.exceptions import MlflowException

    with _store_lock():
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingUnavailable(_deleted_experiment(experiment, str(found.experiment_id)))
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(experiment))
        except MlflowException as error:  # a server shared with other machines: someone else was first
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return str(client.get_experiment_by_name(experiment).experiment_id)


@contextmanager
def _store_lock() -> Iterator[None]:
    """An exclusive lock on `<database>.lock` for a local SQLite store; nothing for other stores."""
    import fcntl

    uri = tracking_uri()
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class JournalDamaged(Exception):
    """A journal line in the middle that is not JSON: what follows it cannot be trusted."""


def read_journal(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The journal's entries, and a warning when its last line was cut off mid-write (then left out).

    The process can be killed while it appends a line; the lines before are whole, so the run is
    uploaded without that call (its end then reads as FAILED: the journal ends before the run did).
    Raises JournalDamaged, naming the line, for damage anywhere else.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    entries: list[dict[str, Any]] = []
    warning = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                warning = f"the journal's last line ({number}) was cut off mid-write; that call is left out"
                break
            raise JournalDamaged(f"the journal {path} is damaged at line {number}") from None
        if not isinstance(entry, dict):
            raise JournalDamaged(f"the journal {path} is damaged at line {number}")
        entries.append(entry)
    return entries, warning


def last_attempt_end(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `end` entry of the journal's last attempt, or None when it left none (killed outright, or still going).

    An earlier attempt's end (KILLED, say) does not say how a later one ended.
    """
    starts = [index for index, entry in enumerate(entries) if entry.get("kind") == "start"]
    ends = [entry for entry in entries[starts[-1] if starts else 0 :] if entry.get("kind") == "end"]
    return ends[-1] if ends else None


def missed_by_store(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tracking calls earlier attempts journalled that never reached the store, in order.

    An `offline` entry follows the call that failed; from it to that attempt's end nothing was sent.
    A `resent` entry says a resumed attempt sent all of them.
    """
    missed: list[dict[str, Any]] = []
    offline = False
    for index, entry in enumerate(entries):
        kind = entry.get("kind")
        if kind == "offline":
            offline = True
            if index and entries[index - 1].get("kind") in SENDABLE:
                missed.append(entries[index - 1])
        elif kind == "start":
            offline = False
        elif kind == "resent":
            missed = []
        elif offline and kind in SENDABLE:
            missed.append(entry)
    return missed


def entry_path(entry: dict[str, Any], origin: Path) -> Path | None:
    """Where a folder or model entry's file is, its relative path read from `origin`; None for other entries."""
    if entry.get("kind") == "folder":
        return origin / entry["folder"]  # an absolute path stays as it is
    if entry.get("kind") == "model":
        return origin / entry["path"]
    return None


def journalled_files(entries: list[dict[str, Any]], origin: Path) -> dict[int, Path]:
    """Where each folder or model entry's file is now (keyed by entry index), relative paths read from `origin`.

    Raises FileNotFoundError naming the first one that is gone (or a file a folder held), before anything is sent.
    """
    found: dict[int, Path] = {}
    for index, entry in enumerate(entries):
        path = entry_path(entry, origin)
        if path is None:
            continue
        if not path.exists():
            raise FileNotFoundError(f"the journal's {entry['kind']} {path} is gone; upload from the folder the run wrote")
        gone = [name for name in entry.get("files", []) if not (path / name).is_file()]  # a journal from before the list has none
        if gone:
            raise FileNotFoundError(f"{len(gone)} file(s) of the journal's folder {path} are gone, first {path / gone[0]}; upload from the folder the run wrote")
        found[index] = path
    return found


def send_entry(entry: dict[str, Any], path: Path | None) -> None:
    """Send one journalled call to the active run (`path`: its folder or model file, see entry_path)."""
    from forgery import models

    if entry["kind"] == "params":
        mlflow.log_params(entry["params"])
    elif entry["kind"] == "metrics":
        mlflow.log_metrics(entry["metrics"], step=entry["step"])
    elif entry["kind"] == "folder":
        mlflow.log_artifacts(str(path), artifact_path=entry["artifact_path"])
    elif entry["kind"] == "model":
        model = models.load(path)
        log_keras_model(model, np.asarray(entry["example_input"], dtype="uint8"), np.asarray(entry["example_output"], dtype="float32"))


def replay_journal(entries: list[dict[str, Any]], origin: Path) -> str:
    """Send a journalled run to the tracking store as a new FINISHED (or its recorded end) run; return its id.

    Only a replay that got to its end is tagged `upload_complete`: one that fails part-way does not count
    as an upload, so the command can be run again. It is ended FAILED if the store still answers, else a
    later upload that completes ends it (see supersede_partial_uploads). The error raised is the call that
    failed, not the failure to end the run that follows it when the server is gone.
    """
    files = journalled_files(entries, origin)
    start = next(entry for entry in entries if entry["kind"] == "start")
    end = last_attempt_end(entries) or {"status": "FAILED", "reason": "the journal ends before the run did"}
    mlflow.set_experiment(start["experiment"])
    tags = {**start["tags"], "uploaded_from": str(origin), "original_run_id": start["run_id"]}
    run = mlflow.start_run(run_name=start["run_name"], tags=tags)
    try:
        for index, entry in enumerate(entries):
            if entry["kind"] in SENDABLE:
                send_entry(entry, files.get(index))
        if end.get("reason"):
            mlflow.set_tag("failure_reason", end["reason"])
        mlflow.set_tag(UPLOAD_COMPLETE_TAG, "true")
        mlflow.end_run(end["status"])
    except BaseException:
        try:
            mlflow.end_run("FAILED")
        except Exception:  # the server is gone (MLflow forgets the run all the same): the copy stays RUNNING until an upload completes
            pass
        raise
    return str(run.info.run_id)


def supersede_partial_uploads(experiment: str, original_run_id: str, uploaded_run_id: str) -> int:
    """End FAILED, and point to the complete upload, every earlier partial upload of `original_run_id`; how many."""
    found = experiment_id(experiment)
    partial = [
        run
        for run in (search_runs(found) if found else [])
        if run["tags"].get("original_run_id") == original_run_id and run["run_id"] != uploaded_run_id and SUPERSEDED_TAG not in run["tags"]
        and not (run["tags"].get(UPLOAD_COMPLETE_TAG) == "true" and run["status"] != "RUNNING")
    ]
    client = mlflow.MlflowClient()
    for run in partial:
        client.set_tag(run["run_id"], SUPERSEDED_TAG, uploaded_run_id)
        if run["status"] == "RUNNING":  # its upload lost the server before it could end it
            end_run_by_id(run["run_id"], "FAILED", f"a partial upload; the complete one is run {uploaded_run_id}")
    return len(partial)


def take_back_upload(run_id: str) -> str | None:
    """A resumed run finishes the work itself: the upload of its earlier journal, if any, is superseded by it.

    Without this a resumed run that was uploaded while interrupted ended FINISHED beside its partial upload,
    still tagged `uploaded_as` (so "incomplete") and its upload still blocking a later one. Returns the
    upload's id.
    """
    original = get_run(run_id)
    uploaded = original["tags"].get(UPLOADED_AS_TAG) if original else None
    if uploaded is None:
        return None
    client = mlflow.MlflowClient()
    if get_run(uploaded) is not None:  # a deleted upload needs no pointer
        client.set_tag(uploaded, SUPERSEDED_TAG, run_id)
    client.delete_tag(run_id, UPLOADED_AS_TAG)
    return str(uploaded)


def complete_in_store(run: dict[str, Any]) -> bool:
    """Whether the store holds `run` whole: it ended, and not as the incomplete copy of a run that went offline."""
    return run["status"] != "RUNNING" and JOURNALLED_NOTE not in run["tags"].get(FAILURE_TAG, "") and UPLOADED_AS_TAG not in run["tags"]


def uploads_of(experiment: str, original_run_id: str) -> list[str]:
    """Ids of the runs `forgery.upload` already made, to the end, from the journal of `original_run_id`."""
    found = experiment_id(experiment)
    runs = search_runs(found) if found else []
    # The tag goes on just before the run ends: a copy still RUNNING lost the server in between and is no upload.
    return [
        run["run_id"]
        for run in runs
        if run["tags"].get("original_run_id") == original_run_id and run["tags"].get(UPLOAD_COMPLETE_TAG) == "true" and run["status"] != "RUNNING"
        and SUPERSEDED_TAG not in run["tags"]  # one left RUNNING, ended by the upload that completed
    ]


def mark_uploaded(original_run_id: str, uploaded_run_id: str) -> None:
    """Point the incomplete original run at its full upload, ending it FAILED if it was left open."""
    original = get_run(original_run_id)
    if original is None:  # uploaded to another store, or deleted: nothing to point from
        return
    client = mlflow.MlflowClient()
    client.set_tag(original_run_id, UPLOADED_AS_TAG, uploaded_run_id)
    if original["status"] == "RUNNING":
        end_run_by_id(original_run_id, "FAILED", f"incomplete: the tracking store was lost mid-run; the whole run is {uploaded_run_id}")


def tracking_uri() -> str:
    """Where runs are recorded (MLFLOW_TRACKING_URI or MLflow's default)."""
    return str(mlflow.get_tracking_uri())


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'optimizer.lr': '0.0001', ...}, one MLflow param per leaf."""
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            params.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = str(value)
            params[name] = text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."
    return params


def log_keras_model(model: Any, example_input: np.ndarray, example_output: np.ndarray) -> None:
    """Log the model in MLflow's Keras flavour (loadable with mlflow.keras.load_model and as pyfunc)."""
    import keras
    from mlflow.models import infer_signature

    backend = keras.backend.backend()
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    mlflow.keras.log_model(
        model,
        name="model",
        signature=infer_signature(example_input, example_output),
        # Stated, not inferred: inference reloads the model in a subprocess and costs seconds per run.
        pip_requirements=[f"keras=={keras.__version__}", f"{backend_package}=={_version(backend_package)}"],
    )


def git_tags(folder: Path) -> dict[str, str]:
    """Commit and dirty flag of the git checkout holding `folder`, or {} outside one."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_commit": commit, "git_dirty": str(dirty).lower()}


def _fresh_run_name() -> str:
    """MLflow's adjective-animal-number name, drawn without touching the training's seeded `random` state.

    MLflow draws names from Python's global `random`, which the run has just seeded: left alone, every
    run with the same seed would get the same name.
    """
    import random

    from mlflow.utils.name_utils import _generate_random_name

    state = random.getstate()
    random.seed()  # from the OS's entropy
    try:
        return _generate_random_name()
    finally:
        random.setstate(state)


def _version(package: str) -> str:
    """Installed version of a package."""
    from importlib.metadata import version

    return version(package)


# --- Queries and registry calls for promotion (forgery.promote). Runs come back as plain dicts with keys
# run_id, run_name, experiment_id, status, start_time, metrics and tags, so callers never see MLflow types.


def store_exists() -> bool:
    """Whether the tracking store is already there; MLflow would silently create an empty one on first use."""
    from urllib.parse import urlparse

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        location = uri.removeprefix("sqlite:///")
    elif uri.startswith("file:"):
        location = urlparse(uri).path
    elif "://" not in uri:
        location = uri
    else:
        return True  # a tracking server: only it knows
    return location == ":memory:" or Path(location).exists()


def check_experiment(name: str, other: str = "choose another tracking.experiment") -> None:
    """Raise TrackingUnavailable when the store holds `name` as a deleted experiment (MLflow logs to none
    such, and would say so only after the data had loaded); looks only at a store that already exists.
    `other` ends the message: how this command names another experiment."""
    if not store_exists():
        return
    found = mlflow.MlflowClient().get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise TrackingUnavailable(_deleted_experiment(name, str(found.experiment_id), other))


def _deleted_experiment(name: str, experiment_id: str, other: str = "choose another tracking.experiment") -> str:
    """The one-line refusal for a run into a deleted experiment."""
    return f"experiment {name!r} is deleted in {tracking_uri()}: restore it (mlflow experiments restore --experiment-id {experiment_id}) or {other}"


def deleted_run(run_id: str, other: str) -> str | None:
    """Why `run_id` is not active when it is only deleted (itself or with its experiment), with how to restore it; else None.
    `other` ends the message: what else the command can do."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None  # no such run at all
    if run.info.lifecycle_stage != "deleted":
        return None
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage == "deleted":
        return f"run {run_id} was deleted with its experiment {experiment.name!r} in {tracking_uri()}: restore that (mlflow experiments restore --experiment-id {experiment.experiment_id}) or {other}"
    return f"run {run_id} is deleted in {tracking_uri()}: restore it (mlflow runs restore --run-id {run_id}) or {other}"


def experiment_id(name: str) -> str | None:
    """Id of the active experiment called `name`, or None when there is none (deleted counts as none)."""
    experiment = mlflow.MlflowClient().get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    return str(experiment.experiment_id)


def experiment_name(experiment_id: str) -> str:
    """Name of the experiment with this id."""
    return str(mlflow.MlflowClient().get_experiment(experiment_id).name)


def search_runs(experiment_id: str, filter_string: str = "") -> list[dict[str, Any]]:
    """Every active run of an experiment (those matching MLflow's `filter_string`), whatever its status, page by page."""
    client = mlflow.MlflowClient()
    runs: list[dict[str, Any]] = []
    page_token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=page_token)
        runs.extend(_run_summary(run) for run in page)
        page_token = page.token
        if not page_token:
            return runs


def get_run(run_id: str) -> dict[str, Any] | None:
    """One run by id, or None when no active run has that id (a malformed id included)."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return _run_summary(run) if run.info.lifecycle_stage == "active" else None


def artifact_names(run_id: str, folder: str) -> list[str]:
    """Names of the artefacts directly in a run's `folder`; sub-folders end in '/' so a caller can refuse them."""
    prefix = f"{folder}/"
    return [
        info.path.removeprefix(prefix) + ("/" if info.is_dir else "")
        for info in mlflow.MlflowClient().list_artifacts(run_id, folder)
    ]


def download_artifact(run_id: str, artifact_path: str, folder: Path) -> Path:
    """Download one artefact of a run under `folder` and return its local path; MLflow errors become RuntimeError."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(folder)))
    except MlflowException as error:
        raise RuntimeError(f"could not download {artifact_path} of run {run_id}: {error.message}") from error


def has_model(run_id: str) -> bool:
    """Whether a run logged a model named `model`: as an MLflow 3 LoggedModel, or as MLflow 2 artefacts (model/MLmodel).

    MLflow errors (a server too old to list logged models) become RuntimeError."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
        if any(info.path == "model/MLmodel" for info in client.list_artifacts(run_id, "model")):
            return True
        # As mlflow.register_model looks a runs:/ URI up: by name, then by source run (not every store filters by it).
        page_token = None
        while True:
            page = client.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string="name = 'model'", page_token=page_token)
            if any(model.source_run_id == run_id for model in page):
                return True
            page_token = page.token
            if not page_token:
                return False
    except MlflowException as error:
        raise RuntimeError(_first_line(error)) from error


class _LoggedModelNotice(logging.Filter):
    """Drops MLflow's warning that a run has no `model` artefacts: MLflow 3 keeps a run's model as a LoggedModel,
    so registering `runs:/<id>/model` always takes that path and works, though the warning reads like a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Run with id ") and "has no artifacts at artifact path 'model', registering model based on models:/" in message)


_REGISTRY_LOGGER = "mlflow.tracking._model_registry.fluent"  # where mlflow.register_model logs that warning


def register_model(run_id: str, model_name: str, alias: str) -> str:
    """Register `runs:/<run_id>/model` as a new version of `model_name`, point `alias` at it, return the version."""
    from mlflow.exceptions import MlflowException

    registry_log = logging.getLogger(_REGISTRY_LOGGER)
    if not any(isinstance(known, _LoggedModelNotice) for known in registry_log.filters):
        registry_log.addFilter(_LoggedModelNotice())
    try:
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name)
        mlflow.MlflowClient().set_registered_model_alias(model_name, alias, version.version)
    except MlflowException as error:
        raise RuntimeError(f"could not register the model of run {run_id}: {error.message}") from error
    return str(version.version)


def point_alias(model_name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version` of a registered model, or remove the alias when `version` is None."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if version is None:
            client.delete_registered_model_alias(model_name, alias)
        else:
            client.set_registered_model_alias(model_name, alias, version)
    except MlflowException as error:
        raise RuntimeError(_first_line(error)) from error


def model_version_by_alias(model_name: str, alias: str) -> dict[str, str] | None:
    """The registered version an alias points at ({'version', 'run_id'}), or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return {"version": str(version.version), "run_id": str(version.run_id)}


def _run_summary(run: Any) -> dict[str, Any]:
    """A run as plain values: what promotion compares and records, and distillation checks a teacher by."""
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": str(run.info.experiment_id),
        "status": run.info.status,
        "start_time": run.info.start_time or 0,
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
        "params": dict(run.data.params),
    }


# --- Sweeps (forgery.sweep): a parent run made through the client, so each job can still open its own
# run with the fluent API in the same process without nesting.


def start_parent_run(experiment: str, run_name: str | None, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """Create a RUNNING run that is not the active one (jobs open their own runs meanwhile); return its id."""
    client = mlflow.MlflowClient()
    run = client.create_run(ensure_experiment(experiment), run_name=run_name, tags=dict(tags))
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return str(run.info.run_id)


def finish_parent_run(
    run_id: str, status: str, metrics: Mapping[str, float], tags: Mapping[str, str], texts: Mapping[str, str]
) -> None:
    """Log the sweep's summary (metrics, tags, text artefacts by file name) on its parent run and end it."""
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for file_name, text in texts.items():
        client.log_text(run_id, text, file_name)
    client.set_terminated(run_id, status)


def set_run_tag(run_id: str, key: str, value: str) -> None:
    """Tag a run that is not this process's active run (a sweep's parent, from a job)."""
    mlflow.MlflowClient().set_tag(run_id, key, value)


def run_status(run_id: str) -> str | None:
    """A run's status (RUNNING, FINISHED, ...), or None when there is no such run."""
    run = get_run(run_id)
    return None if run is None else str(run["status"])


def end_run_by_id(run_id: str, status: str, reason: str | None = None) -> None:
    """End a run that is not the active one, with a failure reason tag when given.

    Against a server MLflow prints "View run ... at: <link>" for every run it ends; these are runs ended on
    the side (an uploaded run's incomplete original, a killed sweep's jobs), so their links are held back and
    the command's own run keeps the only one.
    """
    client = mlflow.MlflowClient()
    if reason:
        client.set_tag(run_id, "failure_reason", reason[:5000])
    with redirect_stdout(io.StringIO()):
        client.set_terminated(run_id, status)


def record_failed_run(experiment: str, run_name: str | None, tags: Mapping[str, str], reason: str) -> str:
    """A FAILED run for a job that failed before it could open its own, so the failure is visible in MLflow."""
    run_id = start_parent_run(experiment, run_name, {**tags, "failure_reason": reason[:5000]}, {})
    mlflow.MlflowClient().set_terminated(run_id, "FAILED")
    return run_id


# --- Loading a run's model for prediction (forgery.predict); its metrics come from get_run above.


def load_run_model(run_id: str) -> Any:
    """The Keras model logged as `runs:/<run_id>/model`, loaded in Keras's safe mode; MLflow errors become RuntimeError."""
    from mlflow.exceptions import MlflowException

    from forgery import models

    # MLflow's download progress bars would bury the lines a caller watches for on stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        # safe_mode=True is Keras's default too; stated so a saved lambda can never run code on load.
        # A run's model has no augmentation layers (models.inference_graph) but may hold forgery's LogSpectrum.
        return mlflow.keras.load_model(f"runs:/{run_id}/model", custom_objects=models.layer_objects(), load_model_kwargs={"safe_mode": True})
    except MlflowException as error:
        raise RuntimeError(f"run {run_id} has no loadable model: {error.message}") from error
