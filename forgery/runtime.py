"""How the backend executes training: operator threads and batches per compiled call, chosen for 32x32 images.

A step of the seed model at batch 8 is a few milliseconds of many tiny operations, so what costs is the
work around them, not arithmetic:
- Python and callback work per step: `steps_per_execution` runs several batches per compiled call.
- TensorFlow splitting each tiny CPU op over every core, then waiting for the slowest: below
  SMALL_BATCH one thread per op, with ops that don't depend on each other run side by side, is faster;
  from SMALL_BATCH up, the convolutions are big enough to split.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from forgery.config import RUNTIME_LOOPS, ConfigError

log = logging.getLogger(__name__)

SMALL_BATCH = 32  # measured on 2 CPU cores: below it one thread per op trains faster, from it up the default does
AUTO_STEPS_PER_EXECUTION = 32  # enough to hide Python's per-step cost; the progress bar still moves several times a second
LOOPS = RUNTIME_LOOPS  # how an epoch is trained: Keras's fit, or on JAX forgery.jax_loop's compiled scan

# What TensorFlow's C++ start-up prints on every start, whatever TF_CPP_MIN_LOG_LEVEL says.
NATIVE_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cuda drivers|cuInit|cudart_stub|computation placer|TensorFlow binary is optimized"
    r"|rebuild TensorFlow with the appropriate compiler flags"
)


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one run (0 threads = the backend's own default)."""

    backend: str
    steps_per_execution: int
    intra_op_threads: int
    inter_op_threads: int
    loop: str = "fit"

    def describe(self) -> str:
        """One line for the run's log."""
        def threads(count: int) -> str:
            return "default" if count == 0 else str(count)

        pools = f", threads per op {threads(self.intra_op_threads)}, ops side by side {threads(self.inter_op_threads)}" if self.backend == "tensorflow" else ""
        loop = ", data on the device, compiled scan over the steps" if self.loop == "scan" else ""
        return f"runtime: {self.backend} backend, {self.steps_per_execution} steps per execution{pools}{loop}"


def resolve(
    steps_per_execution: int | str,
    intra_op_threads: int | str,
    inter_op_threads: int | str,
    backend: str,
    batch_size: int,
    cpus: int,
    has_gpu: bool,
    loop: str = "auto",
) -> Runtime:
    """The settings `auto` stands for on this backend, batch size and machine; ConfigError for a setting the backend can't run."""
    if steps_per_execution == "auto":
        steps = 1 if backend == "torch" else AUTO_STEPS_PER_EXECUTION  # Keras on PyTorch runs one step per call only
    else:
        steps = int(steps_per_execution)
        if backend == "torch" and steps != 1:
            raise ConfigError(f"runtime.steps_per_execution must be 1 on the torch backend (Keras requires it), got {steps}; use auto")
    small_on_cpu = backend == "tensorflow" and not has_gpu and batch_size < SMALL_BATCH
    intra = (1 if small_on_cpu else 0) if intra_op_threads == "auto" else int(intra_op_threads)
    inter = (cpus if intra == 1 and small_on_cpu else 0) if inter_op_threads == "auto" else int(inter_op_threads)
    return Runtime(backend, steps, intra, inter, chosen_loop(loop, backend, has_gpu))


def chosen_loop(loop: str, backend: str, accelerated: bool) -> str:
    """What `runtime.loop` stands for on `backend`: fit or scan; ConfigError for scan off JAX or an unknown loop.

    auto scans on JAX with an accelerator only: XLA runs a CPU's convolutions inside a compiled loop several
    times slower than one step per call (measured on 2 cores: 29 against 6 ms a step at batch 8).
    """
    if loop not in LOOPS:
        raise ConfigError(f"runtime.loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    if loop == "scan" and backend != "jax":
        raise ConfigError(f"runtime.loop=scan needs the jax backend (KERAS_BACKEND=jax), this run uses {backend}; use auto or fit")
    return ("scan" if backend == "jax" and accelerated else "fit") if loop == "auto" else loop


def configure(steps_per_execution: int | str, intra_op_threads: int | str, inter_op_threads: int | str, batch_size: int, loop: str = "auto") -> Runtime:
    """Resolve the settings for the active Keras backend and set its thread pools; call before the backend's first op.

    The Runtime returned holds the pools in effect, which are an earlier run's when TensorFlow had already started.
    """
    import keras

    backend = keras.backend.backend()
    runtime = resolve(steps_per_execution, intra_op_threads, inter_op_threads, backend, batch_size, usable_cpus(), has_gpu(backend), loop)
    if backend != "tensorflow":
        return runtime
    intra, inter = set_tensorflow_threads(runtime.intra_op_threads, runtime.inter_op_threads)
    return Runtime(backend, runtime.steps_per_execution, intra, inter, runtime.loop)


def set_tensorflow_threads(intra: int, inter: int) -> tuple[int, int]:
    """Size TensorFlow's thread pools and return the sizes in effect; once TensorFlow has started they are fixed, so a second run in one process keeps the first's."""
    import tensorflow as tf

    threading = tf.config.threading
    wanted = {"intra_op": intra, "inter_op": inter}
    current = {"intra_op": threading.get_intra_op_parallelism_threads(), "inter_op": threading.get_inter_op_parallelism_threads()}
    if wanted == current:
        return intra, inter
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # "cannot be modified after initialization": this process already ran TensorFlow ops
        log.warning(
            "runtime: TensorFlow already started in this process with threads per op %s and ops side by side %s; "
            "keeping them (a fresh process would use %s and %s)",
            current["intra_op"] or "default", current["inter_op"] or "default", intra or "default", inter or "default",
        )
        return current["intra_op"], current["inter_op"]
    return intra, inter


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def has_gpu(backend: str) -> bool:
    """Whether the backend sees a GPU, asked without starting it (thread pools can only be sized before)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


@contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Hold back what native code writes to stderr meanwhile; replay it all except known start-up chatter.

    TensorFlow's C++ logging prints several lines (oneDNN, missing CUDA drivers) on every start, before
    TF_CPP_MIN_LOG_LEVEL is read, so the only way to keep a run's output readable is to filter the file
    descriptor itself. Anything else written meanwhile is printed after, not lost.
    """
    # 3 hides C++ messages that TensorFlow logs as errors but are notes, such as a kernel falling back from oneDNN to Eigen;
    # a real failure still raises in Python. Set the variable yourself to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not NATIVE_STARTUP_NOISE.search(line):
                    print(line, file=sys.stderr)
