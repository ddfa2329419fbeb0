"""Per-epoch checkpoints of a run, so an interrupted run resumes from its last completed epoch.

A checkpoint is `last.keras` (weights and optimizer state) plus `state.json`: the completed epoch, the
metric history so far, and the last epoch whose metrics reached MLflow. Both are written to a temporary
name and renamed, so a kill during the write leaves the previous checkpoint whole. `best.keras` is the
best epoch's checkpoint so far, for early stopping's restore.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from forgery import interrupts

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the folder goes unguarded there
    fcntl = None  # type: ignore[assignment]

MODEL_FILE = "last.keras"
STATE_FILE = "state.json"
BEST_FILE = "best.keras"
LOCK_FILE = "run.lock"
DATA_FILE = "data.json"  # what data the run trains on (forgery.data.fingerprint), for a resume to compare

log = logging.getLogger(__name__)


class FolderBusy(Exception):
    """Another live process holds the output folder; `holder` is its process id as it wrote it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@dataclass
class CheckpointState:
    """Where training stands: epochs completed, their metrics, and how many of them were logged."""

    epoch: int = 0
    logged_epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0  # the epoch with the best early-stopping metric so far (0: none yet)
    best_value: float | None = None


def save(folder: Path, model: Any, state: CheckpointState, best: bool = False) -> None:
    """Write the model, with `best` also keep it as the best epoch's, then the state, each atomically.

    One deferred block: a Ctrl-C arriving meanwhile is raised after all three, so a state on disk never
    names a best epoch whose weights were not kept, nor lacks one whose were. Model first: a state never
    points at a missing model.
    """
    folder.mkdir(parents=True, exist_ok=True)
    partial_model = folder / f".{MODEL_FILE}.partial.keras"  # Keras insists on the .keras suffix
    with interrupts.deferred():
        model.save(partial_model)
        os.replace(partial_model, folder / MODEL_FILE)
        if best:
            save_best(folder)
        write_state(folder, state)


def write_state(folder: Path, state: CheckpointState) -> None:
    """Write state.json atomically."""
    partial = folder / f".{STATE_FILE}.partial"
    payload = {"epoch": state.epoch, "logged_epoch": state.logged_epoch, "history": state.history, "best_epoch": state.best_epoch, "best_value": state.best_value}
    partial.write_text(json.dumps(payload, indent=1))
    os.replace(partial, folder / STATE_FILE)


def write_data_record(folder: Path, record: dict[str, Any]) -> None:
    """Write the data record of a new run (its fingerprint, counts and issues) atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{DATA_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1))
    os.replace(partial, folder / DATA_FILE)


def read_data_record(folder: Path) -> dict[str, Any] | None:
    """The data record a run started with, or None where it kept none (a run from before the record)."""
    path = folder / DATA_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DamagedCheckpoint(f"{path} cannot be read ({type(error).__name__})") from None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        raise DamagedCheckpoint(f"{path} holds no data fingerprint")
    return record


class DamagedCheckpoint(Exception):
    """A checkpoint's state file exists but cannot be read; the message is one line."""


def load_state(folder: Path) -> CheckpointState | None:
    """The saved state, or None when there is no complete checkpoint in `folder`; DamagedCheckpoint when unreadable."""
    state_path, model_path = folder / STATE_FILE, folder / MODEL_FILE
    if not state_path.is_file() or not model_path.is_file():
        return None
    try:  # written atomically, so damage means something else touched it
        payload = json.loads(state_path.read_text())
        return CheckpointState(
            epoch=int(payload["epoch"]),
            logged_epoch=int(payload["logged_epoch"]),
            history=dict(payload["history"]),
            best_epoch=int(payload.get("best_epoch", 0)),
            best_value=payload.get("best_value"),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise DamagedCheckpoint(f"{state_path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def save_best(folder: Path) -> None:
    """Keep the checkpoint `save` just wrote as the best epoch's, for early stopping's restore (atomically).

    A hard link, not a second write: the next `save` replaces last.keras's name, not the file the link
    holds. Where the file system has no hard links, a copy.
    """
    partial = folder / f".{BEST_FILE}.partial"
    partial.unlink(missing_ok=True)
    with interrupts.deferred():
        try:
            os.link(folder / MODEL_FILE, partial)
        except OSError:
            shutil.copyfile(folder / MODEL_FILE, partial)
        os.replace(partial, folder / BEST_FILE)


def restore_best(folder: Path, model: Any) -> None:
    """Load the best epoch's weights into `model`."""
    model.load_weights(folder / BEST_FILE)


def load_model(folder: Path) -> Any:
    """The checkpointed model, compiled as it was, loaded in Keras safe mode (no code from the file runs)."""
    from forgery import models

    return models.load(folder / MODEL_FILE)


def holder(folder: Path) -> str | None:
    """The process id written in `folder`'s lock while a live process holds it (see claim), or None when none does."""
    path = folder / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        except OSError:  # a file system without locks: no process can be seen holding it
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def claim(folder: Path) -> IO[str]:
    """Hold `folder` for this process until the returned file is closed, or FolderBusy if another process holds it.

    Two processes training into one folder would interleave checkpoints and log every epoch twice into
    one MLflow run. The lock is the kernel's (flock), so it ends with its process however that ends: a
    run killed outright (kill -9, out of memory) leaves its folder free to resume.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderBusy(holder) from None
    except OSError as error:  # a file system without locks (NFS with nolock, Lustre without flock): train unguarded
        log.warning("cannot lock %s (%s); nothing stops a second process from training into this folder", folder / LOCK_FILE, error.strerror or error)
        return handle
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
