"""Entrypoint: `python -m forgery.train [overrides]` trains, evaluates, explains and logs one run to MLflow.

Stages run in this order: validate the config (instant, before heavy imports), load data, build the
model, open the MLflow run, fit, evaluate on the test split, Grad-CAM, write the report, log it all.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from forgery import runtime, sweep

from forgery.config import ConfigError, check_sweep, help_error, override_error, register_resolvers, sweep_without_multirun, validate, validate_runtime
from forgery.data import CLASS_NAMES, DataError, describe_counts, fingerprint, validation_fingerprint
from forgery.tracking import TrackingLost, TrackingUnavailable

log = logging.getLogger(__name__)
register_resolvers()  # before Hydra composes conf/train.yaml, whose folder names use ${pid:}

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
# The code that trains: its git commit is what a run records (the working folder may be another repository).
SOURCE_DIR = Path(__file__).resolve().parent
# Validation only infers, so its batch size changes no number, only how many calls it takes.
VALIDATION_BATCH_SIZE = 256
CUTMIX_STREAM = 1  # keeps CutMix's draws apart from the epoch's permutation, which is drawn from (seed, epoch)
# What `resume=` lets a command line change: how this machine runs the rest, never what is trained.
RESUMABLE_OVERRIDES = ("runtime.", "verbose")
USER_ERRORS = (ConfigError, DataError, TrackingUnavailable)  # the user's to fix: one line, never a traceback
# What a failed sweep job returns: the worst score for a sweeper that maximises (Optuna's plugin must;
# a nan makes it raise and end the whole study). MLflow ranks by the logged metric, so nothing else reads it.
FAILED_JOB_SCORE = float("-inf")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entrypoint: a user error becomes one `error:` line and exit code 2, never a traceback."""
    from forgery import interrupts

    try:
        with interrupts.handled():  # from the start: a Ctrl-C that Python drops while the data loads is still acted on
            return objective(train(cfg))
    except sweep.SweepStopped as stopped:  # not a failure of this job: no run of its own, none recorded
        print(f"error: {stopped}", file=sys.stderr)
        return FAILED_JOB_SCORE  # not an exit: a worker pool would kill the jobs still running with it
    except TrackingLost as error:
        print(error, file=sys.stderr)
        if sweep.parent_run_id() is not None:
            return objective(error.score)  # the run itself is done and on disk: the sweeper gets what it reached
        raise SystemExit(1) from None
    except Exception as error:
        # Hydra's instantiate wraps what a factory raised; a user error inside stays a one-liner.
        user_error = error if isinstance(error, USER_ERRORS) else error.__cause__
        is_user_error = isinstance(user_error, USER_ERRORS)
        if sweep.parent_run_id() is not None:
            # In a sweep one bad job must not stop the others: record it, report it, move on.
            log.error("job %s failed: %s", HydraConfig.get().job.num, user_error if is_user_error else repr(error))
            sweep.record_job_failure(cfg.tracking.experiment, user_error if is_user_error else error)
            return FAILED_JOB_SCORE
        if is_user_error:
            fail(str(user_error))
        if isinstance(error, NumericalError):
            fail(str(error), status=1)  # the run is already FAILED in MLflow with this reason
        raise


def objective(score: float) -> float:
    """What a job returns to the sweeper: its score, or FAILED_JOB_SCORE for none (a one-class validation split's AUC)."""
    return FAILED_JOB_SCORE if math.isnan(score) else score


def cli() -> None:
    """`python -m forgery.train`: refuse bad overrides in one line, then hand over to Hydra."""
    arguments = sys.argv[1:]
    printing = printed_config_overrides(arguments)
    if printing is not None:  # --cfg: Hydra prints the config; say first what a run with it would refuse
        if any(argument in ("-m", "--multirun") for argument in arguments):
            fail("--cfg prints the config instead of running, so it cannot go with -m; drop one of them")
        problem = sweep_without_multirun(printing, "--cfg prints one config, so give one value")
        if problem:
            fail(problem)
        problem = override_error(CONFIG_DIR, "train", printing, check=validate_printed)
        if problem and override_error(CONFIG_DIR, "train", printing):  # Hydra could not compose it: nothing to print
            fail(problem)
        warning = f"a run with this config would stop with: {problem}" if problem else printed_resume_warning(printing)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    elif help_error(CONFIG_DIR, "train", arguments):
        fail(help_error(CONFIG_DIR, "train", arguments))
    # Other flags (--config-dir, ...) change what Hydra does; only plain runs are pre-checked.
    elif all(not argument.startswith("-") or argument in ("-m", "--multirun") for argument in arguments):
        if re.search(r"=\s*(tag\(.*)?interval\(", " ".join(arguments)) and not any(argument.startswith(("hparams_search=", "hydra/sweeper=")) for argument in arguments):
            fail("interval(...) needs a sweeper that samples ranges: add hparams_search=optuna (the default sweeper takes lists such as optimizer.lr=1e-3,3e-4)")
        # The sweep callback is built for single runs too, so its settings are checked for both. A sweep's
        # jobs each get every check their run would make, so a bad value in a list is refused now, not
        # when its job's turn comes hours later (a single run makes them at once anyway).
        multirun = any(argument in ("-m", "--multirun") for argument in arguments)
        overrides = [argument for argument in arguments if not argument.startswith("-")]
        if multirun and any(argument.lstrip("+").startswith("resume=") for argument in overrides):
            # -m would open a new parent run and file the resumed run under it, out of its own sweep.
            fail("resume= continues one run where it stopped, in its own sweep if it had one: drop -m (one resume per command)")
        problem = None if multirun else sweep_without_multirun(overrides)
        problem = problem or override_error(CONFIG_DIR, "train", overrides, check=validate_sweep_job if multirun else check_sweep)
        problem = problem or output_folder_error(arguments)
        if problem:
            fail(problem)
    try:
        main()
    except KeyboardInterrupt:  # before a run opened (checking overrides, loading data, starting Keras); after, train() handles it
        from forgery import interrupts

        print("interrupted: stopped before the run started; nothing was recorded", file=sys.stderr)
        raise SystemExit(interrupts.exit_status()) from None


