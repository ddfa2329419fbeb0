"""Checks on the composed config that fail fast, before data or models are built, with one line naming the key."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def register_resolvers() -> None:
    """Make `${pid:}` known to OmegaConf: conf/train.yaml puts it in Hydra's run and sweep folder names.

    Hydra names a folder by the second a run starts, so two runs started in the same second would share
    one folder and overwrite each other's checkpoints and reports; the process id tells them apart. Cached,
    so a sweep's jobs (copies of the config, even in other processes) keep the folder their launcher made.
    """
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)


class ConfigError(Exception):
    """A wrong config value; the message is one line that names the key."""


# The validation metrics every epoch logs whose larger value is better: what early stopping may watch.
EARLY_STOPPING_METRICS = ("val_auc", "val_accuracy")


def validate(cfg: DictConfig, backend_checks: bool = True) -> None:
    """Raise ConfigError for the first missing, mistyped or impossible value in a training config.

    `backend_checks` False leaves out what depends on this process's Keras backend: a sweep's jobs may
    run elsewhere (a cluster node, `hydra.job.env_set`) with another, and each job checks it as it starts.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (data=cifake reads the Kaggle folder or zip from data.root=/path/to/cifake)" if "data.root" in missing else ""
        raise ConfigError(f"{missing[0]} is required but not set{hint}")
    _positive_int(cfg, "epochs")
    _positive_int(cfg, "batch_size")
    for key in ("seed", "data.seed"):  # data.seed (the validation split's) is ${seed} unless set apart
        if _present(cfg, key):  # data.seed=null would draw a new split on every load, a resume's too
            seed = _integer(cfg, key)
            if not 0 <= seed < 2**32:  # what NumPy's and Keras's seeding take
                raise ConfigError(f"{key} must be a whole number from 0 to 2**32 - 1, got {seed}")
    _positive_number(cfg, "optimizer.lr")
    if _present(cfg, "optimizer.name") and OmegaConf.select(cfg, "optimizer.name") not in OPTIMIZER_NAMES:  # before the data loads
        raise ConfigError(f"optimizer.name must be one of {', '.join(OPTIMIZER_NAMES)}, got {OmegaConf.select(cfg, 'optimizer.name')!r}")
    for key in ("data.train_per_class", "data.test_per_class"):  # only the demo data has them
        if _present(cfg, key):
            _positive_int(cfg, key)
    _check_data_paths(cfg)
    _check_architecture(cfg)
    if OmegaConf.select(cfg, "model.dropout") is not None:
        dropout = _number(cfg, "model.dropout")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout:g}")
    for key in ("schedule.warmup_epochs", "schedule.final_fraction"):  # only the cosine schedule has them
        if _present(cfg, key) and _number(cfg, key) < 0:
            raise ConfigError(f"{key} must be at least 0, got {_number(cfg, key):g}")
    if _present(cfg, "schedule.final_fraction") and _number(cfg, "schedule.final_fraction") > 1:  # above 1 the rate would rise after warm-up
        raise ConfigError(f"schedule.final_fraction must be at most 1 (the last step's rate as a share of optimizer.lr; the rate decays to it), got {_number(cfg, 'schedule.final_fraction'):g}")
    fraction = _number(cfg, "data.val_fraction")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    if _present(cfg, "data.train_fraction"):  # only CIFAKE has one
        kept = _number(cfg, "data.train_fraction")
        if not 0.0 < kept <= 1.0:
            raise ConfigError(f"data.train_fraction must be above 0 and at most 1, got {kept:g}")
    _check_ranges(cfg, OPTIMIZER_RANGES)
    if OmegaConf.select(cfg, "optimizer.nesterov") is not None and not isinstance(OmegaConf.select(cfg, "optimizer.nesterov"), bool):
        raise ConfigError(f"optimizer.nesterov must be true or false, got {OmegaConf.select(cfg, 'optimizer.nesterov')!r}")
    averaged = OmegaConf.select(cfg, "optimizer.use_ema", default=False)  # an older run's config has no such key
    if not isinstance(averaged, bool):
        raise ConfigError(f"optimizer.use_ema must be true or false, got {averaged!r}")
    if averaged:
        momentum = _number(cfg, "optimizer.ema_momentum")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"optimizer.ema_momentum must be in [0, 1), got {momentum:g}")
    experiment = OmegaConf.select(cfg, "tracking.experiment")
    if isinstance(experiment, (int, float)) and not isinstance(experiment, bool):  # Hydra reads tracking.experiment=2024 as a number
        raise ConfigError(f"tracking.experiment must be a name, and Hydra read {experiment!r} as a number; quote it: tracking.experiment=\"'{experiment}'\"")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment must be a non-empty name, got {experiment!r}")
    smoothing = _number(cfg, "label_smoothing")
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {smoothing:g}")
    _check_distillation(cfg)
    _check_cutmix(cfg)
    _check_sam(cfg)
    precision = OmegaConf.select(cfg, "precision")
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ConfigError(f"precision must be float32, mixed_float16 or mixed_bfloat16, got {precision!r}")
    tta = OmegaConf.select(cfg, "tta", default="none")  # an older run's config has no such key
    if tta not in ("none", "flip", "dihedral"):  # forgery.models.TEST_TIME_VIEWS, without importing Keras here
        raise ConfigError(f"tta must be none, flip or dihedral, got {tta!r}")
    for key in ("augment.fused", "augment.dihedral", "early_stopping.restore_best", "model.centre_colour", "model.highpass"):
        switch = OmegaConf.select(cfg, key, default=False)  # an older run's config has no such key
        if not isinstance(switch, bool):
            raise ConfigError(f"{key} must be true or false, got {switch!r}")
    flip = OmegaConf.select(cfg, "augment.flip", default=None)
    if flip not in FLIP_MODES:  # Keras's RandomFlip takes any text and then never flips
        raise ConfigError(f"augment.flip must be null, {', '.join(str(mode) for mode in FLIP_MODES[1:])}, got {flip!r}")
    _check_ranges(cfg, AUGMENT_RANGES)
    for key, largest in (("augment.shift_pixels", 8), ("augment.cutout_pixels", 16), ("augment.colour_shift", 64)):
        if OmegaConf.select(cfg, key) is not None:  # an older run's config has no such key
            value = _integer(cfg, key)
            if not 0 <= value <= largest:
                raise ConfigError(f"{key} must be a whole number from 0 to {largest}, got {value}")
    patience = OmegaConf.select(cfg, "early_stopping.patience")
    if patience is not None:
        _positive_int(cfg, "early_stopping.patience")
    watched = OmegaConf.select(cfg, "early_stopping.metric")
    if watched not in EARLY_STOPPING_METRICS:
        raise ConfigError(f"early_stopping.metric must be one of {', '.join(EARLY_STOPPING_METRICS)} (higher is better), got {watched!r}")
    check_sweep(cfg)
    for key in ("gradcam.upscale", "evidence.gradcam_checks_per_class"):
        _positive_int(cfg, key)
    if _integer(cfg, "evidence.robustness_images") < 0 or _integer(cfg, "evidence.robustness_images") == 1:
        # One image holds one class only: its ROC AUC, the robustness table's second column, is undefined.
        raise ConfigError(f"evidence.robustness_images must be 0 (all of the test split) or at least 2 (an image per class), got {_integer(cfg, 'evidence.robustness_images')}")
    alpha = _number(cfg, "gradcam.alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"gradcam.alpha must be in [0, 1], got {alpha:g}")
    validate_runtime(cfg, backend_checks)


def keras_backend_name() -> str:
    """The Keras backend a run will use, read where Keras reads it (KERAS_BACKEND, else keras.json), without importing Keras."""
    if "keras" in sys.modules:  # already started: its answer is the one that counts
        return str(sys.modules["keras"].backend.backend())
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):  # no file, or not a JSON object: Keras's default
        return "tensorflow"


