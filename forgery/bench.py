"""Entrypoint: `python -m forgery.bench [key=value ...]` measures what the harness costs next to two peers.

One run, one dataset, one model (conf/train.yaml's defaults: model=small, augment=light, optimizer=adam),
settings in conf/bench.yaml. It measures:

- Training images/s per batch size, over `steps` timed steps after `warmup_steps` untimed ones (compiling
  and tracing are not counted), of three pipelines, which take turns for `repeats` rounds; the fastest
  round by images/s is reported (`statistic=best`: other programs on the machine only ever slow a round
  down, which is why Python's timeit reports its minimum too) or the median one (`statistic=median`; of
  an even number of rounds, the slower of the two middle ones: a round that was measured, not an
  average), each round's seconds kept beside it:
  - harness: `forgery.train.fit` as a run calls it, for one epoch: the seeded permutation, the layers'
    generators reset, `fit` with validation, then the checkpoint. Its epoch is `steps` batches of the
    training split (cycled when the split is smaller) and the same share of the validation split as a
    run validates on. Shown three ways: as measured, less the time in the checkpoint, and less the
    checkpoint and validation too ("training steps only", what the peers do).
  - notebook: `keras.utils.image_dataset_from_directory(folder, image_size=(32, 32), batch_size=B,
    label_mode="categorical")` decoding JPEG files as it goes, repeated, then `model.fit` (tensorflow backend
    only). Each `fit` starts the dataset over, so every round trains on its first `steps` batches, with
    the partial batch that ends each pass over the folder counted as the images it holds.
    A CIFAKE folder's train/ is read as it is; other data (demo, a zip) is first written to a temporary
    folder of JPEG files, outside the timing.
  - plain: `model.fit(uint8 images, one-hot labels, batch_size=B, shuffle=True)` on in-memory arrays.
  All three build and compile the model as a run does (optimizer, schedule, loss, precision); the peers
  track accuracy only, as a notebook does, the harness also the ROC AUC, as a run does. The peers
  augment with Keras's separate layers (RandomFlip, RandomRotation, RandomZoom), as the seed notebook
  did; the harness as a run does, with `augment.fused` (one resampling per image: forgery.augment). Each pipeline
  runs in a fresh process of its own: the harness with a run's runtime settings (conf/train.yaml's
  `runtime`: steps per execution, TensorFlow's thread pools sized for the batch), the peers with Keras's
  and TensorFlow's defaults, as a notebook has them.
  Ratio = harness images/s / peer images/s: above 1, the harness is faster.
- Data loading: for a cached loader (data=cifake), a cold load into an empty cache folder and a warm one
  from it (the operating system may still hold the image files in memory: cold means no decoded cache);
  for the demo data, its build time.
- The fixed overhead of a run, everything it does besides loading data and `fit`: the start-up of a fresh
  interpreter (imports, Keras, Hydra), then `forgery.train.train` itself for one epoch, its data loader
  handed the dataset already loaded and its `fit` cut to two batches, timed less `fit` and split into
  evaluation and Grad-CAM, output files, artefact and model logging, and the rest; in a throwaway MLflow
  store, whose creation is shown apart: only a folder's first run pays it. Calling the real `train`
  keeps this measure in step with whatever a run does.
- Peak memory: the peak resident size of this process after each part, of each training process, and
  the size of the data arrays.

Prints a table and writes every figure, the machine and the command to `output` as JSON.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from forgery import interrupts, runtime, train
from forgery.config import ConfigError, help_error, override_error, validate
from forgery.data import CLASS_NAMES, IMAGE_SIZE, Dataset, Split

log = logging.getLogger("forgery.bench")

PARTS = ("loading", "training", "overhead")
PIPELINES = ("harness", "notebook", "plain")
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
ROW_LABELS = {
    "harness": "harness (a run's epoch)",
    "harness_no_checkpoint": "harness without checkpoint",
    "harness_training_only": "harness training steps only",
    "notebook": "notebook (JPEG folder)",
    "plain": "plain fit (arrays)",
}
PEERS = ("notebook", "plain")
STATISTICS = ("best", "median")  # which round of each pipeline is reported
# What `forgery.train.fit` calls in `forgery.checkpoints` after an epoch: the "checkpoint" time of the harness.
CHECKPOINT_CALLS = ("save", "restore_best", "write_state")
OVERHEAD_METHOD = (
    "start_up: wall time of a fresh interpreter that imports every forgery module the run below imported, starts Keras "
    "(its first op) and has Hydra compose the training config (`forgery.train --cfg job`). The rest: forgery.train.train "
    "run in this process for one epoch, its data loader replaced by the dataset already in memory and its fit cut to two "
    "batches; run time less fit is split into evaluate_and_explain, write_outputs, artefact_logging (Tracker.folder), "
    "model_logging (Tracker.model) and rest_of_run (model build and compile, MLflow run, params and metrics, saved files). "
    "The MLflow store is a fresh local one; creating it is listed apart, as only a folder's first run pays it. "
    "Not included: data loading (see data) and fit (see training)."
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint: a wrong option or missing data is one `error:` line and exit code 2, never a traceback."""
    problem = output_problem(Path(str(cfg.output)))
    if problem:  # before minutes of measuring, not after
        train.fail(problem)
    try:
        report = bench(cfg)
    except Exception as error:
        # Hydra's instantiate wraps what a loader raised; a user error inside stays a one-liner.
        user_error = error if isinstance(error, train.USER_ERRORS) else error.__cause__
        if isinstance(user_error, train.USER_ERRORS):
            train.fail(str(user_error))
        raise
    output = Path(str(cfg.output))
    print(table(report))  # first: the figures are on the terminal even if the file cannot be written
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as error:
        train.fail(f"could not write the report {output} ({error.strerror or error}); the table above has its figures")
    print(f"wrote {output}")


