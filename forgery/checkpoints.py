"""Per-epoch checkpoints of a run, so an interrupted run resumes from its last completed epoch.

A checkpoint is `state.json` (the completed epoch, the metric history so far, the last epoch whose
metrics reached MLflow) and the model files it names: `epoch-NNNN.keras` (weights and optimizer state) of
the latest epoch and of the best one so far, for early stopping's restore. An epoch's model is written
under a new name first and state.json replaced after it (each to a temporary name, then renamed): the
state is the commit point, so a process killed at any moment, even outright (kill -9, out of memory),
leaves a state whose files hold the epochs it names. Each file is flushed to the disk before its rename
and each rename before the next write, so a power cut keeps that order too. Files no state names any
more go after it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from forgery import interrupts

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the folder goes unguarded there
    fcntl = None  # type: ignore[assignment]

EPOCH_FILE = "epoch-{epoch:04d}.keras"  # one per kept epoch; state.json names the latest and the best
MODEL_FILE = "last.keras"  # what a state from before the epoch files holds its latest and best epochs in
BEST_FILE = "best.keras"
STATE_FILE = "state.json"
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
    model_file: str = MODEL_FILE  # the file in the folder holding epoch `epoch`'s model
    best_file: str = ""  # the file holding epoch `best_epoch`'s model ("" while there is none)


def save(folder: Path, model: Any, state: CheckpointState, best: bool = False) -> None:
    """Write the model of epoch `state.epoch` under a name of its own, then the state naming it (and, with
    `best`, naming it the best epoch's too), then remove the files no state names any more.

    One deferred block: a Ctrl-C arriving meanwhile is raised after all of it. Until state.json is
    replaced, the previous state and every file it names stay as they were.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = EPOCH_FILE.format(epoch=state.epoch)
    if name in (state.model_file, state.best_file):  # the same epoch saved again: never write over a file the state names
        name = name.replace(".keras", f".{os.getpid()}-{time.monotonic_ns()}.keras")
    partial_model = folder / f".{name}.partial.keras"  # Keras insists on the .keras suffix
    with interrupts.deferred():
        model.save(partial_model)
        replace_durably(partial_model, folder / name)
        state.model_file = name
        if best:
            state.best_file = name
        write_state(folder, state)
        remove_unnamed(folder, state)


def remove_unnamed(folder: Path, state: CheckpointState) -> None:
    """Remove the model files `state` does not name (earlier epochs, a partial write cut short); a file
    that cannot be removed only costs disk space."""
    kept = {state.model_file, state.best_file}
    for path in folder.glob("*.keras"):
        if path.name not in kept:
            try:
                path.unlink()
            except OSError as error:
                log.warning("cannot remove the old checkpoint file %s (%s)", path, error.strerror or error)


def write_state(folder: Path, state: CheckpointState) -> None:
    """Write state.json atomically."""
    partial = folder / f".{STATE_FILE}.partial"
    payload = {
        "epoch": state.epoch,
        "logged_epoch": state.logged_epoch,
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "model_file": state.model_file,
        "best_file": state.best_file,
    }
    partial.write_text(json.dumps(payload, indent=1))
    replace_durably(partial, folder / STATE_FILE)


def write_data_record(folder: Path, record: dict[str, Any]) -> None:
    """Write the data record of a new run (its fingerprint, counts and issues) atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{DATA_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1))
    replace_durably(partial, folder / DATA_FILE)


def replace_durably(partial: Path, target: Path) -> None:
    """Rename `partial` to `target` once its bytes are on the disk, and put the rename there too.

    A rename alone is atomic against a killed process, not against a power cut: the kernel may write the
    new name before the file's data (an empty model file under the new name) or the state's rename
    before the model's (a state naming a file the disk never got).
    """
    descriptor = os.open(partial, os.O_RDWR)  # Windows flushes only a file opened for writing
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, target)
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """Flush `folder`'s entries (the renames in it) to the disk, where the system lets a folder be flushed."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows opens no folders; its renames are flushed with the file
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems (a few network ones) refuse to flush a folder: the rename still happened
        pass
    finally:
        os.close(descriptor)


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
    """The saved state, or None when `folder` holds none; DamagedCheckpoint when it is unreadable or a model file it names is gone."""
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        return None
    try:  # written atomically, so damage means something else touched it
        payload = json.loads(state_path.read_text())
        best_epoch = int(payload.get("best_epoch", 0))
        state = CheckpointState(
            epoch=int(payload["epoch"]),
            logged_epoch=int(payload["logged_epoch"]),
            history=dict(payload["history"]),
            best_epoch=best_epoch,
            best_value=payload.get("best_value"),
            # A state from before the epoch files: last.keras and best.keras.
            model_file=payload.get("model_file", MODEL_FILE),
            best_file=payload.get("best_file", BEST_FILE if best_epoch else ""),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedCheckpoint(f"{state_path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    # Each completed epoch adds one value to every metric; a resume logs the unlogged ones from these lists.
    short = next((name for name, values in state.history.items() if not isinstance(values, list) or len(values) != state.epoch), None)
    if short is not None or state.epoch < 0 or not 0 <= state.logged_epoch <= state.epoch or not 0 <= state.best_epoch <= state.epoch:
        detail = f"{short} has {len(state.history[short]) if isinstance(state.history[short], list) else 'no list of'} values" if short is not None else f"logged epoch {state.logged_epoch}, best epoch {state.best_epoch}"
        raise DamagedCheckpoint(f"{state_path} does not add up: epoch {state.epoch}, but {detail}")
    for name in (state.model_file, state.best_file):
        if not isinstance(name, str) or Path(name).name != name:
            raise DamagedCheckpoint(f"{state_path} names no model file of its folder ({name!r})")
    # Written before the state that names them: one gone was removed by hand (or the folder copied in part).
    for name, what in ((state.model_file, "the latest epoch's"), (state.best_file, "the best epoch's")):
        if name and not (folder / name).is_file():
            raise DamagedCheckpoint(f"{state_path} names {name} as {what} model, and it is gone")
    return state


def restore_best(folder: Path, model: Any) -> None:
    """Load the best epoch's weights, as the folder's state names them, into `model`."""
    state = load_state(folder)
    if state is None or not state.best_file:
        raise DamagedCheckpoint(f"{folder / STATE_FILE} names no best epoch's model to restore")
    model.load_weights(folder / state.best_file)


def load_model(folder: Path) -> Any:
    """The checkpointed model, compiled as it was, loaded in Keras safe mode (no code from the file runs)."""
    from forgery import models

    state = load_state(folder)
    return models.load(folder / (state.model_file if state else MODEL_FILE))


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