def validate_runtime(cfg: DictConfig, backend_checks: bool = True) -> None:
    """The checks on what `resume=` lets a command line change (runtime.* and verbose): how a run executes."""
    _auto_or_int(cfg, "runtime.steps_per_execution", minimum=1)
    _auto_or_int(cfg, "runtime.intra_op_threads", minimum=0)
    _auto_or_int(cfg, "runtime.inter_op_threads", minimum=0)
    loop = OmegaConf.select(cfg, "runtime.loop", default="auto")  # an older run's config has none
    if loop not in RUNTIME_LOOPS:
        raise ConfigError(f"runtime.loop must be one of {', '.join(RUNTIME_LOOPS)}, got {loop!r}")
    backend = keras_backend_name() if backend_checks else None  # forgery.runtime checks again once Keras runs; here before any data loads
    if loop == "scan" and backend not in ("jax", None):
        raise ConfigError(f"runtime.loop=scan needs the jax backend (KERAS_BACKEND=jax), this run uses {backend}; use auto or fit")
    steps = OmegaConf.select(cfg, "runtime.steps_per_execution")
    if backend == "torch" and steps not in ("auto", 1):
        raise ConfigError(f"runtime.steps_per_execution must be 1 on the torch backend (Keras requires it), got {steps}; use auto")
    verbose = OmegaConf.select(cfg, "verbose")
    if verbose not in ("auto", 0, 1, 2):
        raise ConfigError(f"verbose must be auto, 0, 1 or 2, got {verbose!r}")