def output_problem(output: Path) -> str | None:
    """Why the report could not be written to `output` (a folder, or below a file or an unwritable folder), else None.

    Nothing is made here: a bench refused later for another reason leaves no folder behind.
    """
    if output.is_dir():
        return f"output={output} is a folder; give a file name such as {output / 'bench.json'}"
    existing = output.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot write the report to {output}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK):
        return f"cannot write the report to {output}: {existing} is not writable"
    return None


def cli() -> None:
    """`python -m forgery.bench`: read `batch_size=8,128` (and `parts=`, `pipelines=`) as lists, refuse bad overrides in one line, hand over to Hydra."""
    sys.argv[1:] = [bracketed_list(argument) for argument in sys.argv[1:]]
    arguments = sys.argv[1:]
    if all(not argument.startswith("-") for argument in arguments):
        swept = next((argument for argument in arguments if sweep_override(argument)), None)
        if swept:
            train.fail(f"{swept}: the bench takes one value per option (lists only for batch_size, parts and pipelines, such as batch_size=8,128)")
        problem = override_error(train.CONFIG_DIR, "bench", arguments)
        if problem:
            train.fail(problem)
    elif help_error(train.CONFIG_DIR, "bench", arguments):
        train.fail(help_error(train.CONFIG_DIR, "bench", arguments))
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the bench stopped before it finished; no report was written", file=sys.stderr)
        raise SystemExit(interrupts.exit_status()) from None


def bracketed_list(argument: str) -> str:
    """`batch_size=8,128` (spaces after the commas allowed) as the list `batch_size=[8,128]`, which Hydra would read as a sweep; any other argument as it is."""
    return re.sub(r"^(batch_size|parts|pipelines)=([^,\s\[\]()=]+(?:\s*,\s*[^,\s\[\]()=]+)+)$", r"\1=[\2]", argument)


