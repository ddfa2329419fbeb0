"""Entrypoint: `python -m forgery.predict PATH... (run_id=ID | registered=NAME@ALIAS | model_path=FILE.keras) [gradcam_dir=FOLDER]`.

Classifies image files, and every image file in folders (recursively, following linked folders), as FAKE or REAL. Stdout carries
one JSON line per image and nothing else, so it can be piped into `jq` or a script:

    {"path": "a.jpg", "label": "FAKE", "confidence": 0.93, "probabilities": {"FAKE": 0.93, "REAL": 0.07},
     "calibrated": true, "note": "resized from 100x60 to 32x32 (Lanczos, antialiased)"}

- Any size or mode is accepted: images are converted to RGB and resized to 32x32 exactly as the CIFAKE
  loader does (forgery.data.decode_image), and `note` says when that happened.
- `run_id=` loads `runs:/<run_id>/model` from MLflow's store (MLFLOW_TRACKING_URI, else ./mlflow.db);
  when that run logged a `temperature` metric, probabilities are temperature-scaled
  (forgery.calibration) and `calibrated` is true. `model_path=` loads a `.keras` file; its
  probabilities are raw (`calibrated` false). Both load in Keras's safe mode, which refuses to run
  code stored in a model file. `registered=NAME@ALIAS` (such as `image-forgery@champion`, which
  `python -m forgery.promote register=true` points at the promoted run) loads the run of the model
  version that alias names, as `run_id=` would, temperature included.
- `gradcam_dir=` also writes a Grad-CAM overlay PNG of the predicted class per image and adds its
  path to the line as `gradcam`; an overlay that cannot be written gets `gradcam_error` instead.
- A file that cannot be read (missing, corrupt, not an image, over MAX_FILE_BYTES, a pipe, or pixels with no
  known scale such as floats), or whose probabilities come out NaN, gets `{"path", "error"}` and the rest go on.
- A model whose outputs are not probabilities (no softmax at the end) is refused before any image is read.
Exit status: 0 when every image was classified (and its overlay written), 1 when any failed, 2 for a usage
error (one `error:` line on stderr), 141 when the reader of stdout went away (`| head -1`), as for a
process killed by SIGPIPE. Arguments are plain tokens rather than Hydra overrides: a token
`key=value` whose key is one of the options above sets it, every other token is a path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import signal
import stat
import sys
import zipfile
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # Keras takes seconds to import; usage errors are reported before that
    import keras

    from forgery.gradcam import GradcamModel

log = logging.getLogger("forgery.predict")

OPTIONS = ("run_id", "registered", "model_path", "gradcam_dir")
MODEL_OPTIONS = ("run_id", "registered", "model_path")  # exactly one names the model
USAGE = "usage: python -m forgery.predict PATH... (run_id=ID | registered=NAME@ALIAS | model_path=FILE.keras) [gradcam_dir=FOLDER]"
# What a folder scan picks up; a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BATCH = 256  # images decoded and predicted together: lines keep flowing on a big folder, memory stays flat
GRADCAM_UPSCALE = 8  # as conf/train.yaml's gradcam.upscale: 32x32 shown at 256x256
GRADCAM_ALPHA = 0.45  # as conf/train.yaml's gradcam.alpha
# Bytes of the input's file name kept in an overlay's name: with the number and suffix, far below the 255 most
# file systems allow, however long the input's name.
GRADCAM_STEM_BYTES = 100
_OPTION_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
# How far a probability row may stray from [0, 1] and a sum of 1: float32 rounding is far below it, and a
# float16 model's is two of its epsilons (about 0.002).
PROBABILITY_TOLERANCE = 1e-3
# What a model is shown before any image is read, to tell probabilities from raw scores: black, white, noise.
PROBE_IMAGES = np.stack(
    [np.zeros((32, 32, 3), "uint8"), np.full((32, 32, 3), 255, "uint8"), np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype("uint8")]
)


class UsageError(Exception):
    """A mistake in the command line or the model it names; reported as one line with exit status 2."""


def main(arguments: list[str]) -> int:
    """Run the command on `arguments` (sys.argv[1:]) and return its exit status."""
    if any(argument in ("-h", "--help") for argument in arguments):
        print(USAGE, file=sys.stderr)
        return 0
    try:
        paths, options = parse_arguments(arguments)
        model, temperature = load_model(options)
        gradcam_dir = Path(options["gradcam_dir"]) if "gradcam_dir" in options else None
        cut = prepare_gradcam(model, gradcam_dir) if gradcam_dir else None
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = False
    for line in classify(model, temperature, image_files(paths), cut, gradcam_dir):
        print(json.dumps(line), flush=True)
        failed = failed or "error" in line or "gradcam_error" in line
    return 1 if failed else 0


def parse_arguments(arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split tokens into paths and `key=value` options; UsageError for a missing, repeated or unknown one."""
    paths: list[str] = []
    options: dict[str, str] = {}
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key in OPTIONS:
            if key in options:
                raise UsageError(f"{key} given twice")
            if not value:
                raise UsageError(f"{key} needs a value, e.g. {key}=...")
            options[key] = value
        elif _OPTION_LIKE.match(argument) and not Path(argument).exists():
            # A typo such as runid=... must not be read as a missing image file.
            raise UsageError(f"unknown option {key!r}; the options are {', '.join(f'{name}=' for name in OPTIONS)}")
        else:
            paths.append(argument)
    if not paths:
        raise UsageError(f"no image paths given; {USAGE}")
    if sum(key in options for key in MODEL_OPTIONS) != 1:
        raise UsageError("give exactly one of run_id=..., registered=NAME@ALIAS and model_path=...")
    if "registered" in options:
        registered_name(options["registered"])
    return paths, options