# (low, high, high included) for number options present only in some config groups. Outside these, Keras
# refuses a value only after the data has loaded, or, for the fused augmentation, silently does something
# else: a zoom of 1.5 draws scales from -0.5 to 2.5, mirroring and collapsing images.
AUGMENT_RANGES: dict[str, tuple[float, float, bool]] = {
    "augment.rotation": (0.0, 0.5, True),  # a fraction of a full turn: half a turn either way covers every angle
    "augment.zoom": (0.0, 1.0, False),  # scales 1 - zoom to 1 + zoom stay positive
    "augment.translation": (0.0, 1.0, False),  # a fraction of the image's side
    "augment.contrast": (0.0, 1.0, True),
}
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")  # forgery.optimizers.OPTIMIZERS's keys (config imports no Keras)
OPTIMIZER_RANGES: dict[str, tuple[float, float, bool]] = {
    "optimizer.momentum": (0.0, 1.0, False),
    "optimizer.weight_decay": (0.0, 1.0, True),
}


def _check_ranges(cfg: DictConfig, ranges: dict[str, tuple[float, float, bool]]) -> None:
    """Each key of `ranges` that the config has is a number from low to high (high included or not)."""
    for key, (low, high, high_included) in ranges.items():
        if OmegaConf.select(cfg, key) is None:
            continue
        value = _number(cfg, key)
        if not (low <= value <= high if high_included else low <= value < high):
            raise ConfigError(f"{key} must be in [{low:g}, {high:g}{']' if high_included else ')'}, got {value:g}")


# augment.flip's values: Keras's RandomFlip modes, or None for no flip.
FLIP_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")
RUNTIME_LOOPS = ("auto", "fit", "scan")  # forgery.runtime.LOOPS, without importing it here; a test ties the two
# The images' side in pixels (forgery.data.IMAGE_SIZE, without importing the data stage here; a test ties the two).
IMAGE_SIDE = 32
# A residual stage after the first halves the grid, so after the sixth a 32-pixel image is one pixel wide:
# Keras would still build a seventh (its strided convolutions pad), but it would only add weights.
RESNET_MAX_STAGES = 6


def _check_distillation(cfg: DictConfig) -> None:
    """distill.teacher is a run id or null; with a teacher, distill.weight is above 0 and below 0.5."""
    teacher = OmegaConf.select(cfg, "distill.teacher", default=None)  # an older run's config has no distill
    if teacher is None:
        return
    if not isinstance(teacher, str) or not teacher.strip():
        raise ConfigError(f"distill.teacher must be an MLflow run id (or null for no teacher), got {teacher!r}")
    weight = _number(cfg, "distill.weight")
    if not 0.0 < weight < 0.5:  # forgery.distill: the label keeps the larger share, so each target's class is its label
        raise ConfigError(f"distill.weight must be above 0 and below 0.5 (the label keeps the larger share of each target), got {weight:g}")


def _check_sam(cfg: DictConfig) -> None:
    """sam.rho at least 0; above 0, not with mixed_float16, whose loss scaling SAM's ascent cannot skip."""
    if OmegaConf.select(cfg, "sam") is None:  # an older run's config has no sam
        return
    rho = _number(cfg, "sam.rho")
    if rho < 0.0:
        raise ConfigError(f"sam.rho must be at least 0 (the radius of SAM's weight perturbation; 0 = off), got {rho:g}")
    if rho and OmegaConf.select(cfg, "precision") == "mixed_float16":
        # A scaled gradient that overflowed would move every weight to inf before the optimizer could skip the step.
        raise ConfigError("sam.rho does not combine with precision=mixed_float16 (its loss scaling); use float32 or mixed_bfloat16")