def printed_resume_warning(overrides: list[str]) -> str | None:
    """What `--cfg` with resume= must add: why a run would refuse it, or that it runs the saved config instead."""
    from hydra import compose, initialize_config_dir

    resumes = [value for key, _, value in (override.partition("=") for override in overrides) if key == "resume"]
    if not resumes:
        return None
    run_id = resumes[-1].strip()
    try:
        if not run_id:
            raise ConfigError("resume= needs a run id (resume=<run id>, as the interrupted run printed it)")
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            current = compose(config_name="train", overrides=overrides)
        cfg, _ = resumable_run(run_id, current, overrides)
    except ConfigError as error:
        return f"a run with this config would stop with: {error}"
    return f"resume={run_id} goes on with the run's own saved config, not the one printed: {Path(cfg.output_dir) / 'config' / 'resolved.yaml'}"


def output_folder_error(arguments: list[str]) -> str | None:
    """Why the output folder a command line names (hydra.run.dir= / hydra.sweep.dir=) cannot be made, or None.

    Made here, as Hydra would a moment later (all other checks have passed), so a path that is a file or
    lies where nothing can be written is one line instead of Hydra's traceback. Values with `${...}`
    are left to Hydra.
    """
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        folder = Path(value)
        if folder.exists() and not folder.is_dir():
            return f"{key}={value} names a file, not a folder"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"{key}={value}: the folder cannot be made ({error.strerror or error})"
    return None


# Hydra's flags for printing the config instead of running, and whether each takes a value.
PRINT_FLAGS = {"--cfg": True, "-c": True, "--package": True, "-p": True, "--resolve": False}


def printed_config_overrides(arguments: list[str]) -> list[str] | None:
    """The overrides of a `--cfg` command (which prints the config instead of running), or None for any other command."""
    if not any(argument in ("--cfg", "-c") or argument.startswith("--cfg=") for argument in arguments):
        return None
    overrides, rest = [], iter(arguments)
    for argument in rest:
        if argument in PRINT_FLAGS:
            if PRINT_FLAGS[argument]:
                next(rest, None)
        elif argument.startswith(("--cfg=", "--package=")) or argument in ("-m", "--multirun"):
            continue
        elif argument.startswith("-"):
            return None  # a flag Hydra handles its own way (--info, --config-dir ...)
        else:
            overrides.append(argument)
    return overrides


def validate_printed(cfg: DictConfig, backend_checks: bool = True) -> None:
    """`validate` for a config composed outside a run, whose output folder Hydra has not chosen yet."""
    with open_dict(cfg):
        cfg.output_dir = "<hydra's output folder>"
    validate(cfg, backend_checks)
    check_sweep(cfg)
    root = OmegaConf.select(cfg, "data.root", default=None)
    if backend_checks and root is not None:  # a sweep's job may run on a node that has the path; this machine may not
        from forgery.data import root_problem

        problem = root_problem(Path(root).expanduser().absolute())  # as load_cifake reads it
        if problem:
            raise ConfigError(problem)


def validate_sweep_job(cfg: DictConfig) -> None:
    """`validate_printed` for one job of a sweep: all but the backend's checks, as the job may run elsewhere."""
    validate_printed(cfg, backend_checks=False)


def fail(message: str, status: int = 2) -> None:
    """Print one `error:` line and exit with `status` (2: the input was wrong, 1: the run failed)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def train(cfg: DictConfig) -> float:
    """Run one experiment end to end (or resume one) and return the evaluated epoch's validation ROC AUC, what a sweeper maximises."""
    from forgery import checkpoints, tracking

    resume_id = cfg.get("resume")
    if resume_id is not None and not str(resume_id).strip():  # `resume=$RUN` with RUN unset: not a new run
        raise ConfigError("resume= needs a run id (resume=<run id>, as the interrupted run printed it)")
    refuse_sweep_without_multirun()
    tracking.check_reachable()  # a dead tracking server stops the run now, not after an hour of training
    sweep.check_parent_running(sweep.parent_run_id())  # a job still starting when its sweep was stopped
    given = cfg
    cfg, state = starting_point(given, resume_id)
    output_dir = Path(cfg.output_dir)
    try:
        claim = checkpoints.claim(output_dir)
    except checkpoints.FolderBusy as busy:
        if resume_id:
            raise ConfigError(f"resume: run {resume_id} is still running (process {busy.holder} holds {output_dir}); stop it first, or let it finish") from None
        raise ConfigError(
            f"output folder {output_dir} is in use by another training (process {busy.holder}); choose a new hydra.run.dir (hydra.sweep.dir in a sweep)"
        ) from None
    try:
        # Checked again now that no other process can change them: a holder that ended between the first
        # look and the claim may have finished the run or left its checkpoint in this folder.
        cfg, state = starting_point(given, resume_id)
        return run_claimed(cfg, state, resume_id)
    finally:
        claim.close()


def finished_offline(output_dir: Path) -> bool:
    """Whether the run journalled in `output_dir` ended FINISHED in its last attempt (the store lost on the way)."""
    from forgery import tracking

    try:
        entries, _ = tracking.read_journal(output_dir / tracking.JOURNAL_FILE)
    except (OSError, tracking.JournalDamaged):  # none, or unreadable: the checks after this one judge the run
        return False
    end = tracking.last_attempt_end(entries)
    return end is not None and end.get("status") == "FINISHED"


def starting_point(cfg: DictConfig, resume_id: str | None) -> tuple[DictConfig, Any]:
    """The config to run and the checkpoint state to start from, or a one-line ConfigError saying why not."""
    from forgery import checkpoints, tracking

    if resume_id:
        cfg, state = resumable_run(str(resume_id), cfg, command_line_overrides())
    else:
        validate(cfg)
        problem = used_output_dir(Path(cfg.output_dir))
        if problem:
            raise ConfigError(problem)
        state = checkpoints.CheckpointState()
    tracking.check_experiment(cfg.tracking.experiment)
    return cfg, state