def registered_name(value: str) -> tuple[str, str]:
    """`NAME@ALIAS` split into the registered model's name and the alias; UsageError for any other shape."""
    name, at, alias = value.rpartition("@")
    if not at or not name or not alias:
        raise UsageError(f"registered must be NAME@ALIAS, such as image-forgery@champion, got {value!r}")
    return name, alias


def load_model(options: dict[str, str]) -> tuple[keras.Model, float | None]:
    """The model named by run_id or model_path, and the run's logged temperature (None: not calibrated)."""
    from forgery.runtime import quiet_native_startup

    if "model_path" in options:
        check_model_file(Path(options["model_path"]))  # in a blink, before seconds of importing Keras
    with quiet_native_startup(), contextlib.redirect_stdout(sys.stderr):
        import keras

        keras.ops.zeros(1)  # the first op initialises the backend's devices, which is chatty too
        if "model_path" in options:
            model, temperature = _load_model_file(Path(options["model_path"])), None
        elif "registered" in options:
            model, temperature = _load_registered_model(*registered_name(options["registered"]))
        else:
            model, temperature = _load_run_model(options["run_id"])
    shapes = (tuple(getattr(model, "input_shape", ())[1:]), tuple(getattr(model, "output_shape", ())[1:]))
    if shapes != ((32, 32, 3), (2,)):
        raise UsageError(f"the model maps {shapes[0]} to {shapes[1]}; a forgery model maps (32, 32, 3) to (2,)")
    problem = probability_problem(model.predict(PROBE_IMAGES, verbose=0))
    if problem:
        raise UsageError(f"{model_label(options)} does not output probabilities: {problem} (a forgery model ends in a softmax)")
    if temperature is None:
        log.warning("probabilities are raw: the model comes with no fitted temperature (calibrated: false)")
    else:
        log.info("probabilities are calibrated with the run's temperature %.4g", temperature)
    return model, temperature


def model_label(options: dict[str, str]) -> str:
    """How an error line names the model the options chose."""
    if "model_path" in options:
        return f"model {options['model_path']}"
    if "registered" in options:
        return f"model {options['registered']}"
    return f"the model of run {options['run_id']}"