def _check_cutmix(cfg: DictConfig) -> None:
    """cutmix.prob in [0, 1]; when it is above 0, cutmix.alpha above 0."""
    if OmegaConf.select(cfg, "cutmix") is None:  # an older run's config has no cutmix
        return
    prob = _number(cfg, "cutmix.prob")
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"cutmix.prob must be in [0, 1] (the share of training images given a patch; 0 = off), got {prob:g}")
    if prob and _number(cfg, "cutmix.alpha") <= 0.0:
        raise ConfigError(f"cutmix.alpha must be above 0 (the patch's area share follows Beta(alpha, alpha)), got {_number(cfg, 'cutmix.alpha'):g}")


def _check_data_paths(cfg: DictConfig) -> None:
    """data.root (CIFAKE's) is a non-empty path; data.cache_dir one or null. Hydra reads data.root=2024 as a number."""
    for key, nullable in (("data.root", False), ("data.cache_dir", True)):
        if not _present(cfg, key):  # the demo data has neither
            continue
        value = OmegaConf.select(cfg, key)
        if value is None and nullable:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(f"{key} must be a path, and Hydra read {value!r} as a number; quote it: {key}=\"'{value}'\"")
        if not isinstance(value, str) or not value.strip():
            unset = " (is the variable in it set?)" if value == "" else ""
            raise ConfigError(f"{key} must be a path{' or null' if nullable else ''}, got {value!r}{unset}")


def _present(cfg: DictConfig, key: str) -> bool:
    """Whether the config has the key at all (a null value still counts: it is a value to refuse)."""
    return OmegaConf.select(cfg, key, default=KeyError) is not KeyError


def cnn_block_limit(padding: str, side: int = IMAGE_SIDE) -> int:
    """How many conv + pool blocks of forgery.models.cnn a side-by-side image survives."""
    blocks = 0
    while True:
        # a 3x3 'valid' convolution trims 2 pixels, then the block's pooling halves the grid
        side = (side - 2 if padding == "valid" else side) // 2
        if side < 1:
            return blocks
        blocks += 1


def _check_architecture(cfg: DictConfig) -> None:
    """Layer counts and widths a model can be built from, checked before data loads or a model is built."""
    if _present(cfg, "model.filters"):  # the plain CNNs
        filters = _count_list(cfg, "model.filters", "a non-empty list of whole numbers above 0, such as [32, 64, 128]")
        _positive_number(cfg, "model.width")
        padding = OmegaConf.select(cfg, "model.padding", default="valid")  # forgery.models.cnn's default
        if padding not in ("valid", "same"):
            raise ConfigError(f"model.padding must be valid or same, got {padding!r}")
        limit = cnn_block_limit(padding)
        if len(filters) > limit:
            other = " or model.padding=same" if padding == "valid" and len(filters) <= cnn_block_limit("same") else ""
            raise ConfigError(
                f"model.filters has {len(filters)} blocks, but with padding={padding} a {IMAGE_SIDE}-pixel image "
                f"is down to nothing after block {limit + 1}; use at most {limit} blocks{other}"
            )
    if _present(cfg, "model.widths"):  # the residual networks
        widths = _count_list(cfg, "model.widths", "a non-empty list of whole numbers above 0, such as [32, 64, 128]")
        if len(widths) > RESNET_MAX_STAGES:
            raise ConfigError(
                f"model.widths has {len(widths)} stages, but a {IMAGE_SIDE}-pixel image is one pixel wide after "
                f"{RESNET_MAX_STAGES} (each stage after the first halves it); use at most {RESNET_MAX_STAGES}"
            )
        blocks = _value(cfg, "model.blocks_per_stage")
        counts_wanted = "a whole number of at least 1, or one per stage such as [3, 3, 2]"
        if isinstance(blocks, int) and not isinstance(blocks, bool):
            if blocks < 1:
                raise ConfigError(f"model.blocks_per_stage must be {counts_wanted}, got {blocks}")
        else:
            counts = _count_list(cfg, "model.blocks_per_stage", counts_wanted)
            if len(counts) != len(widths):
                raise ConfigError(f"model.blocks_per_stage has {len(counts)} counts for {len(widths)} stages (model.widths); give one count, or one per stage")
        if _present(cfg, "model.towers"):
            _positive_int(cfg, "model.towers")
        if _present(cfg, "model.squeeze_excite") and _integer(cfg, "model.squeeze_excite") < 0:
            raise ConfigError(f"model.squeeze_excite must be 0 (off) or a reduction ratio of at least 1, got {_value(cfg, 'model.squeeze_excite')}")
        if _present(cfg, "model.spectrum_units") and _integer(cfg, "model.spectrum_units") < 0:
            raise ConfigError(f"model.spectrum_units must be 0 (no frequency branch) or more, got {_value(cfg, 'model.spectrum_units')}")
        if _present(cfg, "model.drop_path") and not 0.0 <= _number(cfg, "model.drop_path") < 1.0:
            raise ConfigError(f"model.drop_path must be from 0 (off) to below 1, got {_value(cfg, 'model.drop_path')}")
        if _present(cfg, "model.full_resolution_stages"):
            full = _integer(cfg, "model.full_resolution_stages")
            if not 1 <= full <= len(widths):
                raise ConfigError(f"model.full_resolution_stages must be from 1 to the {len(widths)} stages of model.widths, got {full}")


