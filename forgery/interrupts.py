"""Ctrl-C and SIGTERM, held back while a write is half done and delivered right after it.

A KeyboardInterrupt raised inside an MLflow database write can leave its SQLite transaction open, and
the `end_run("KILLED")` that follows then waits on that lock; one raised inside a checkpoint save
leaves a partial file. Writes run inside `deferred()`; a signal that arrives meanwhile is delivered as
KeyboardInterrupt when the outermost deferred block ends.

A KeyboardInterrupt raised while Python runs a weakref callback or a `__del__` (garbage collection
during training does) is printed as "Exception ignored" and dropped. So every signal is also recorded,
and training calls `raise_if_requested()` after each batch: a dropped interrupt still ends the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold back an interrupt until this block (and any enclosing one) has finished."""
    _state.depth = _depth() + 1
    try:
        yield
    finally:
        _state.depth = _depth() - 1
        if _state.depth == 0 and getattr(_state, "pending", False):
            _state.pending = False
            raise KeyboardInterrupt


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt if a signal arrived while `handled()` is active (outside deferred blocks)."""
    if getattr(_state, "requested", False) and _depth() == 0:
        raise KeyboardInterrupt


def exit_status() -> int:
    """The exit status for the last interrupt: 128 + its signal, as a shell reports it (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(getattr(_state, "signum", signal.SIGINT))


def _interrupt(signum: int, frame: Any) -> None:
    """Signal handler: raise now, or mark the interrupt pending inside a deferred block."""
    _state.requested = True  # kept even if the raise below lands where Python drops it
    _state.signum = signum  # kept after the block ends: the caller's exit status names the signal
    if _depth() > 0:
        _state.pending = True
        return
    raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """Route SIGINT and SIGTERM through `_interrupt` meanwhile (SIGTERM then ends a run like Ctrl-C).

    Nested blocks leave the outermost one in charge: an interrupt it recorded before the inner block
    began (one dropped while the data loaded) is not forgotten when the run's own block starts.
    """
    if getattr(_state, "handling", False):
        yield
        return
    try:
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (some launchers): leave signals alone
        yield
        return
    _state.requested, _state.handling, _state.signum = False, True, signal.SIGINT
    try:
        yield
    finally:
        _state.requested, _state.handling = False, False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


PROC = Path("/proc")  # Linux's process table; elsewhere (macOS) `ps` lists the processes instead


def child_processes(pid: int) -> list[int]:
    """Ids of `pid`'s direct child processes, read from /proc (Linux) or else from `ps` (macOS, BSD); empty if neither exists."""
    if not PROC.is_dir():
        return [child for child, parent in _ps_table() if parent == pid]
    children = []
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone since it was listed
            continue
        if ppid == pid:
            children.append(int(stat.parent.name))
    return children


def _ps_table() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process, from POSIX `ps`; empty where it cannot run."""
    try:
        with subprocess.Popen(["ps", "-A", "-o", "pid=", "-o", "ppid="], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as ps:
            listing, _ = ps.communicate(timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    table = [(int(fields[0]), int(fields[1])) for fields in map(str.split, listing.splitlines()) if len(fields) == 2 and all(map(str.isdigit, fields))]
    return [(pid, parent) for pid, parent in table if pid != ps.pid]  # `ps` lists itself, ended by now


def forward(signum: int) -> list[int]:
    """Send `signum` to each of this process's children; the ids signalled.

    A `kill <pid>` reaches one process only: a parallel sweep's workers would go on training, orphaned.
    Where neither /proc nor `ps` exists there is nothing to read the children from, and none is signalled.
    """
    signalled = []
    for child in child_processes(os.getpid()):
        try:
            os.kill(child, signum)
        except ProcessLookupError:  # ended since it was listed
            continue
        signalled.append(child)
    return signalled


def install(signum: int, handler: Callable[[int, Any], None]) -> Any:
    """Route `signum` to `handler` from now on; the handler it replaces, or None (nothing changed) outside the main thread."""
    try:
        return signal.signal(signum, handler)
    except ValueError:  # not the main thread (some launchers)
        return None