def probability_problem(rows: np.ndarray) -> str | None:
    """Why finite output rows are not probabilities (a value outside [0, 1], or a row not summing to 1), or None.

    Rows with NaN or infinity are left to the per-image check, which names them as broken weights.
    """
    finite = np.asarray(rows, dtype="float64")[np.all(np.isfinite(rows), axis=1)]
    tolerance = max(PROBABILITY_TOLERANCE, 2 * float(np.finfo(rows.dtype).eps)) if np.issubdtype(rows.dtype, np.floating) else PROBABILITY_TOLERANCE
    outside = finite[(finite < -tolerance) | (finite > 1 + tolerance)]
    if outside.size:
        return f"it gave {float(outside[np.argmax(np.abs(outside - 0.5))]):.6g}, outside [0, 1]"
    sums = finite.sum(axis=1)
    off = sums[np.abs(sums - 1) > tolerance]
    if off.size:
        return f"its outputs for one image sum to {float(off[np.argmax(np.abs(off - 1))]):.6g}, not 1"
    return None


def check_model_file(path: Path) -> None:
    """UsageError unless `path` is an existing `.keras` file."""
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise UsageError(f"model_path must be a .keras file: {path}")
    if not zipfile.is_zipfile(path):  # else Keras says "File not found" of a file that is there
        raise UsageError(f"cannot load model {path}: not a .keras file (a .keras file is a zip archive; this one is damaged or something else)")


def _load_model_file(path: Path) -> keras.Model:
    """A `.keras` file loaded in safe mode; UsageError when Keras cannot load it."""
    from forgery import models

    try:
        return models.load(path)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not a usable model"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"cannot load model {path}: {type(error).__name__}: {first_line}") from None


def _load_registered_model(name: str, alias: str) -> tuple[keras.Model, float | None]:
    """The model and temperature of the run whose registered version `name@alias` points at."""
    from forgery import tracking

    _check_store(f"unknown model {name}@{alias}")
    version = tracking.model_version_by_alias(name, alias)
    if version is None:
        raise UsageError(f"no version of registered model {name!r} has the alias {alias!r} (python -m forgery.promote register=true sets it)")
    log.info("registered model %s@%s is version %s, from run %s", name, alias, version["version"], version["run_id"])
    return _load_run_model(version["run_id"])


def _check_store(unknown: str) -> None:
    """UsageError (`unknown` and why) when the tracking server is down or there is no store here."""
    from forgery import tracking

    try:
        tracking.check_reachable()  # a dead server: one line now, not minutes of retries and a traceback
    except tracking.TrackingUnavailable as error:
        raise UsageError(str(error)) from None
    if not tracking.store_exists():
        raise UsageError(f"{unknown}: there is no MLflow store here (set MLFLOW_TRACKING_URI or cd to it)")


def _load_run_model(run_id: str) -> tuple[keras.Model, float | None]:
    """A run's logged model and its `temperature` metric; UsageError for an unknown run or one without a model."""
    from forgery import tracking
    from forgery.calibration import TEMPERATURE_METRIC

    _check_store(f"unknown run {run_id}")
    run = tracking.get_run(run_id)
    if run is None:  # another folder's store, most often: name the one searched
        raise UsageError(tracking.deleted_run(run_id, "name another run") or f"unknown run {run_id} in {tracking.tracking_uri()} (run predict in the folder the training ran in, or set MLFLOW_TRACKING_URI)")
    try:
        model = tracking.load_run_model(run_id)
    except (RuntimeError, OSError) as error:
        raise UsageError(str(error).splitlines()[0]) from None
    except Exception as error:  # Keras's own refusal (a Lambda layer in safe mode, a custom layer renamed since): many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"run {run_id} has no loadable model: {type(error).__name__}: {first_line}") from None
    temperature = run["metrics"].get(TEMPERATURE_METRIC)
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        log.warning("ignoring the run's temperature %r: it must be a positive number", temperature)
        temperature = None
    return model, temperature


def prepare_gradcam(model: keras.Model, folder: Path) -> GradcamModel:
    """The model cut for Grad-CAM, with `folder` created; UsageError when either cannot be done."""
    from forgery.gradcam import cut_model

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create gradcam_dir {folder}: {error.strerror or error}") from None
    try:
        return cut_model(model)
    except ValueError as error:
        raise UsageError(f"no Grad-CAM for this model: {error}") from None


