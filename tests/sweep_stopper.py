"""A Hydra callback for tests: a sweep stopped just as a job starts, its parent run already ended KILLED."""

from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class EndParentAtJobStart(Callback):
    """End the sweep's parent run KILLED when a job starts, as a stopped sweeper does before its jobs train."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from forgery import sweep, tracking

        tracking.end_run_by_id(os.environ[sweep.PARENT_ENV], "KILLED", "the sweep stopped before it finished")