def _count_list(cfg: DictConfig, key: str, wanted: str) -> list[int]:
    """A non-empty list of whole numbers above zero, such as channel widths per layer; `wanted` says so in the error."""
    value = _value(cfg, key)
    if not OmegaConf.is_list(value) or not value or any(isinstance(item, bool) or not isinstance(item, int) or item < 1 for item in value):
        raise ConfigError(f"{key} must be {wanted}, got {_plain(value)!r}")
    return [int(item) for item in value]


def _plain(value: Any) -> Any:
    """A config value as plain Python, for messages."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _value(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key; a missing key is an error of its own."""
    value = OmegaConf.select(cfg, key, default=KeyError)
    if value is KeyError:
        raise ConfigError(f"{key} is missing from the config")
    return value


def _number(cfg: DictConfig, key: str) -> float:
    """A real number (bools excluded: YAML's true is not a learning rate)."""
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):  # nan passes every comparison check, and would reach training
        raise ConfigError(f"{key} must be a finite number, got {value}")
    return float(value)


def _positive_number(cfg: DictConfig, key: str) -> float:
    """A number above zero."""
    value = _number(cfg, key)
    if not value > 0:
        raise ConfigError(f"{key} must be greater than 0, got {value:g}")
    return value


def _integer(cfg: DictConfig, key: str) -> int:
    """A whole number."""
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return value


def _positive_int(cfg: DictConfig, key: str) -> int:
    """A whole number of at least 1."""
    value = _integer(cfg, key)
    if value < 1:
        raise ConfigError(f"{key} must be at least 1, got {value}")
    return value


def _auto_or_int(cfg: DictConfig, key: str, minimum: int) -> None:
    """`auto` or a whole number of at least `minimum`."""
    value = _value(cfg, key)
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be auto or a whole number of at least {minimum}, got {value!r}")


