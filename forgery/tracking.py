"""The one door to MLflow: runs with a guaranteed end status, params, metrics, artefacts and the model.

The tracking URI is MLflow's own choice: `MLFLOW_TRACKING_URI` when set, else MLflow's default
(`sqlite:///mlflow.db` with artefacts under `./mlruns`), so `mlflow ui` in the same folder shows the run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

# MLflow refuses longer param values; longer ones are cut with a marker rather than failing the run.
_MAX_PARAM_LENGTH = 6000


@contextmanager
def tracked_run(experiment: str, run_name: str | None, tags: Mapping[str, str]) -> Iterator[str]:
    """Start a run and yield its id; end it FINISHED, KILLED (Ctrl-C) or FAILED (any other error)."""
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name, tags=dict(tags))
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        mlflow.set_tag("failure_reason", "interrupted (KeyboardInterrupt)")
        mlflow.end_run("KILLED")
        raise
    except BaseException as error:
        mlflow.set_tag("failure_reason", f"{type(error).__name__}: {error}"[:5000])
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


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


def log_params(params: Mapping[str, str]) -> None:
    """Log params to the active run."""
    mlflow.log_params(dict(params))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics to the active run, at `step` when given."""
    mlflow.log_metrics({name: float(value) for name, value in metrics.items()}, step=step)


def set_tags(tags: Mapping[str, str]) -> None:
    """Set tags on the active run."""
    mlflow.set_tags(dict(tags))


def log_folder(folder: Path, artifact_path: str) -> None:
    """Upload every file under `folder` as artefacts under `artifact_path`."""
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


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


def _version(package: str) -> str:
    """Installed version of a package."""
    from importlib.metadata import version

    return version(package)