def run_claimed(cfg: DictConfig, state: Any, resume_id: str | None) -> float:
    """The run itself, once `train` has checked its config and holds its output folder."""
    from hydra.utils import instantiate

    from forgery import checkpoints, distill, interrupts, tracking

    teacher = OmegaConf.select(cfg, "distill.teacher", default=None)  # an older run's config has no distill
    if teacher:
        # Checked before data loads: a wrong teacher is the user's to fix, in a second.
        teacher_run = tracking.get_run(str(teacher)) if tracking.store_exists() else None  # looking would create an empty store
        data_params = tracking.flatten_params({"data": OmegaConf.to_container(cfg.data, resolve=True)})
        distill.check_teacher(str(teacher), teacher_run, data_params, tracking.tracking_uri())
    output_dir = Path(cfg.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    started = time.perf_counter()
    dataset = instantiate(cfg.data)  # before importing Keras, so a data error shows in a second, not ten
    log.info("data %s: %s (%.1f s)", dataset.name, json.dumps(dataset.counts()), time.perf_counter() - started)
    for issue, count in dataset.issues.items():
        if count:
            log.warning("data: %d %s (see the loader's warnings above)", count, issue.replace("_", " "))
    data_record = {"fingerprint": fingerprint(dataset), "counts": describe_counts(dataset), "issues": dict(dataset.issues)}
    validation = validation_fingerprint(dataset)
    if teacher:  # the settings matched (checked above); the images themselves must too
        note = distill.check_teacher_validation(str(teacher), teacher_run["params"], validation)
        if note:
            log.warning(note)
    if resume_id:
        check_same_data(checkpoint_dir, data_record, str(resume_id))
    else:
        checkpoints.write_data_record(checkpoint_dir, data_record)

    with runtime.quiet_native_startup():
        import keras

        from forgery import models

        loop = OmegaConf.select(cfg, "runtime.loop", default="auto")  # a run from before the setting has none
        execution = runtime.configure(cfg.runtime.steps_per_execution, cfg.runtime.intra_op_threads, cfg.runtime.inter_op_threads, cfg.batch_size, loop)
        keras.ops.zeros(1)  # the first op initialises the backend's devices, which is chatty too
        # Under JAX or PyTorch this seeds TensorFlow too when it is installed, which starts it: chatty as well.
        keras.utils.set_random_seed(cfg.seed)
    log.info(execution.describe())

    keras.mixed_precision.set_global_policy(cfg.precision)
    if resume_id:
        model = restored_model(checkpoint_dir, cfg, execution.steps_per_execution)
    else:
        model = build_model(cfg, len(dataset.train), steps_per_execution=execution.steps_per_execution)
        (output_dir / "config").mkdir(parents=True, exist_ok=True)
        (output_dir / "config" / "resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # what resume reads
    targets, agreement = teacher_targets(str(teacher), dataset.train, float(cfg.distill.weight)) if teacher else (None, None)
    tags = {
        **tracking.git_tags(SOURCE_DIR),
        "hydra_output_dir": str(output_dir.resolve()),
        "command_line": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": cfg.model.name,
        "data": dataset.name,
        **sweep.job_tags(),
    }
    interrupts.raise_if_requested()  # a Ctrl-C dropped while data loaded or Keras started: stop before a run opens
    run_id = resume_id
    tracker = tracking.Tracker(output_dir / tracking.JOURNAL_FILE)
    try:
        with interrupts.handled(), tracker.run(cfg.tracking.experiment, cfg.tracking.run_name, tags, run_id=resume_id) as run_id:
            log.info("MLflow run %s in experiment %r%s", run_id, cfg.tracking.experiment, f", resuming after epoch {state.epoch}" if resume_id else "")
            if not resume_id:
                tracker.params({**tracking.flatten_params(OmegaConf.to_container(cfg, resolve=True)), "data_fingerprint": data_record["fingerprint"], distill.VALIDATION_PARAM: validation})
                tracker.metrics({f"data_{issue}": count for issue, count in dataset.issues.items()})
            if teacher:
                tracker.metrics({"distill_teacher_label_agreement": agreement})
            history = fit(model, dataset, cfg, state, checkpoint_dir, log_epoch=tracker.metrics, targets=targets)
            # From here on no batch callback looks for a dropped Ctrl-C, so each stage does.
            interrupts.raise_if_requested()
            result = evaluate_and_explain(model, dataset, history, cfg)
            tracker.metrics({**result["headline"], **result["evidence_metrics"]})
            interrupts.raise_if_requested()
            write_outputs(output_dir, result, cfg.gradcam.upscale, cfg.gradcam.alpha)
            interrupts.raise_if_requested()
            for folder in ("report", "plots", "config"):
                tracker.folder(output_dir / folder, folder)
            examples = dataset.test.images[:2]  # the signature: uint8 (N, 32, 32, 3) raw pixels, 0-255
            # The evaluated weights (the best epoch's when early stopping restored them), saved for forgery.upload;
            # as the inference graph, Keras's own layers only (a frequency branch aside), so it loads without forgery.
            served = models.tta_view(models.inference_graph(model), cfg.get("tta", "none"))
            model_path = output_dir / "model" / "model.keras"
            model_path.parent.mkdir(parents=True, exist_ok=True)
            served.save(model_path)
            tracker.model(served, model_path, examples, served.predict(examples, verbose=0))
            interrupts.raise_if_requested()  # a Ctrl-C Python dropped in the last stage still ends the run KILLED, as asked
            headline = result["headline"]
            log.info("test accuracy %.4f, ROC AUC %.4f; run %s. Browse with: mlflow ui", headline["test_accuracy"], headline["test_roc_auc"], run_id)
    except KeyboardInterrupt:
        for line in interrupted_lines(run_id, checkpoint_dir):
            print(line, file=sys.stderr)
        raise SystemExit(interrupts.exit_status()) from None
    if tracker.lost:
        raise TrackingLost(
            f"error: an MLflow call failed during the run ({tracker.lost}); the store's copy of run {run_id} is incomplete\n"
            f"the run's outputs are in {output_dir}; when the store is back or fixed, upload them with:\n"
            f"  python -m forgery.upload {output_dir}",
            score=float(result["headline"]["evaluated_val_auc"]),
        )
    return float(result["headline"]["evaluated_val_auc"])


def build_model(cfg: DictConfig, train_images: int, metrics: list[Any] | None = None, steps_per_execution: int = 1) -> Any:
    """The configured model compiled with its optimizer, schedule and loss; `metrics` default to a run's."""
    import keras
    from hydra.utils import instantiate

    model = instantiate(cfg.model, augmentation=instantiate(cfg.augment))
    steps_per_epoch = -(-train_images // cfg.batch_size)
    if cfg.optimizer.get("use_ema"):
        warning = averaging_span_warning(float(cfg.optimizer.ema_momentum), steps_per_epoch)
        if warning:
            log.warning(warning)
    warmup = OmegaConf.select(cfg, "schedule.warmup_epochs")  # only the cosine schedule has one
    if warmup is not None and float(warmup) >= cfg.epochs:
        log.warning("schedule.warmup_epochs=%g covers the whole run of %d epochs: the rate only rises and never decays; lower it below epochs", float(warmup), cfg.epochs)
    learning_rate = instantiate(cfg.schedule, lr=cfg.optimizer.lr, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
    model.compile(
        optimizer=instantiate(cfg.optimizer, lr=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=run_metrics() if metrics is None else metrics,
        steps_per_execution=steps_per_execution,
    )
    sharpness_aware(model, cfg)
    return model


def check_same_data(checkpoint_dir: Path, now: dict[str, Any], run_id: str) -> None:
    """A one-line ConfigError unless the data loaded now is what the interrupted run trained on.

    Other files would draw another validation split from another training set: images the run
    trained on could then be scored as validation, and its metrics would not be an uninterrupted run's.
    """
    from forgery import checkpoints, tracking

    try:
        started = checkpoints.read_data_record(checkpoint_dir)
    except checkpoints.DamagedCheckpoint as error:
        raise ConfigError(f"resume: run {run_id}'s data record {error}; it cannot resume (start a new run)") from None
    if started is None:  # the record removed, or a run from before it: the fingerprint the run logged, if it did
        run = tracking.get_run(run_id)
        logged = run["params"].get("data_fingerprint") if run else None
        if logged is None or logged == now["fingerprint"]:
            return
        raise ConfigError(
            f"resume: the data is not what run {run_id} trained on (its fingerprint, logged to MLflow, differs; "
            f"{checkpoint_dir / checkpoints.DATA_FILE}, which held its counts, is gone); put its files back as they were, or start a new run"
        )
    if started["fingerprint"] == now["fingerprint"]:
        return
    then, found = describe_record(started), describe_record(now)
    difference = f"it had {then}; now {found}" if then != found else "the same counts, other images"
    raise ConfigError(f"resume: the data is not what run {run_id} trained on ({difference}); put its files back as they were, or start a new run")


def describe_record(record: dict[str, Any]) -> str:
    """A data record's counts and its non-zero loader issues, for a message."""
    issues = ", ".join(f"{count} {issue.replace('_', ' ')}" for issue, count in sorted(dict(record.get("issues") or {}).items()) if count)
    return f"{record.get('counts')}{f' ({issues})' if issues else ''}"


def restored_model(checkpoint_dir: Path, cfg: DictConfig, steps_per_execution: int) -> Any:
    """An interrupted run's model from its last checkpoint, set to train as `cfg` says (a file keeps no train step)."""
    from forgery import checkpoints

    model = checkpoints.load_model(checkpoint_dir)
    model.steps_per_execution = steps_per_execution  # this machine's choice, not the interrupted one's
    sharpness_aware(model, cfg)
    return model


def sharpness_aware(model: Any, cfg: DictConfig) -> None:
    """With `sam.rho` above 0, train `model` with sharpness-aware steps (forgery.sharpness)."""
    rho = float(OmegaConf.select(cfg, "sam.rho", default=0.0))  # a run from before the setting has none
    if rho:
        from forgery import sharpness

        sharpness.enable(model, rho)


def run_metrics() -> list[Any]:
    """Accuracy and ROC AUC, the metrics a run tracks each epoch."""
    from forgery.metrics import LOGIT_THRESHOLDS, LabelAUC

    # Per-column AUC, averaged: with two softmax columns, FAKE's AUC equals REAL's, so this is the binary ROC AUC.
    # Scored against each target's label, so a distilled (soft) training target is still read as its label.
    return ["accuracy", LabelAUC(name="auc", multi_label=True, num_labels=len(CLASS_NAMES), num_thresholds=LOGIT_THRESHOLDS, logit_spaced=True)]


def refuse_sweep_without_multirun() -> None:
    """ConfigError when a sweep preset (experiment=lr_sweep, hparams_search=...) is used without -m: Hydra
    would quietly run the defaults once instead of the sweep."""
    if not HydraConfig.initialized():
        return
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    params = OmegaConf.select(hydra_cfg, "sweeper.params")
    if hydra_cfg.mode == RunMode.RUN and params:
        raise ConfigError(f"this config sets sweep parameters ({', '.join(params)}), which only a multirun uses; add -m to run the sweep")


def command_line_overrides() -> list[str]:
    """This run's `key=value` overrides as Hydra recorded them (none outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resumable_run(run_id: str, current: DictConfig, overrides: list[str]) -> tuple[DictConfig, Any]:
    """The config and checkpoint state of an interrupted run, or a one-line ConfigError saying why it can't resume.

    The run goes on with its own saved config: an override beside `resume=` is refused rather than
    silently dropped, except how this machine executes the rest (RESUMABLE_OVERRIDES), taken from `current`.
    """
    from forgery import checkpoints, tracking

    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    refused = [override for override, key in zip(overrides, keys) if key != "resume" and not key.startswith(RESUMABLE_OVERRIDES)]
    if refused:
        raise ConfigError(f"resume: a run goes on with its own saved config, so {refused[0]!r} cannot change it; beside resume= only runtime.* and verbose may be set")
    if not tracking.store_exists():
        raise ConfigError(f"resume: no MLflow store at {tracking.tracking_uri()} (run it in the folder of the interrupted run)")
    run = tracking.get_run(run_id)
    if run is None:
        raise ConfigError(f"resume: no MLflow run with id {run_id!r} in {tracking.tracking_uri()}")
    if run["status"] == "FINISHED":
        raise ConfigError(f"resume: run {run_id} already FINISHED; nothing to resume")
    upload_id = run["tags"].get(tracking.UPLOADED_AS_TAG)
    uploaded = tracking.get_run(upload_id) if upload_id else None
    if uploaded is not None and uploaded["status"] == "FINISHED":  # it finished offline: a resume would make a second whole copy
        raise ConfigError(f"resume: run {run_id} finished offline and was uploaded as run {uploaded['run_id']} (FINISHED); nothing to resume")
    if run["tags"].get("sweep") == "parent":
        raise ConfigError(f"resume: run {run_id} is a sweep's parent run, which trains nothing; resume one of its jobs (each is a run of its own)")
    if not run["tags"].get("hydra_output_dir") and run["tags"].get(tracking.FAILURE_TAG):  # a job that failed its checks
        reason = run["tags"][tracking.FAILURE_TAG].splitlines()[0]
        raise ConfigError(f"resume: run {run_id} failed before its training started ({reason}); nothing to resume, start a new run")
    if not run["tags"].get("hydra_output_dir"):  # a run another program made: Path("") is this folder
        raise ConfigError(f"resume: run {run_id} is no training run of forgery (it has no hydra_output_dir tag); name the run to resume")
    output_dir = Path(run["tags"]["hydra_output_dir"])
    if not output_dir.is_dir():
        raise ConfigError(f"resume: run {run_id}'s output folder {output_dir} is gone (moved or deleted?); its checkpoint is read from there, so put the folder back")
    if finished_offline(output_dir):  # resumed, it would re-send all and be evaluated again: two models in one run
        raise ConfigError(f"resume: run {run_id} finished offline (its journal ends FINISHED); upload it instead: python -m forgery.upload {output_dir}")
    config_path = output_dir / "config" / "resolved.yaml"
    try:
        state = checkpoints.load_state(output_dir / "checkpoints")
    except checkpoints.DamagedCheckpoint as error:
        raise ConfigError(f"resume: run {run_id}'s checkpoint state {error}; it cannot resume (start a new run)") from None
    if state is None and "loss" in run["metrics"]:  # an epoch was logged, so its checkpoint was written before
        raise ConfigError(f"resume: run {run_id} completed epochs, but {output_dir / 'checkpoints' / checkpoints.STATE_FILE} is gone (moved or deleted?); put the checkpoint folder back")
    if state is None:
        raise ConfigError(f"resume: run {run_id} left no checkpoint in {output_dir / 'checkpoints'} (it stopped before its first epoch ended)")
    if not config_path.is_file():
        raise ConfigError(f"resume: run {run_id}'s saved config {config_path} is gone; resume trains with the run's own config, so put the file back")
    cfg = OmegaConf.load(config_path)
    cfg.resume = run_id
    for key in keys:
        if key.startswith(RESUMABLE_OVERRIDES):
            OmegaConf.update(cfg, key, OmegaConf.select(current, key), merge=False)
    validate_runtime(cfg)  # the values just taken from the command line, checked as a new run's are
    return cfg, state


def used_output_dir(output_dir: Path) -> str | None:
    """Why a new run cannot write to `output_dir` (another run's checkpoint or tracking journal is there), or None.

    A new run would mix its files with those: a resume would load the other run's weights, an upload
    would merge both journals into one run. Hydra's default folders are new per run; a fixed
    hydra.run.dir used twice is what meets this.
    """
    from forgery import checkpoints, tracking

    found = [name for name in (f"checkpoints/{checkpoints.STATE_FILE}", tracking.JOURNAL_FILE) if (output_dir / name).exists()]
    if not found:
        return None
    return f"output folder {output_dir} already holds another run's {' and '.join(found)}; choose a new hydra.run.dir, or delete them (resume=<run id> goes on with an interrupted run)"


def teacher_targets(run_id: str, train: Any, weight: float) -> tuple[np.ndarray, float]:
    """Distilled training targets from the teacher run's model, and how often it agrees with the labels."""
    from forgery import distill, tracking

    started = time.perf_counter()
    try:
        teacher = tracking.load_run_model(run_id)
    except (RuntimeError, OSError) as error:  # before the run opens: nothing is recorded
        raise ConfigError(f"distill.teacher: {str(error).splitlines()[0]}") from None
    probabilities = np.asarray(teacher.predict(train.images, batch_size=VALIDATION_BATCH_SIZE, verbose=0), dtype="float32")
    distill.check_teacher_probabilities(run_id, probabilities, len(train))  # nan targets would turn every weight nan
    agreement = distill.label_agreement(train.labels, probabilities)
    log.info("distillation: teacher %s scored %d training images in %.0f s; it agrees with %.2f%% of their labels; targets take %g of its probabilities", run_id, len(train), time.perf_counter() - started, 100 * agreement, weight)
    return distill.mixed_targets(train.labels, probabilities, weight), agreement


def fit(
    model: Any,
    dataset: Any,
    cfg: DictConfig,
    state: Any,
    checkpoint_dir: Path,
    log_epoch: Callable[[dict[str, float], int], None],
    targets: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Train from `state.epoch` to `cfg.epochs`: checkpoint, then log, after every epoch; return the full history.

    `targets` replace the training labels' one-hot targets (distillation: forgery.distill); validation always scores labels.

    Each epoch is one `fit` call over a permutation drawn from (seed, epoch), with the layers' random
    generators reset from (seed, epoch) too, so epoch k sees the same batches and augmentations whether
    or not the run was interrupted before it: a resumed run ends with the same weights.
    """
    import keras

    from forgery import checkpoints, interrupts

    images = dataset.train.images
    targets = one_hot(dataset.train.labels) if targets is None else targets
    validation = (dataset.val.images, one_hot(dataset.val.labels))
    backend = keras.backend.backend()
    on_device = runtime.chosen_loop(OmegaConf.select(cfg, "runtime.loop", default="auto"), backend, runtime.has_gpu(backend)) == "scan"
    # Epochs checkpointed but not logged (killed between the two) are logged first, so no step is missing or doubled.
    if state.logged_epoch < state.epoch:
        with interrupts.deferred():  # logged and recorded as logged together, as each epoch is below
            for epoch in range(state.logged_epoch, state.epoch):
                log_epoch({name: values[epoch] for name, values in state.history.items()}, epoch + 1)
            state.logged_epoch = state.epoch
            checkpoints.write_state(checkpoint_dir, state)  # else a second interruption logs them a second time
    patience = cfg.early_stopping.patience
    for epoch in range(state.epoch, cfg.epochs):
        if patience_exhausted(state, patience):  # checked first: a run resumed after it had stopped trains no more
            break
        epoch_started = time.perf_counter()
        reset_random_generators(model, cfg.seed, epoch)
        if backend == "jax":
            from forgery import jax_loop

            jax_loop.separate_buffers(model)  # the weights and their moving average can share one buffer, which a JAX step cannot donate twice
        callbacks = [run_progress(cfg.epochs), stop_on_non_finite_loss(epoch + 1, checkpoint_dir), stop_on_interrupt(), *weight_averaging(model)]
        validation_batch_size = max(cfg.batch_size, VALIDATION_BATCH_SIZE)
        if on_device:
            if mixes_images(cfg):  # each epoch's images are new: sent to the device each epoch, in order
                epoch_data = None  # the last epoch's arrays leave the device before this epoch's arrive
                epoch_images, epoch_targets = epoch_arrays(images, targets, cfg, epoch)
                epoch_data, order = jax_loop.place(epoch_images, epoch_targets), np.arange(len(epoch_images))
            else:  # the same images every epoch: sent once, then only the epoch's order
                epoch_data, order = jax_loop.place(images, targets), epoch_order(len(images), cfg.seed, epoch)
            metrics = jax_loop.fit_epoch(model, epoch_data, order, cfg.batch_size, epoch, callbacks, progress_mode(cfg.verbose), validation, validation_batch_size)
        else:
            epoch_images, epoch_targets = epoch_arrays(images, targets, cfg, epoch)
            result = model.fit(
                epoch_images,
                epoch_targets,
                batch_size=cfg.batch_size,
                initial_epoch=epoch,
                epochs=epoch + 1,
                shuffle=False,
                validation_data=validation,
                validation_batch_size=validation_batch_size,
                callbacks=callbacks,
                verbose=progress_mode(cfg.verbose),
            )
            metrics = {name: float(values[-1]) for name, values in result.history.items()}
        trained = time.perf_counter()
        for name, value in metrics.items():
            state.history.setdefault(name, []).append(value)
        state.epoch = epoch + 1
        watched = metrics[cfg.early_stopping.metric]  # config.validate allows only metrics every epoch logs
        improved = improves(watched, state.best_value)
        if improved:
            state.best_epoch, state.best_value = epoch + 1, watched
        checkpoints.save(checkpoint_dir, model, state, best=improved)  # the best epoch and its weights are kept together
        # Logged and recorded as logged in one deferred block: a Ctrl-C raised between the two would have a
        # resume log this epoch a second time.
        with interrupts.deferred():
            log_epoch(metrics, epoch + 1)  # step = epoch number, 1-based as Keras prints it
            state.logged_epoch = epoch + 1
            checkpoints.write_state(checkpoint_dir, state)
        log.info(epoch_timing(epoch + 1, len(images), trained - epoch_started, time.perf_counter() - trained))
    stopped = early_stop_message(state, patience, cfg.epochs, cfg.early_stopping.metric)
    if stopped:
        log.info(stopped)
    if cfg.early_stopping.restore_best and state.best_epoch and state.best_epoch != state.epoch:
        checkpoints.restore_best(checkpoint_dir, model)
        log.info("restored the weights of epoch %d (best %s %.4f)", state.best_epoch, cfg.early_stopping.metric, state.best_value)
    return state.history


def epoch_arrays(images: np.ndarray, targets: np.ndarray, cfg: DictConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch `epoch`'s training images and targets: a permutation drawn from (seed, epoch), then CutMix when `cutmix.prob` is set.

    Both draws depend on (seed, epoch) alone, so an epoch sees the same images whether or not the run was interrupted before it.
    """
    from forgery import mixing

    order = epoch_order(len(images), cfg.seed, epoch)
    if not mixes_images(cfg):
        return images[order], targets[order]
    return mixing.cutmix(images[order], targets[order], np.random.default_rng([cfg.seed, epoch, CUTMIX_STREAM]), float(cfg.cutmix.prob), float(cfg.cutmix.alpha))


def epoch_timing(epoch: int, images: int, training_seconds: float, saving_seconds: float) -> str:
    """The log line of an epoch's speed: training with validation, then checkpoint and MLflow logging."""
    rate = f"{images / training_seconds:,.0f} images/s" if training_seconds > 0 else "too fast to time"
    return f"epoch {epoch}: {images:,} training images in {training_seconds:.2f} s with validation ({rate}); checkpoint and logging {saving_seconds:.2f} s"


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training images in epoch `epoch`: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def mixes_images(cfg: DictConfig) -> bool:
    """Whether each epoch's training images are new ones (CutMix) rather than the training split in a new order."""
    return bool(float(OmegaConf.select(cfg, "cutmix.prob", default=0.0)))  # an older run's config has no cutmix


def early_stop_message(state: Any, patience: int | None, epochs: int, metric: str) -> str | None:
    """The line saying early stopping ended training before `epochs`, or None when it did not (all epochs ran)."""
    if not patience_exhausted(state, patience) or state.epoch >= epochs:
        return None
    best = f"{state.best_value:.4f}" if state.best_value is not None else "none"
    return f"early stopping after epoch {state.epoch} of {epochs}: {metric} has not improved for {patience} epochs (best {best} at epoch {state.best_epoch})"


def patience_exhausted(state: Any, patience: int | None) -> bool:
    """Whether early stopping ends training: `patience` epochs have passed since the best one (None: never)."""
    return patience is not None and state.epoch - state.best_epoch >= patience


def stop_on_interrupt() -> Any:
    """A Keras callback that ends training at the next batch after a Ctrl-C or SIGTERM that Python dropped."""
    import keras

    from forgery import interrupts

    class _Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            interrupts.raise_if_requested()

        def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            interrupts.raise_if_requested()

    return _Stop()


def weight_averaging(model: Any) -> list[Any]:
    """With the optimizer's `use_ema`, the callback that validates the moving average of the weights.

    Keras copies the average into the model when each epoch's `fit` ends, so the weights validated are
    the ones checkpointed, restored as the best epoch, evaluated and trained on from the next epoch.
    """
    import keras

    return [keras.callbacks.SwapEMAWeights()] if getattr(training_optimizer(model), "use_ema", False) else []


def training_optimizer(model: Any) -> Any:
    """The optimizer that trains `model`: under mixed precision, the one Keras's LossScaleOptimizer wraps."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


def averaging_span_warning(momentum: float, steps_per_epoch: int) -> str | None:
    """Why a moving average spanning more than an epoch slows training (each epoch restarts from it), or None."""
    span = 1.0 / (1.0 - momentum)
    if span <= steps_per_epoch:
        return None
    suggested = 1.0 - 4.0 / steps_per_epoch if steps_per_epoch > 4 else 0.0
    return (
        f"optimizer.ema_momentum={momentum:g} averages over about {span:.0f} steps, more than an epoch's {steps_per_epoch}: "
        f"each epoch restarts from an average that still holds much of the last one; try optimizer.ema_momentum={suggested:.3g}"
    )


class NumericalError(Exception):
    """Training produced a NaN or infinite loss."""


def stop_on_non_finite_loss(epoch: int, checkpoint_dir: Path) -> Any:
    """A Keras callback that stops training at the first batch whose loss is NaN or infinite."""
    import keras

    class _Stop(keras.callbacks.Callback):
        previous = -1  # the batch the last call ended at: this call's batches follow it (calls vary in length)

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = float((logs or {}).get("loss", 0.0))
            if not np.isfinite(loss):
                self.model.stop_training = True
                raise NumericalError(non_finite_loss_message(loss, epoch, batch_span(self.previous, batch, self.params.get("steps")), checkpoint_dir))
            self.previous = batch

    return _Stop()


def non_finite_loss_message(loss: float, epoch: int, batches: str, checkpoint_dir: Path) -> str:
    """Why training stopped, and what of the run is kept: the previous epoch's checkpoint, if one had ended."""
    kept = f"the checkpoint of epoch {epoch - 1}, the last good one, is kept in {checkpoint_dir}" if epoch > 1 else "no epoch had completed, so no checkpoint was kept"
    return f"loss became {loss} at epoch {epoch}, {batches}; {kept}"


def non_finite_scores_problem(probabilities: np.ndarray, split: str) -> str | None:
    """Why a model's scores cannot be evaluated (some are NaN or infinite), or None when every one is finite."""
    broken = int(np.count_nonzero(~np.isfinite(probabilities).all(axis=1)))
    if not broken:
        return None
    return f"the trained model scored {broken} of {len(probabilities)} {split} images NaN or infinite, so no metric of it would be right; the run ends FAILED"


def batch_span(previous: int, batch: int, steps: int | None) -> str:
    """Which batches (1-based) a callback at 0-based `batch` speaks for, the last call having ended at `previous`
    (-1 before the first): with steps_per_execution > 1 Keras calls it once per that many batches, naming the
    last of them even past the epoch's `steps`, and the on-device loop's last calls hold fewer."""
    last = batch + 1 if not steps else min(batch + 1, steps)
    first = previous + 2
    return f"batch {last}" if first >= last else f"batches {first}-{last}"


def run_progress(total_epochs: int) -> Any:
    """Keras's progress bar, told the run's epoch count: each `fit` call covers one epoch, and should not print 'Epoch 3/3'."""
    import keras

    class _RunProgress(keras.callbacks.ProgbarLogger):
        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self.epochs = total_epochs

    return _RunProgress()


def reset_random_generators(model: Any, seed: int, epoch: int) -> None:
    """Set every seed generator of the model (augmentation, dropout) to a state fixed by (seed, generator, epoch).

    A generator's state is (key, counter) and each draw adds 1 to the counter, so the epoch goes into the
    key: with it in the counter, epoch e + 1 would replay epoch e's draws one batch later. The key is a
    hash that fits 32 bits, JAX's state type, whatever the seed.
    """
    from forgery.models import is_random_state

    generators = [variable for variable in model.variables if is_random_state(variable)]
    for index, variable in enumerate(generators):
        key = np.random.SeedSequence([seed, index, epoch]).generate_state(1, dtype=np.uint32)[0]
        variable.assign(np.array([key, 0], dtype=variable.dtype))


def evaluate_and_explain(model: Any, dataset: Any, history: dict[str, list[float]], cfg: DictConfig) -> dict[str, Any]:
    """Test-split metrics, curves, report and Grad-CAM explanations of one FAKE and one REAL test image."""
    from forgery import calibration, evaluate, explain_checks, gradcam, interrupts, models, report, robustness

    scorer = models.tta_view(model, cfg.get("tta", "none"))  # what is served (an older run has no tta): test, calibration and robustness score it

    def scored(images: np.ndarray, split: str) -> np.ndarray:
        interrupts.raise_if_requested()  # a Ctrl-C dropped in the stage before: stop before scoring again
        probabilities = scorer.predict(images, batch_size=256, verbose=0)
        problem = non_finite_scores_problem(probabilities, split)
        if problem:  # a NaN would turn calibration off and count as a FAKE call, silently
            raise NumericalError(problem)
        return probabilities

    def predict(images: np.ndarray) -> np.ndarray:
        return scored(images, "corrupted test")

    test = dataset.test
    probabilities = scored(test.images, "test")
    # Temperature fitted on validation, applied to test: every confidence a reader sees is the calibrated one.
    calibration_result = calibration.calibration_report(dataset.val.labels, scored(dataset.val.images, "validation"), test.labels, probabilities)
    calibrated = calibration.apply_temperature(probabilities, calibration_result["temperature"])
    checked = explain_checks.sample_indices(test.labels, cfg.evidence.gradcam_checks_per_class, cfg.seed)
    checks = explain_checks.gradcam_checks(model, test.images[checked], test.labels[checked], seed=cfg.seed)
    subset = evidence_subset(test.labels, cfg.evidence.robustness_images, cfg.seed)
    robust = robustness.robustness_report(predict, test.images[subset], test.labels[subset], seed=cfg.seed)
    headline = evaluate.headline_metrics(test.labels, probabilities)
    roc = evaluate.roc_points(test.labels, probabilities)
    pr = evaluate.pr_points(test.labels, probabilities)
    confusion = evaluate.confusion(test.labels, probabilities)
    cut = gradcam.cut_model(model)
    explanations = []
    for label, index in sorted(gradcam.pick_examples(test.labels, cfg.seed).items()):
        interrupts.raise_if_requested()
        heatmaps = {target: gradcam.make_gradcam_heatmap(cut, test.images[index], target) for target in range(len(CLASS_NAMES))}
        explanations.append(report.Explanation(CLASS_NAMES[label].lower(), test.images[index], label, calibrated[index], heatmaps))
    overlay_count = sum(len(item.heatmaps) for item in explanations)
    headline = {
        **headline,
        "final_train_accuracy": history["accuracy"][-1],
        "final_val_accuracy": history["val_accuracy"][-1],
        "final_val_auc": history["val_auc"][-1],
        # The validation figures of the weights that were tested (the best epoch's when early stopping
        # restores it): what a sweep ranks, so its best run is the one whose test figures it reports.
        **evaluated_validation(history, cfg),
        "evaluated_epoch": evaluated_epoch(history, cfg),
        "epochs_run": len(history["val_auc"]),
        "gradcam_overlays": overlay_count,
    }
    card = report.model_card(
        model_name=cfg.model.name,
        architecture=models.architecture_summary(model),
        optimizer=type(training_optimizer(model)).__name__,  # not LossScaleOptimizer under mixed precision
        learning_rate=float(cfg.optimizer.lr),
        loss=f"categorical_crossentropy (label smoothing {cfg.label_smoothing:g})" if cfg.label_smoothing else "categorical_crossentropy",
        parameters=int(model.count_params()),
        epochs=len(history["val_auc"]),
        epochs_planned=cfg.epochs,
        evaluated_epoch=evaluated_epoch(history, cfg),
        batch_size=cfg.batch_size,
        augmentation=cfg.augment.name,
        dataset=dataset.name,
        counts=dataset.counts(),
        issues=dict(dataset.issues),
        gradcam_examples=len(explanations),
        seed=cfg.seed,
        backend=_backend(),
        test_time_view=cfg.get("tta", "none"),
    )
    evidence_metrics = {
        **calibration.calibration_metrics(calibration_result),
        **explain_checks.gradcam_check_metrics(checks),
        **robustness.robustness_metrics(robust),
    }
    return {
        "headline": headline,
        "evidence_metrics": evidence_metrics,
        "calibration": calibration_result,
        "gradcam_checks": checks,
        "robustness": robust,
        "history": history,
        "training_metrics": report.training_metrics(history, headline, roc, pr, confusion),
        "classification_report": evaluate.format_report_tsv(evaluate.classification_report(test.labels, probabilities)),
        "gradcam_results": report.gradcam_results(explanations, cut.layer_name, calibration_result["temperature"]),
        "model_card": card,
        "explanations": explanations,
        "gradcam_grid": cut.grid,
        "resolved_config": OmegaConf.to_yaml(cfg, resolve=True),
    }


def interrupted_lines(run_id: str | None, checkpoint_dir: Path) -> list[str]:
    """What an interrupted run prints: how it ended, what it kept and, when it can, how to resume it."""
    from forgery import checkpoints

    try:
        saved = checkpoints.load_state(checkpoint_dir)
        kept = f"the checkpoint of epoch {saved.epoch} is in {checkpoint_dir}" if saved else "no epoch had completed, so nothing to resume"
    except checkpoints.DamagedCheckpoint as error:  # the interruption is still said, with why it cannot resume
        saved, kept = None, f"its checkpoint cannot be resumed: {error}"
    lines = [f"interrupted: run {run_id} ended KILLED; {kept}"]
    if saved and run_id:
        lines.append(f"resume with: python -m forgery.train resume={run_id}")
    return lines


def improves(value: float, best: float | None) -> bool:
    """Whether an epoch's watched validation metric beats the best so far; a nan one (no ranking) never does."""
    return math.isfinite(value) and (best is None or value > best)


def evaluated_epoch(history: dict[str, list[float]], cfg: DictConfig) -> int:
    """The epoch whose weights were evaluated: the best one when early stopping restores it, else the last.

    The best is the first epoch with the highest finite value, as `improves` kept it; with none, the last.
    """
    values = np.asarray(history.get(cfg.early_stopping.metric, []), dtype=float)
    finite = np.isfinite(values)
    if cfg.early_stopping.restore_best and finite.any():
        return int(np.argmax(np.where(finite, values, -np.inf))) + 1
    return len(history.get("loss", []))


def evaluated_validation(history: dict[str, list[float]], cfg: DictConfig) -> dict[str, float]:
    """`evaluated_val_accuracy` and `evaluated_val_auc`: the validation figures of the evaluated epoch."""
    epoch = evaluated_epoch(history, cfg)
    return {f"evaluated_{name}": float(history[name][epoch - 1]) for name in ("val_accuracy", "val_auc")}


def evidence_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of at most `limit` test images (all of them when `limit` is 0), in order.

    Stratified: each class keeps its share (at least one image while `limit` allows), so the subset's
    ROC AUC is defined; an unstratified draw of a few images can hold one class only.
    """
    count = len(labels)
    if limit <= 0 or limit >= count:
        return np.arange(count)
    rng = np.random.default_rng([seed, 7])
    classes = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    quotas = [limit * len(members) / count for members in classes]
    sizes = [max(1, int(quota)) for quota in quotas]
    # Largest remainders first, so the subset holds exactly `limit` images (rounding each class could drop one).
    while sum(sizes) < limit:
        sizes[int(np.argmax([quota - size for quota, size in zip(quotas, sizes)]))] += 1
    while sum(sizes) > limit:  # one image for each small class may overshoot by an image or two
        sizes[int(np.argmax(sizes))] -= 1
    return np.sort(np.concatenate([rng.choice(members, size=size, replace=False) for members, size in zip(classes, sizes) if size]))


def write_outputs(output_dir: Path, result: dict[str, Any], upscale: int, alpha: float) -> None:
    """Write report/, plots/ and config/ under the run's output folder (the only file writer of a run)."""
    from PIL import Image
    from matplotlib import pyplot as plt

    from forgery import gradcam, plots, report

    report_dir, plots_dir, config_dir = (output_dir / name for name in ("report", "plots", "config"))
    for folder in (report_dir, plots_dir, config_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("training_metrics", "gradcam_results", "model_card", "calibration", "gradcam_checks", "robustness"):
        (report_dir / f"{name}.json").write_text(report.to_json(result[name]))
    (report_dir / "classification_report.tsv").write_text(result["classification_report"])
    for item in result["explanations"]:
        Image.fromarray(gradcam.upscaled(item.image, upscale)).save(report_dir / report.input_file(item.name))
        for target, heatmap in item.heatmaps.items():
            picture = gradcam.overlay(item.image, heatmap, upscale=upscale, alpha=alpha, grid=result["gradcam_grid"])
            Image.fromarray(picture).save(report_dir / report.overlay_file(item.name, target))

    metrics = result["training_metrics"]
    figures = {
        "loss.png": plots.history_figure(result["history"], "loss"),
        "accuracy.png": plots.history_figure(result["history"], "accuracy"),
        "roc_curve.png": plots.roc_figure(metrics["roc_curve"]["fpr"], metrics["roc_curve"]["tpr"], metrics["roc_curve"]["auc"]),
        "pr_curve.png": plots.pr_figure(metrics["pr_curve"]["recall"], metrics["pr_curve"]["precision"], metrics["pr_curve"]["auc"]),
        "confusion_matrix.png": plots.confusion_figure(metrics["confusion_matrix"]["matrix"]),
        "reliability.png": plots.reliability_figure(
            result["calibration"]["test"]["before"]["reliability"], result["calibration"]["test"]["after"]["reliability"], result["calibration"]["temperature"]
        ),
        "gradcam_deletion_insertion.png": plots.perturbation_figure(
            result["gradcam_checks"]["perturbation"]["fraction"], result["gradcam_checks"]["perturbation"]["mean_curves"], result["gradcam_checks"]["perturbation"]["areas"]
        ),
    }
    for file_name, figure in figures.items():
        figure.savefig(plots_dir / file_name, dpi=110)
        plt.close(figure)
    (config_dir / "resolved.yaml").write_text(result["resolved_config"])
    hydra_dir = output_dir / ".hydra"
    for file_name in ("config.yaml", "overrides.yaml"):
        if (hydra_dir / file_name).exists():
            (config_dir / file_name).write_text((hydra_dir / file_name).read_text())


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Integer labels -> (N, classes) float32 targets for the categorical loss and the AUC metric."""
    return np.eye(len(CLASS_NAMES), dtype="float32")[labels]


def progress_mode(verbose: str | int) -> int:
    """Keras verbosity: a progress bar on a terminal, one line per epoch when output goes to a file."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _backend() -> str:
    """Name of the active Keras backend."""
    import keras

    return keras.backend.backend()


if __name__ == "__main__":
    cli()