def override_error(config_dir: Path | None, config_name: str, overrides: list[str], check: Callable[[DictConfig], None] | None = None) -> str | None:
    """One line saying why Hydra would refuse these command-line overrides, or None when they compose.

    `config_dir` None composes from Hydra's config store only, as an entrypoint with config_path=None does.

    Composing here first turns Hydra's multi-line reports (unknown option, unknown key, bad value type)
    into one line. Each value of a sweep (`lr=1e-3,1e-4`) is tried on its own, and `check` (raising
    ConfigError) runs on each composed config: what Hydra itself reads before any job starts. An
    `interval(a, b)` that a sampling sweeper draws from is tried at both ends (just below b, which a
    real-valued draw never reaches), so a range with an impossible end is refused before the first trial.
    """
    from hydra import compose, initialize, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        return _unparsable(overrides, condense_hydra_error(str(error)))
    relabelled = next((item for item in parsed if item.key_or_group in LABEL_KEYS), None)
    if relabelled is not None:
        group = relabelled.key_or_group.split(".")[0]
        chosen = relabelled.input_line.split("=", 1)[1] if "=" in relabelled.input_line else "<option>"
        built = {"model": "network", "augment": "augmentation"}[group]
        return f"{relabelled.key_or_group} only names the chosen {group} file (the run would be recorded as {chosen}, its {built} unchanged); choose the {group} with {group}={chosen}"
    base = [item.input_line for item in parsed if not item.is_sweep_override()]
    context = initialize(version_base="1.3", config_path=None) if config_dir is None else initialize_config_dir(version_base="1.3", config_dir=str(config_dir))
    with context:
        try:
            try:  # the sweeper, and a preset's own search, of the sweep's first job
                sweeper = compose(config_name=config_name, overrides=_job(base, _command_line_sweeps(parsed)), return_hydra_config=True).hydra.sweeper
            except (HydraException, OmegaConfBaseException):
                sweeper = OmegaConf.create({})  # the first variant below reports why it does not compose
            optuna = "optuna" in str(OmegaConf.select(sweeper, "_target_", default=""))
            for key in ("n_trials", "n_jobs") if optuna else ():  # Optuna fails on 0 trials with a traceback, after the sweep's parent run opened
                value = OmegaConf.select(sweeper, key)
                if not _is_count(value):
                    return f"hydra.sweeper.{key} must be a whole number of at least 1, got {value!r}"
            command_line = _command_line_sweeps(parsed, optuna)
            preset = _preset_sweeps(sweeper, {item.key_or_group for item in parsed}, optuna)
        except ConfigError as error:
            return str(error)
        # Each checked config is one of the sweep's jobs: one swept value, every other command-line sweep
        # at its first value; a preset's value with the command line's first job (its other keys at their
        # defaults, so a refusal names the key at fault).
        variants = [(_job(base, command_line, (key, value)), origin) for key, (values, origin) in command_line.items() for value in values] or [(base, "")]
        variants += [([*_job(base, command_line), f"{key}={value}"], origin) for key, (values, origin) in preset.items() for value in values]
        for variant, origin in variants:
            try:
                composed = compose(config_name=config_name, overrides=variant)
                if check is not None:
                    check(composed)
            except (HydraException, OmegaConfBaseException) as error:
                return _explained(origin, _with_owner(config_dir, condense_hydra_error(str(error)), variant, {*command_line, *preset}))
            except ConfigError as error:
                return _explained(origin, str(error))
        # `+key=value` adds a key; one the config lacks is read by nothing, so a misspelt `+foo.lrate` would vanish.
        added = [item.key_or_group for item in parsed if item.type.name in ("ADD", "FORCE_ADD") and not item.key_or_group.startswith("hydra") and "/" not in item.key_or_group]
        added = [key for key in added if config_dir is None or not (config_dir / key).is_dir()]  # +group=option adds a read config
        if added:
            try:
                plain = compose(config_name=config_name, overrides=[line for line in base if not line.startswith("+")])
            except (HydraException, OmegaConfBaseException) as error:
                return condense_hydra_error(str(error))
            for key in added:
                if not _has_key(plain, key) and not _taken_by_target(plain, key):
                    return f"+{key} adds a key that nothing reads; check the spelling (the same command with --cfg job lists every key)"
    return None


# Each option file's own name, recorded as the run's model and augmentation; what they build is set by the rest of the file.
LABEL_KEYS = ("model.name", "augment.name")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


Sweeps = dict[str, tuple[list[str], str]]  # override key (with any + prefix) -> (values to check, where they came from)


def _unparsable(overrides: list[str], problem: str) -> str:
    """Hydra's parse error, naming the override at fault and how to quote a value Hydra's grammar reads as syntax.

    A path such as `archive (1).zip` or `a=b` is a plain value to the shell but not to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if "cannot read '~'" in problem:  # its own hint says what to write instead
        return problem
    problem = re.sub(r"\s*See https://\S+ for details\.?", "", problem)
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException:
            key, _, value = override.partition("=")
            quoting = f"; to give it as text, quote it: {key}=\"'{value}'\"" if value and "'" not in value else ""
            return f"{override!r} cannot be read: {problem}{quoting}"
    return problem


def sweep_without_multirun(overrides: list[str], remedy: str = "add -m to run one job each") -> str | None:
    """Why an override that holds several values (`epochs=1,2`, `range(1,3)`) needs -m (or, printing a config, one value), or None when none does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None  # override_error names the override at fault
    swept = next((item for item in parsed if item.is_sweep_override()), None)
    if swept is None:
        return None
    key, _, value = swept.input_line.partition("=")
    return f"{swept.input_line} gives several values, a sweep: {remedy}, or quote it to give the text itself: {key}=\"'{value}'\""


HELP_FLAGS = ("--help", "-h", "--hydra-help")


def help_error(config_dir: Path | None, config_name: str, arguments: list[str]) -> str | None:
    """For a --help command with overrides, why Hydra could not compose the config it prints, in one line (Hydra gave a traceback); else None."""
    if not any(argument in HELP_FLAGS for argument in arguments):
        return None
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    if not overrides:
        return None
    return sweep_without_multirun(overrides, "--help prints one config, so give one value") or override_error(config_dir, config_name, overrides)