def sweep_override(argument: str) -> bool:
    """Whether Hydra reads `argument` as a sweep (`steps=100,200`), which only a multirun accepts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(argument).is_sweep_override()
    except HydraException:
        return False  # a malformed override: Hydra's own one-line report follows


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Measure the parts chosen in `cfg` and return the report: what the JSON file holds."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required but not set (data=cifake reads the Kaggle folder or zip from data.root=/path/to/cifake)")
    backend, batch_sizes, parts, pipelines = str(cfg.backend), as_list(cfg.batch_size), as_list(cfg.parts), as_list(cfg.pipelines)
    check_options(backend, batch_sizes, cfg.steps, cfg.warmup_steps, cfg.repeats, parts, pipelines, cfg.statistic)
    use_backend(backend)
    load_at_start = os.getloadavg()[0]
    report: dict[str, Any] = {
        "command": " ".join(["python -m forgery.bench", *sys.argv[1:]]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "backend": backend,
            "batch_sizes": batch_sizes,
            "steps": cfg.steps,
            "warmup_steps": cfg.warmup_steps,
            "repeats": cfg.repeats,
            "statistic": cfg.statistic,
            "reported_round": reported_round(cfg.statistic, cfg.repeats),
            "parts": parts,
            "pipelines": pipelines,
            "seed": cfg.seed,
            "data": OmegaConf.to_container(cfg.data, resolve=True),
        },
    }
    peak_after: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="forgery-bench-") as scratch_name:
        scratch = Path(scratch_name)
        # Checked as a training run checks them, before the loader could trip over a bad data.* value or seed.
        run_cfg = run_config(cfg.data, cfg.seed, scratch / "run")
        log.info("loading data%s", " (cold, then warm)" if "loading" in parts and "cache_dir" in cfg.data else "")
        dataset, loading = load_data(cfg.data, "loading" in parts, scratch / "cache")
        report["data"] = {"name": dataset.name, "counts": dataset.counts(), "array_mib": round(array_bytes(dataset) / 2**20, 1), **loading}
        peak_after["loading"] = peak_rss_mib()
        with runtime.quiet_native_startup():
            import keras

            keras.ops.zeros(1)
        if "training" in parts:
            folder = notebook_folder(cfg.data, dataset.train, scratch / "notebook", dataset.issues) if "notebook" in pipelines else None
            report["training"] = [
                row
                for batch_size in batch_sizes
                for row in training_rows(batch_size, time_pipelines(run_cfg, dataset, batch_size, cfg.steps, cfg.warmup_steps, cfg.repeats, pipelines, folder, scratch, cfg.statistic))
            ]
            peak_after["training"] = peak_rss_mib()
        if "overhead" in parts:
            report["overhead"] = measure_overhead(cfg.data, cfg.seed, batch_sizes[0], dataset, backend, scratch / "overhead")
            peak_after["overhead"] = peak_rss_mib()
    report["memory"] = {"peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after": peak_after, "data_arrays_mib": report["data"]["array_mib"]}
    report["machine"] = machine(backend, load_at_start)
    return report


def as_list(value: Any) -> list[Any]:
    """A list option given as a list or as one value (`batch_size=8` or `batch_size=[8,128]`)."""
    return list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]


def check_options(
    backend: str, batch_sizes: list[Any], steps: Any, warmup_steps: Any, repeats: Any, parts: list[Any], pipelines: list[Any], statistic: Any = "best"
) -> None:
    """Raise ConfigError, naming the key, for the first option the bench cannot run with."""

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if backend not in BACKEND_PACKAGES:
        raise ConfigError(f"backend must be one of {', '.join(BACKEND_PACKAGES)}, got {backend!r}")
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        raise ConfigError(f"backend {backend}: the package {BACKEND_PACKAGES[backend]} is not installed")
    if not batch_sizes or not all(whole(size) and size >= 1 for size in batch_sizes):
        raise ConfigError(f"batch_size must be whole numbers of at least 1, got {batch_sizes}")
    if not whole(steps) or steps < 1:
        raise ConfigError(f"steps must be a whole number of at least 1, got {steps!r}")
    if not whole(warmup_steps) or warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be a whole number of at least 0, got {warmup_steps!r}")
    if not whole(repeats) or repeats < 1:
        raise ConfigError(f"repeats must be a whole number of at least 1, got {repeats!r}")
    if statistic not in STATISTICS:
        raise ConfigError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    for key, values, choices in (("parts", parts, PARTS), ("pipelines", pipelines, PIPELINES)):
        unknown = [value for value in values if value not in choices]
        if unknown or not values:
            raise ConfigError(f"{key} must list some of {', '.join(choices)}, got {values}")
    if "training" in parts and "notebook" in pipelines and backend != "tensorflow":
        raise ConfigError(f"pipelines: the notebook pipeline needs backend=tensorflow (got {backend}); leave it out with pipelines=[harness,plain]")


def use_backend(backend: str) -> None:
    """Choose the Keras backend, which Keras reads once, when it is first imported."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise ConfigError(f"backend: Keras is already running on {keras.backend.backend()} in this process, cannot measure {backend}")
        return
    os.environ["KERAS_BACKEND"] = backend
    # JAX takes 75% of a GPU's memory per process at its first op; the pipelines' processes run side by side, so each takes what it uses.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


# ----- Data -----


def load_data(data_cfg: DictConfig, measure: bool, cache_dir: Path) -> tuple[Dataset, dict[str, Any]]:
    """The dataset, and when `measure`, its loading times: cold and warm for a cached loader, else its build."""
    from hydra.utils import instantiate

    if not measure:
        return instantiate(data_cfg), {}
    seconds: dict[str, float] = {}
    if "cache_dir" not in data_cfg:
        with stopwatch(seconds, "build"):
            dataset = instantiate(data_cfg)
        return dataset, {"loading": {"build_seconds": round(seconds["build"], 3)}}
    with stopwatch(seconds, "cold"):
        instantiate(data_cfg, cache_dir=str(cache_dir))  # an empty cache folder: every file is decoded, then cached
    with stopwatch(seconds, "warm"):
        dataset = instantiate(data_cfg, cache_dir=str(cache_dir))
    loading = {"cold_seconds": round(seconds["cold"], 3), "warm_seconds": round(seconds["warm"], 3)}
    return dataset, {"loading": loading}


def array_bytes(dataset: Dataset) -> int:
    """Bytes held by the dataset's image and label arrays."""
    return sum(split.images.nbytes + split.labels.nbytes for split in (dataset.train, dataset.val, dataset.test))


def cycled(split: Split, count: int) -> Split:
    """The first `count` images of a split, starting over from its beginning when it holds fewer."""
    indices = np.arange(count) % len(split)
    return Split(split.images[indices], split.labels[indices])


# What the loader met but the notebook's reader takes in its stride (it converts and resizes too).
NOTEBOOK_READS_ANYWAY = frozenset({"converted_images", "resized_images", "duplicate_train_images", "test_images_in_train"})


