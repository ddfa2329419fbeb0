"""Shared fixtures: composed Hydra configs and a throwaway MLflow store, so tests never touch the user's."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"
SAMPLE_ROOT = Path(os.environ.get("CIFAKE_SAMPLE", PROJECT_ROOT.parent / "shared" / "cifake-sample"))
# Small demo data keeps composed-config tests fast; the real sizes are exercised end to end.
TINY_DEMO = ["data.train_per_class=40", "data.test_per_class=20"]


@pytest.fixture
def compose_train(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """compose_train(*overrides) -> the training DictConfig, with hydra's runtime fields resolvable."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):

        def _compose(*overrides: str) -> object:
            cfg = compose(config_name="train", overrides=[*overrides, f"hydra.run.dir={tmp_path / 'out'}"], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = str(tmp_path / "out")
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]  # as in a real run: the task sees its own keys, Hydra's live in HydraConfig
            return cfg

        yield _compose


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store in tmp_path, set as the tracking URI; returns the URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def run_forgery(module: str, *arguments: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600, merged: bool = False):
    """Run `python -m forgery.<module> ARGS` in `cwd` with MLflow's default store there; returns CompletedProcess.

    `merged` sends stderr into stdout, so a test can see in which order lines of the two streams came."""
    import subprocess

    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    environment.update({"FORGERY_CACHE_DIR": str(cwd / "cache"), "PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", f"forgery.{module}", *arguments],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