def image_files(paths: list[str]) -> list[Path | tuple[Path, str]]:
    """Files named, and image files found in folders named (sorted); an empty folder becomes (folder, error)."""
    files: list[Path | tuple[Path, str]] = []
    for name in paths:
        path = Path(name)
        if not path.is_dir():
            files.append(path)  # missing or unreadable files get their error line when read
            continue
        found = folder_images(path)
        files.extend(found or [(path, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")])
    return files


def folder_images(folder: Path) -> list[Path | tuple[Path, str]]:
    """Every non-folder entry with an image suffix under `folder` (sorted), skipping hidden names (.DS_Store, .git).

    Pipes, devices and dangling links are kept, so each gets its error line as when named. Linked folders are
    followed, each real folder once: a link back up would otherwise loop forever. A folder that cannot be
    listed becomes (folder, error), so its images are not left out without a word.
    """
    found: list[Path | tuple[Path, str]] = []
    visited: set[str] = set()

    def unlisted(error: OSError) -> None:
        found.append((Path(error.filename or folder), f"cannot read folder: {error.strerror or error}"))

    for root, folders, names in os.walk(folder, followlinks=True, onerror=unlisted):
        real = os.path.realpath(root)
        if real in visited:
            folders.clear()
            continue
        visited.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith("."))  # sorted: which path reaches a folder first is stable
        found.extend(Path(root, name) for name in names if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found, key=lambda entry: entry[0] if isinstance(entry, tuple) else entry)


class InputImage(NamedTuple):
    """One input: its path and either its pixels (and a conversion note) or why it could not be read."""

    path: Path
    pixels: np.ndarray | None
    note: str | None
    error: str | None


def read_input(item: Path | tuple[Path, str]) -> InputImage:
    """Decode one file to (32, 32, 3) uint8 RGB as the CIFAKE loader does, or say why it cannot be."""
    from PIL import Image, UnidentifiedImageError

    from forgery.data import IMAGE_SIZE, MAX_FILE_BYTES, UNREADABLE_FILE_ERRORS, decode_image, has_16_bit_samples

    if isinstance(item, tuple):
        return InputImage(item[0], None, None, item[1])
    try:
        status = item.stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO or device would block the read forever
            return InputImage(item, None, None, "not a regular file")
        if status.st_size > MAX_FILE_BYTES:  # as the CIFAKE loader: no sane image is this big, and it would be read whole
            return InputImage(item, None, None, f"file of {status.st_size:,} bytes, over the {MAX_FILE_BYTES // 2**20} MiB an image may take; not read")
        data = item.read_bytes()
        decoded = decode_image(data)
        with Image.open(io.BytesIO(data)) as image:  # the header only: what the file was before decoding
            mode, (width, height) = image.mode, image.size
            if has_16_bit_samples(image):  # PIL opens a 16-bit RGB PNG as RGB
                mode = f"16-bit {mode}"
    except FileNotFoundError:
        return InputImage(item, None, None, "no such file")
    except UnidentifiedImageError:
        return InputImage(item, None, None, unaccepted(data))
    except UNREADABLE_FILE_ERRORS as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return InputImage(item, None, None, f"unreadable image: {reason}")
    notes = []
    if decoded.converted:
        notes.append(f"converted from {mode} to {'8-bit ' if mode.startswith('16-bit') else ''}RGB")
    if decoded.resized:
        notes.append(f"resized from {width}x{height} to {IMAGE_SIZE}x{IMAGE_SIZE} (Lanczos, antialiased)")
    return InputImage(item, decoded.pixels, "; ".join(notes) or None, None)


def unaccepted(data: bytes) -> str:
    """Why a file the decoder refused is not read: an image in a format outside IMAGE_FORMATS, or not an image."""
    from PIL import Image

    from forgery.data import IMAGE_FORMATS

    try:
        with Image.open(io.BytesIO(data)) as image:  # any format Pillow knows, header only: to name it
            found = image.format
    except Exception:  # Pillow raises many types for bytes that are no image
        return "not an image file (or a format Pillow cannot read)"
    return f"an image in {found} format, which predict does not read (it reads {', '.join(IMAGE_FORMATS)})"


def classify(
    model: keras.Model,
    temperature: float | None,
    files: list[Path | tuple[Path, str]],
    cut: GradcamModel | None,
    gradcam_dir: Path | None,
) -> Iterator[dict[str, Any]]:
    """Yield one JSON-ready dict per file, in order: a prediction, or `{"path", "error"}`."""
    from forgery.calibration import apply_temperature

    for start in range(0, len(files), BATCH):
        batch = [read_input(item) for item in files[start : start + BATCH]]
        readable = [position for position, entry in enumerate(batch) if entry.error is None]
        rows: dict[int, np.ndarray] = {}
        raw: dict[int, np.ndarray] = {}  # the model's own outputs, before temperature scaling
        if readable:
            probabilities = model.predict(np.stack([batch[position].pixels for position in readable]), batch_size=BATCH, verbose=0)
            raw = dict(zip(readable, probabilities))
            if temperature is not None:
                probabilities = apply_temperature(probabilities, temperature)
            rows = dict(zip(readable, probabilities))
        for position, entry in enumerate(batch):
            if entry.error is None and not np.all(np.isfinite(rows[position])):  # no label from a broken model's output
                entry = entry._replace(error=f"the model gave non-finite probabilities {rows[position].tolist()}; its weights are broken")
            elif entry.error is None and probability_problem(raw[position][None]):  # the load-time probe passed, this image did not
                entry = entry._replace(error=f"the model gave {raw[position].tolist()}, which are not probabilities")
            if entry.error is not None:
                yield {"path": str(entry.path), "error": entry.error}
                continue
            line = prediction_line(entry.path, rows[position], temperature is not None, entry.note)
            if cut is not None and gradcam_dir is not None:
                predicted = int(np.argmax(rows[position]))
                try:
                    line["gradcam"] = str(write_gradcam(cut, entry.pixels, predicted, gradcam_dir, start + position, entry.path))
                except OSError as error:  # a full disk or a name the folder refuses: this image's overlay, not the rest
                    line["gradcam_error"] = f"cannot write the Grad-CAM overlay: {error.strerror or error}"
            yield line


def prediction_line(path: Path, probabilities: np.ndarray, calibrated: bool, note: str | None) -> dict[str, Any]:
    """The JSON line of one classified image."""
    from forgery.data import CLASS_NAMES

    index = int(np.argmax(probabilities))
    line: dict[str, Any] = {
        "path": str(path),
        "label": CLASS_NAMES[index],
        "confidence": round(float(probabilities[index]), 6),
        "probabilities": {name: round(float(value), 6) for name, value in zip(CLASS_NAMES, probabilities)},
        "calibrated": calibrated,
    }
    if note:
        line["note"] = note
    return line


def write_gradcam(cut: GradcamModel, image: np.ndarray, class_index: int, folder: Path, number: int, source: Path) -> Path:
    """Save the Grad-CAM overlay of `class_index` for one image as <number>-<start of file stem>-gradcam-<class>.png."""
    from PIL import Image

    from forgery.data import CLASS_NAMES
    from forgery.gradcam import make_gradcam_heatmap, overlay

    heatmap = make_gradcam_heatmap(cut, image, class_index)
    # The running number keeps two inputs called a.jpg in different folders, or two long names that begin
    # alike, from overwriting each other.
    target = folder / f"{number:05d}-{shortened(source.stem, GRADCAM_STEM_BYTES)}-gradcam-{CLASS_NAMES[class_index].lower()}.png"
    Image.fromarray(overlay(image, heatmap, upscale=GRADCAM_UPSCALE, alpha=GRADCAM_ALPHA, grid=cut.grid)).save(target)
    return target


def shortened(name: str, limit: int) -> str:
    """`name` cut at a character boundary to at most `limit` bytes as the file system stores it."""
    name = name[:limit]
    while len(os.fsencode(name)) > limit:  # a character can take up to 4 bytes in UTF-8
        name = name[:-1]
    return name


def cli() -> None:
    """`python -m forgery.predict`: logs to stderr, JSON lines to stdout, the exit status from `main`."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        status = main(sys.argv[1:])
    except BrokenPipeError:
        # The reader left (`| head -1`): stop quietly, as a producer killed by SIGPIPE would. Python's documented
        # idiom: stdout now points at devnull, so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 128 + signal.SIGPIPE
    raise SystemExit(status)


if __name__ == "__main__":
    cli()