def notebook_folder(data_cfg: DictConfig, train_split: Split, scratch: Path, issues: dict[str, int]) -> Path:
    """The class-folder tree the notebook reads: a CIFAKE folder's train/ as it is, else the training split written as JPEG files.

    A folder the loader left files out of is written out too: the notebook's reader would fail on a file
    the loader skipped, or read an extra class folder as a third class.
    """
    from PIL import Image

    root = data_cfg.get("root")
    left_out = sorted(kind for kind, count in issues.items() if count and kind not in NOTEBOOK_READS_ANYWAY)
    if root and Path(str(root)).expanduser().is_dir():
        if not left_out:
            return Path(str(root)).expanduser() / "train"
        log.info("the loader left files of %s out (%s), so the notebook reads the training split written as JPEG files instead", root, ", ".join(left_out))
    log.info("writing %d training images as JPEG files for the notebook pipeline", len(train_split))
    for name in CLASS_NAMES:
        (scratch / name).mkdir(parents=True)
    for index, (pixels, label) in enumerate(zip(train_split.images, train_split.labels)):
        Image.fromarray(pixels).save(scratch / CLASS_NAMES[label] / f"{index:06d}.jpg", quality=95)
    return scratch


# ----- Training -----


def run_config(data_cfg: DictConfig, seed: int, output_dir: Path) -> DictConfig:
    """The config a training run on this data would use (conf/train.yaml's defaults), with Keras kept silent."""
    from hydra import compose

    run_cfg = compose(config_name="train", overrides=[f"seed={seed}", "verbose=0", f"output_dir={output_dir}"])
    with open_dict(run_cfg):
        run_cfg.data = OmegaConf.to_container(data_cfg, resolve=True)
    validate(run_cfg)
    return run_cfg


def build_model(run_cfg: DictConfig, metrics: list[Any], train_images: int, steps_per_execution: int = 1) -> Any:
    """A freshly seeded model, compiled by the same function a run uses, with these metrics."""
    import keras

    keras.utils.set_random_seed(run_cfg.seed)
    keras.mixed_precision.set_global_policy(run_cfg.precision)
    return train.build_model(run_cfg, train_images, metrics, steps_per_execution)


Timing = dict[str, float]  # steps, images, seconds, and what else a pipeline reports about one timed segment
Runner = Callable[[], dict[str, Timing]]  # times one more segment of a warmed-up pipeline: {row name: timing}


def time_pipelines(
    run_cfg: DictConfig,
    dataset: Dataset,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    repeats: int,
    pipelines: list[str],
    folder: Path | None,
    scratch: Path,
    statistic: str = "best",
) -> dict[str, Timing]:
    """The fastest (or median) timing per row at one batch size: every pipeline warmed up, then timed in turn, `repeats` rounds.

    Each pipeline runs in a process of its own, started fresh: the harness sizes TensorFlow's thread pools
    for its batch size as a run does, and the peers keep TensorFlow's defaults, as a notebook does; in one
    process the first to start would fix them for all. Taking turns spreads a busy spell of the machine
    over all pipelines instead of one.
    """
    log.info("training: starting and warming up %s at batch %d, a process each", ", ".join(pipelines), batch_size)
    cfg = OmegaConf.to_container(OmegaConf.merge(run_cfg, {"batch_size": batch_size}), resolve=True)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    setups: dict[str, dict[str, Any]] = {}
    if "harness" in pipelines:
        # A run validates len(val) images per len(train) trained: the timed epoch keeps that share, in whole batches.
        validation_steps = max(1, round(steps * len(dataset.val) / len(dataset.train)))
        setups["harness"] = {
            "warm": Dataset(dataset.name, cycled(dataset.train, max(1, warmup_steps) * batch_size), cycled(dataset.val, batch_size), dataset.test),
            "timed": Dataset(dataset.name, cycled(dataset.train, steps * batch_size), cycled(dataset.val, validation_steps * batch_size), dataset.test),
            "warmup_steps": warmup_steps,
            "checkpoint_dir": scratch / f"checkpoints-{batch_size}",
        }
    if "notebook" in pipelines and folder is not None:
        setups["notebook"] = {"folder": folder, "steps": steps, "warmup_steps": warmup_steps}
    if "plain" in pipelines:
        setups["plain"] = {"warm": cycled(dataset.train, warmup_steps * batch_size), "timed": cycled(dataset.train, steps * batch_size)}
    workers = [PipelineWorker(pipeline, backend, cfg, setup) for pipeline, setup in setups.items()]
    try:
        for worker in workers:
            worker.wait_until_ready()
        samples: dict[str, list[Timing]] = {}
        for round_number in range(1, repeats + 1):
            log.info("training: batch %d, round %d of %d, %d steps per pipeline", batch_size, round_number, repeats, steps)
            for worker in workers:
                for name, timing in worker.time_round().items():
                    samples.setdefault(name, []).append(timing)
    finally:
        for worker in workers:
            worker.stop()
    return {name: chosen_timing(timings, statistic) for name, timings in samples.items()}