def _command_line_sweeps(parsed: list[Any], optuna: bool = False) -> Sweeps:
    """The command line's sweeps: each key's values to check, first value first."""
    swept: Sweeps = {}
    for item in parsed:
        values = _sweep_values(item, optuna) if item.is_sweep_override() else []
        if values:
            prefix = {"ADD": "+", "FORCE_ADD": "++"}.get(item.type.name, "")
            swept[f"{prefix}{item.key_or_group}"] = (values, _origin(item, ""))
    return swept


def _preset_sweeps(sweeper: DictConfig, given: set[str], optuna: bool) -> Sweeps:
    """A preset's own search (hydra.sweeper.params: experiment=lr_sweep, hparams_search=optuna), less the keys the command line sets."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    swept: Sweeps = {}
    for key, value in (OmegaConf.select(sweeper, "params", default=None) or {}).items():
        if key in given:
            continue
        try:
            item = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        except HydraException as error:
            raise ConfigError(f"hydra.sweeper.params.{key}: {condense_hydra_error(str(error))}") from None
        values = _sweep_values(item, optuna) if item.is_sweep_override() else [item.get_value_element_as_str()]
        if values:
            swept[key] = (values, _origin(item, f"the preset's search (hydra.sweeper.params) sweeps {key}={value}, but "))
    return swept


def _job(base: list[str], swept: Sweeps, chosen: tuple[str, str] | None = None) -> list[str]:
    """The overrides of one job: `base`, each sweep at its first value, except `chosen` (key, value)."""
    picks = {key: values[0] for key, (values, _) in swept.items()}
    if chosen is not None:
        picks[chosen[0]] = chosen[1]
    return [*base, *(f"{key}={value}" for key, value in picks.items())]


def _origin(item: Any, preset: str) -> str:
    """What to say before a sweep value's problem: which preset swept it; an interval of real numbers, for a whole-number key."""
    value = item.value() if item.is_interval_sweep() else None
    if value is not None and not (isinstance(value.start, int) and isinstance(value.end, int)):
        return f"{preset}{REAL_INTERVAL}"
    return preset


# Marks a variant drawn from a real-valued interval; replaced by a hint when a whole number was wanted.
REAL_INTERVAL = "\x00real-interval\x00"


def _explained(origin: str, problem: str) -> str:
    """`problem` after where its value came from; a real-valued interval for a whole-number key is said to be one."""
    if REAL_INTERVAL not in origin:
        return f"{origin}{problem}"
    hint = ": interval(a, b) draws real numbers; int(interval(a, b)) draws whole ones" if "must be a whole number" in problem else ""
    return f"{origin.replace(REAL_INTERVAL, '')}{problem}{hint}"


def _sweep_values(item: Any, optuna: bool) -> list[str]:
    """The values to check of one sweep override: each listed value, or a sampled range's lowest and highest.

    Optuna's plugin draws a range's stop too (Hydra's own sweeper stops before it), and a whole-number
    interval, `int(interval(a, b))`, from a to b inclusive; a real one from a to just below b.
    """
    from hydra.core.override_parser.types import Glob

    value = item.value()
    if isinstance(value, Glob):
        return []  # the config groups' options it matches: Hydra checks those names itself
    if item.is_interval_sweep():
        if isinstance(value.start, int) and isinstance(value.end, int):
            return [str(value.start), str(value.end)]
        return [repr(end) for end in interval_ends(value)]
    values = list(item.sweep_string_iterator())
    if optuna and item.is_range_sweep() and (value.stop - value.start) % value.step == 0:
        values.append(str(value.stop))
    return values


def interval_ends(interval: Any) -> list[float]:
    """The lowest and highest value a sampler may draw from Hydra's real-valued `interval(start, end)`: start, and just below end."""
    start, end = float(interval.start), float(interval.end)
    return [start, math.nextafter(end, start)] if end > start else [start]


_ABSENT = object()


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (dotted) is in `cfg`, its value unread: set, still ??? (missing), or an interpolation only a run resolves."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_resolution_failure=False) if parent else cfg
    return isinstance(node, DictConfig) and name in node.keys()