class PipelineWorker:
    """One pipeline in a process of its own, started with spawn (a fresh interpreter, so a fresh TensorFlow)."""

    def __init__(self, pipeline: str, backend: str, cfg: dict[str, Any], setup: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipeline = pipeline
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=serve_pipeline, args=(child_end, pipeline, backend, cfg, setup), name=f"bench-{pipeline}", daemon=True)
        self.process.start()
        child_end.close()

    def wait_until_ready(self) -> None:
        """Block until the pipeline is warmed up."""
        self._receive()

    def time_round(self) -> dict[str, Timing]:
        """One timed segment, each row tagged with the process's peak memory so far."""
        try:
            self.connection.send("round")
        except OSError:  # the pipe is broken: the process has gone
            self._receive()  # raises, saying how it ended
        timings, peak = self._receive()
        return {name: {**timing, "process_peak_rss_mib": peak} for name, timing in timings.items()}

    def stop(self) -> None:
        """Ask the process to end, and make sure it does."""
        with contextlib.suppress(OSError):
            self.connection.send("stop")
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _receive(self) -> Any:
        """The worker's next answer; its failure, or its death, raised here with what it said."""
        try:
            kind, payload = self.connection.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            raise RuntimeError(f"the {self.pipeline} pipeline's process died (exit code {self.process.exitcode}; out of memory?)") from None
        if kind == "error":
            raise RuntimeError(f"the {self.pipeline} pipeline failed: {payload}")
        return payload


def serve_pipeline(connection: Any, pipeline: str, backend: str, cfg: dict[str, Any], setup: dict[str, Any]) -> None:
    """A worker process: start Keras (the harness with a run's runtime settings), warm the pipeline up, time rounds on request."""
    os.environ["KERAS_BACKEND"] = backend
    try:
        run_cfg = OmegaConf.create(cfg)
        if pipeline != "harness" and "fused" in run_cfg.augment:
            run_cfg.augment.fused = False  # the peers augment with Keras's separate layers, as the seed notebook did
        with runtime.quiet_native_startup():
            import keras

            steps_per_execution = 1  # the peers: Keras's defaults, as a notebook has them
            if pipeline == "harness":
                steps_per_execution = runtime.configure(
                    run_cfg.runtime.steps_per_execution, run_cfg.runtime.intra_op_threads, run_cfg.runtime.inter_op_threads, run_cfg.batch_size, run_cfg.runtime.loop
                ).steps_per_execution
            keras.ops.zeros(1)
        runner = RUNNERS[pipeline](run_cfg, steps_per_execution, **setup)
        connection.send(("ready", None))
        while connection.recv() == "round":
            connection.send(("timing", (runner(), peak_rss_mib())))
    except Exception as error:  # reported to the bench, which stops with it
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def chosen_timing(timings: list[Timing], statistic: str) -> Timing:
    """The round with the most images/s, or the median one (of two middle ones, the slower), plus every round's seconds.

    Ranked by images/s, not seconds, so that the choice holds whatever each round counted; the median is a
    measured round, never an average of two.
    """
    ordered = sorted(timings, key=lambda timing: timing["images"] / timing["seconds"], reverse=True)
    chosen = ordered[0] if statistic == "best" else ordered[len(ordered) // 2]
    return {**chosen, "seconds_each_round": [round(timing["seconds"], 3) for timing in timings]}


def reported_round(statistic: str, repeats: int) -> str:
    """Which round `chosen_timing` reports, in words, for the table's header and the JSON's settings."""
    rounds = f"{repeats} round{'' if repeats == 1 else 's'}"
    if statistic == "best":
        return f"fastest of {rounds}"
    if repeats % 2:
        return f"median of {rounds}"
    return f"lower median of {rounds} (the slower middle one)"


def harness_runner(cfg: DictConfig, steps_per_execution: int, warm: Dataset, timed: Dataset, warmup_steps: int, checkpoint_dir: Path) -> Runner:
    """Build the harness's model and warm it up with one short epoch of `forgery.train.fit`; each call times one more epoch.

    The timing comes three ways: the epoch as measured, less the time in the checkpoint, and less validation too.
    """
    import keras

    from forgery import checkpoints

    model = build_model(cfg, train.run_metrics(), len(timed.train), steps_per_execution)
    state = checkpoints.CheckpointState()
    if warmup_steps:
        cfg.epochs = 1
        train.fit(model, warm, cfg, state, checkpoint_dir, log_epoch=ignore_metrics)
    steps = len(timed.train) // cfg.batch_size

    def run() -> dict[str, Timing]:
        cfg.epochs = state.epoch + 1
        with time_spent_in(checkpoints, *CHECKPOINT_CALLS) as checkpointing, time_spent_in(model, "evaluate") as validation:
            started = time.perf_counter()
            train.fit(model, timed, cfg, state, checkpoint_dir, log_epoch=ignore_metrics)
            seconds = time.perf_counter() - started
        measured = {
            "steps": steps,
            "images": len(timed.train),
            "seconds": seconds,
            "validation_images": len(timed.val),
            "validation_seconds": round(validation.seconds, 3),
            "checkpoint_seconds": round(checkpointing.seconds, 3),
            "steps_per_execution": steps_per_execution,
        }
        return {
            "harness": measured,
            "harness_no_checkpoint": {"steps": steps, "images": len(timed.train), "seconds": seconds - checkpointing.seconds},
            "harness_training_only": {"steps": steps, "images": len(timed.train), "seconds": seconds - checkpointing.seconds - validation.seconds},
        }

    if warmup_steps and keras.backend.backend() == "jax":
        # JAX compiles once per array shape: the short warm-up epoch's shapes (its validation batches, its scan
        # lengths) are not the timed epoch's, so the first timed round would pay for compiling. TensorFlow traces
        # once whatever the count.
        run()
    return run


def ignore_metrics(metrics: dict[str, float], epoch: int) -> None:
    """The bench's `log_epoch`: MLflow's per-epoch logging is part of the fixed overhead, not of training."""


def notebook_runner(run_cfg: DictConfig, steps_per_execution: int, folder: Path, steps: int, warmup_steps: int) -> Runner:
    """A notebook's pipeline, warmed up: a dataset decoding the JPEG folder as it goes, and `model.fit` on it."""
    import keras

    batch_size = run_cfg.batch_size
    started = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=(IMAGE_SIZE, IMAGE_SIZE), batch_size=batch_size, label_mode="categorical", verbose=False
    )
    setup_seconds = round(time.perf_counter() - started, 3)  # listing the folder, once per notebook session
    model = build_model(run_cfg, ["accuracy"], len(dataset.file_paths), steps_per_execution)
    stream = dataset.repeat()  # a notebook's epochs back to back, so any number of steps can be timed
    if warmup_steps:
        model.fit(stream, steps_per_epoch=warmup_steps, shuffle=False, verbose=0)
    # Every fit starts a new iterator over the stream (Keras's EpochIterator): each round trains its first `steps` batches.
    images = images_in_first_batches(steps, len(dataset.file_paths), batch_size)

    def run() -> dict[str, Timing]:
        started = time.perf_counter()
        model.fit(stream, steps_per_epoch=steps, shuffle=False, verbose=0)  # shuffle: the dataset shuffles itself
        seconds = time.perf_counter() - started
        return {"notebook": {"steps": steps, "images": images, "seconds": seconds, "setup_seconds": setup_seconds}}

    return run