def _taken_by_target(cfg: DictConfig, key: str) -> bool:
    """Whether the `_target_` of `key`'s parent node accepts it: `+optimizer.clipnorm` reaches the Keras optimizer."""
    import inspect

    from hydra.utils import get_method

    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else None
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        return False  # a plain node: only forgery's own code reads it, and it reads no such key
    from forgery.runtime import quiet_native_startup

    try:
        with quiet_native_startup():  # the target's module may import Keras, whose start-up is chatty
            parameters = inspect.signature(get_method(str(target))).parameters
    except Exception:  # the run itself will say what is wrong with the target
        return True
    return name in parameters or any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())


def _with_owner(config_dir: Path | None, problem: str, overrides: list[str] | None = None, swept: set[str] | frozenset[str] = frozenset()) -> str:
    """`problem`, or for an unknown `group.key` that another option of the group has, which option to choose (data.root: data=cifake).

    `overrides` are the checked job's: where they choose the group's option themselves, the message names
    it (as one of the sweep's jobs where `swept`, the swept keys, holds the group) rather than saying the
    command chooses none.
    """
    unknown = re.match(r"unknown config key '([^'.]+)\.([^']+)'", problem)
    if config_dir is None or unknown is None or not (config_dir / unknown.group(1)).is_dir():
        return problem
    group, key = unknown.groups()
    owners = [
        f"{group}={path.stem}"
        for path in sorted((config_dir / group).glob("*.yaml"))
        if not path.read_text().startswith("# @package _global_") and _has_key(OmegaConf.load(path), key)  # a preset sets top-level keys
    ]
    if not owners:
        return problem
    choice = owners[0] if len(owners) == 1 else f"one of {', '.join(owners)}"
    named = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
    chosen = [line.lstrip("+~") for line in overrides or [] if line.lstrip("+~").split("=", 1)[0] == group]
    if chosen and group in swept:
        return f"config key '{group}.{key}' is not in {chosen[-1]}, one of this sweep's jobs; it belongs to {named}: sweep only {'it' if len(owners) == 1 else 'those'}"
    if chosen:
        return f"config key '{group}.{key}' is not in {chosen[-1]}; it belongs to {named}: choose {choice}"
    return f"config key '{group}.{key}' belongs to {named}, which this command does not choose; add {choice}"


def check_sweep(cfg: DictConfig) -> None:
    """Raise ConfigError for sweep settings a multirun's callback would refuse (in a multi-line Hydra report)."""
    mode = OmegaConf.select(cfg, "sweep.mode")
    if mode not in ("max", "min"):
        raise ConfigError(f"sweep.mode must be max or min, got {mode!r}")
    metric = OmegaConf.select(cfg, "sweep.metric")
    if isinstance(metric, str) and metric.startswith("test_"):  # choosing by test makes the test figures a tuned number
        raise ConfigError(f"sweep.metric must be a validation metric such as evaluated_val_auc, not {metric}: the test split only reports on the chosen run")


def condense_hydra_error(message: str) -> str:
    """Hydra's multi-line error text -> one line that keeps the key and the available options."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "invalid command-line override"
    home = re.search(r"(\S+?)=~", lines[0])
    if home and "LexerNoViableAltException" in lines[0]:  # the shell leaves ~ after key= alone, and Hydra cannot parse it
        return f"{home.group(1)}: Hydra cannot read '~' in a value; write $HOME instead ({home.group(1)}=$HOME/...)"
    missing = re.search(r"Could not find '([^']+)/([^']*)'", lines[0])
    if missing:
        group, option = missing.groups()
        options = _listed_after(lines, f"Available options in '{group}':")
        choices = f"; choose from: {', '.join(options)}" if options else ""
        return f"{group}= needs an option{choices}" if not option else f"unknown {group} option {option!r}{choices}"
    unknown_key = re.search(r"Could not override '([^']+)'", lines[0])
    if unknown_key:
        return f"unknown config key {unknown_key.group(1)!r} (check the spelling; the same command with --cfg job lists every key)"
    full_key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    detail = next((line for line in lines[1:] if not line.startswith(("full_key:", "object_type", "Set the environment"))), "")
    summary = f"{lines[0]} {detail}".strip() if detail and detail != lines[0] else lines[0]
    return f"{full_key}: {summary}" if full_key else summary


def _listed_after(lines: list[str], header: str) -> list[str]:
    """The tab-indented list Hydra prints under `header` (now stripped), up to the next header line."""
    if header not in lines:
        return []
    items: list[str] = []
    for line in lines[lines.index(header) + 1 :]:
        if line.endswith(":") or " " in line:
            break
        items.append(line)
    return items