def images_in_first_batches(count: int, total: int, batch_size: int) -> int:
    """Images in the first `count` batches of `total` images batched by `batch_size` and repeated.

    Each pass over the images ends with a partial batch (total % batch_size images, when not 0), which
    counting every batch as full would overstate.
    """
    per_pass = -(-total // batch_size)
    shortfall = per_pass * batch_size - total  # images missing from each pass's last batch
    return count * batch_size - (count // per_pass) * shortfall


def plain_runner(run_cfg: DictConfig, steps_per_execution: int, warm: Split, timed: Split) -> Runner:
    """Plain `model.fit` on in-memory uint8 arrays with Keras's own shuffling, warmed up."""
    batch_size = run_cfg.batch_size
    model = build_model(run_cfg, ["accuracy"], len(timed), steps_per_execution)
    if len(warm):
        model.fit(warm.images, train.one_hot(warm.labels), batch_size=batch_size, shuffle=True, verbose=0)
    images, targets = timed.images, train.one_hot(timed.labels)

    def run() -> dict[str, Timing]:
        started = time.perf_counter()
        model.fit(images, targets, batch_size=batch_size, shuffle=True, verbose=0)
        seconds = time.perf_counter() - started
        return {"plain": {"steps": len(timed) // batch_size, "images": len(timed), "seconds": seconds}}

    return run


RUNNERS: dict[str, Callable[..., Runner]] = {"harness": harness_runner, "notebook": notebook_runner, "plain": plain_runner}


def training_rows(batch_size: int, timings: dict[str, Timing]) -> list[dict[str, Any]]:
    """One row per pipeline: its timing, images/s, and for each harness row its ratio to each peer measured."""

    def speed(timing: Timing) -> float:
        return timing["images"] / timing["seconds"]

    rows = []
    for pipeline, timing in timings.items():
        row = {"batch_size": batch_size, "pipeline": pipeline, **timing, "seconds": round(timing["seconds"], 3), "images_per_second": round(speed(timing), 1)}
        if pipeline.startswith("harness"):
            row.update({f"vs_{peer}": round(speed(timing) / speed(timings[peer]), 3) for peer in PEERS if peer in timings})
        rows.append(row)
    return rows


# ----- Fixed overhead -----


def measure_overhead(data_cfg: DictConfig, seed: int, batch_size: int, dataset: Dataset, backend: str, scratch: Path) -> dict[str, Any]:
    """Seconds a run spends besides loading data and `fit`, stage by stage (see OVERHEAD_METHOD), and their total."""
    from forgery import tracking

    log.info("overhead: a one-epoch run of forgery.train.train, data and fit aside")
    run_cfg = run_config(data_cfg, seed, scratch / "run")
    run_cfg.epochs, run_cfg.batch_size = 1, batch_size
    # This process's TensorFlow has started with its default thread pools, which can't change now; saying so is all a run could do.
    run_cfg.runtime.intra_op_threads, run_cfg.runtime.inter_op_threads = 0, 0
    loader_module, loader_name = str(data_cfg._target_).rsplit(".", 1)
    first_run_only: dict[str, float] = {}
    with scratch_mlflow_store(scratch / "mlflow"), contextlib.ExitStack() as patches:
        with stopwatch(first_run_only, "mlflow_store_creation"):
            tracking.ensure_experiment(run_cfg.tracking.experiment)
        patches.enter_context(replaced(importlib.import_module(loader_module), loader_name, lambda **options: dataset))
        patches.enter_context(replaced(train, "fit", on_two_batches(train.fit)))
        # Interrupted, the scratch run ends KILLED as any run does, but its resume advice would name a folder the bench deletes.
        patches.enter_context(replaced(train, "interrupted_lines", lambda run_id, checkpoint_dir: []))
        fitting = patches.enter_context(time_spent_in(train, "fit"))
        stages = {
            "evaluate_and_explain": patches.enter_context(time_spent_in(train, "evaluate_and_explain")),
            "write_outputs": patches.enter_context(time_spent_in(train, "write_outputs")),
            "artefact_logging": patches.enter_context(time_spent_in(tracking.Tracker, "folder")),
            "model_logging": patches.enter_context(time_spent_in(tracking.Tracker, "model")),
        }
        started = time.perf_counter()
        try:
            train.train(run_cfg)
        except SystemExit as stop:
            if stop.code == interrupts.exit_status():
                raise KeyboardInterrupt from None  # the bench's own interrupted line follows
            raise
        run_seconds = time.perf_counter() - started - fitting.seconds
    log.info("overhead: start-up in a fresh interpreter")
    seconds = {"start_up": start_up_seconds(backend, scratch), **{name: tally.seconds for name, tally in stages.items()}}
    seconds["rest_of_run"] = run_seconds - sum(tally.seconds for tally in stages.values())
    return {
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "total_seconds": round(sum(seconds.values()), 3),
        "first_run_only_seconds": {name: round(value, 3) for name, value in first_run_only.items()},
        "method": OVERHEAD_METHOD,
    }


def on_two_batches(fit: Callable[..., Any]) -> Callable[..., Any]:
    """`forgery.train.fit` over the first two batches of the training split: the overhead needs a trained model, not an epoch."""

    def fit_two_batches(model: Any, dataset: Dataset, cfg: DictConfig, *args: Any, **kwargs: Any) -> Any:
        short = Dataset(dataset.name, cycled(dataset.train, 2 * cfg.batch_size), dataset.val, dataset.test, dataset.issues)
        return fit(model, short, cfg, *args, **kwargs)

    return fit_two_batches


def start_up_seconds(backend: str, folder: Path) -> float:
    """Wall seconds for a fresh interpreter to import what the run imported, start Keras and compose the training config."""
    modules = sorted(name for name in sys.modules if name.startswith("forgery.") and name != __name__)
    # run_module is what `python -m forgery.train --cfg job` does: Hydra finds conf/ from the module, then prints the config.
    program = f"import keras, runpy; keras.ops.zeros(1); import {', '.join(modules)}; runpy.run_module('forgery.train', run_name='__main__', alter_sys=True)"
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", program, "--cfg", "job"], cwd=folder, env=environment, check=True, capture_output=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def scratch_mlflow_store(folder: Path) -> Iterator[None]:
    """A fresh MLflow store in `folder` (database and ./mlruns artefacts), so the user's store is never touched."""
    folder.mkdir(parents=True, exist_ok=True)
    previous_folder, previous_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.chdir(folder)  # MLflow puts the artefacts of a new experiment under ./mlruns
    try:
        yield
    finally:
        os.chdir(previous_folder)
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri


# ----- Timing, memory, machine -----


@contextlib.contextmanager
def stopwatch(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to `seconds[name]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """Set `owner.<name>` to `value` meanwhile."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@dataclass
class Tally:
    """Seconds added up by `time_spent_in`."""

    seconds: float = 0.0


@contextlib.contextmanager
def time_spent_in(owner: Any, *names: str) -> Iterator[Tally]:
    """Add up the time spent in calls of `owner.<name>` meanwhile (outermost calls only), then put them back.

    This is how the harness's checkpoint and validation time is told apart without changing `forgery.train.fit`:
    it looks its callees up on the `checkpoints` module and on the model at call time.
    """
    tally, depth = Tally(), 0
    originals = {name: getattr(owner, name) for name in names}
    owned = {name for name in names if name in vars(owner)}  # a module's own functions; a method comes from the class

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            depth += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                depth -= 1
                if depth == 0:  # save() calls write_state(): count it once
                    tally.seconds += time.perf_counter() - started

        return call

    for name, original in originals.items():
        setattr(owner, name, timed(original))
    try:
        yield tally
    finally:
        for name, original in originals.items():
            if name in owned:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB."""
    with contextlib.suppress(OSError, StopIteration):
        # Linux's own high-water mark, reset when a process starts a program: ru_maxrss of a spawned worker
        # would include its parent's size at the fork.
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 2**10, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # macOS counts bytes, Linux KiB


def machine(backend: str, load_at_start: float) -> dict[str, Any]:
    """What the figures were measured on: CPUs, system, versions, load, and the code's commit."""
    import keras

    from forgery import tracking

    cpu_model = ""
    with contextlib.suppress(OSError):
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    git = tracking.git_tags(Path(__file__).resolve().parent)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model or platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "backend_version": version(BACKEND_PACKAGES[backend]),
        "load_average_1min": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
        "git_commit": git.get("git_commit", ""),
        "git_dirty": git.get("git_dirty", ""),
    }


# ----- The table -----


def table(report: dict[str, Any]) -> str:
    """The report as text: training speeds and ratios, data loading, fixed overhead, memory."""
    settings, machine_info, data = report["settings"], report["machine"], report["data"]
    lines = [
        f"forgery bench: backend {machine_info['backend']}, data {data['name']} ({data['counts']['train']['total']} training images), "
        f"{machine_info['usable_cpus']} CPUs, load {machine_info['load_average_1min']['start']} -> {machine_info['load_average_1min']['end']}",
    ]
    if report.get("training"):
        lines += [
            "",
            f"training: {settings['steps']} timed steps after {settings['warmup_steps']} warm-up steps, {reported_round(settings.get('statistic', 'best'), settings['repeats'])} "
            "(range: the slowest and fastest round); vs = harness images/s / peer images/s (above 1: the harness is faster)",
            f"{'batch':>5}  {'pipeline':<29} {'steps':>6} {'images':>7} {'seconds':>9} {'images/s':>9} {'range images/s':>15} {'vs notebook':>11} {'vs plain':>9}",
        ]
        for row in report["training"]:
            ratios = [f"{row[key]:.3f}" if key in row else "-" for key in ("vs_notebook", "vs_plain")]
            each = row.get("seconds_each_round") or [row["seconds"]]
            spread = f"{row['images'] / max(each):.0f}-{row['images'] / min(each):.0f}"
            lines.append(
                f"{row['batch_size']:>5}  {ROW_LABELS[row['pipeline']]:<29} {row['steps']:>6} {row['images']:>7} "
                f"{row['seconds']:>9.3f} {row['images_per_second']:>9.1f} {spread:>15} {ratios[0]:>11} {ratios[1]:>9}"
            )
        for row in report["training"]:
            if row["pipeline"] == "harness":
                lines.append(
                    f"  batch {row['batch_size']}: the harness epoch validated {row['validation_images']} images in {row['validation_seconds']:.3f} s "
                    f"and checkpointed in {row['checkpoint_seconds']:.3f} s"
                )
    loading = data.get("loading")
    if loading:
        timing = (
            f"cold {loading['cold_seconds']:.3f} s (empty decoded cache), warm {loading['warm_seconds']:.3f} s (cache hit)"
            if "cold_seconds" in loading
            else f"built in {loading['build_seconds']:.3f} s"
        )
        lines += ["", f"data loading: {timing}; arrays {data['array_mib']} MiB in memory"]
    overhead = report.get("overhead")
    if overhead:
        lines += ["", f"fixed overhead per run (everything but data loading and fit; method in the JSON): {overhead['total_seconds']:.3f} s"]
        lines += [f"  {name.replace('_', ' '):<26} {value:>8.3f} s" for name, value in overhead["seconds"].items()]
        lines += [f"  {name.replace('_', ' '):<26} {value:>8.3f} s  (a folder's first run only)" for name, value in overhead["first_run_only_seconds"].items()]
    memory = report["memory"]
    after = ", ".join(f"{part} {value}" for part, value in memory["peak_rss_mib_after"].items())
    lines += ["", f"peak memory of the bench: {memory['peak_rss_mib']} MiB (after {after}); data arrays {memory['data_arrays_mib']} MiB"]
    processes = [f"{row['pipeline']} at batch {row['batch_size']} {row['process_peak_rss_mib']} MiB" for row in report.get("training", []) if "process_peak_rss_mib" in row and row["pipeline"] in PIPELINES]
    if processes:
        lines.append(f"peak memory of each training process (model, its data copies, {BACKEND_NAMES[machine_info['backend']]}): {', '.join(processes)}")
    return "\n".join(lines)


if __name__ == "__main__":
    cli()
