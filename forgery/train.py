"""Entrypoint: `python -m forgery.train [overrides]` trains, evaluates, explains and logs one run to MLflow.

Stages run in this order: validate the config (instant, before heavy imports), load data, build the
model, open the MLflow run, fit, evaluate on the test split, Grad-CAM, write the report, log it all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from forgery import sweep

from forgery.config import ConfigError, override_error, validate
from forgery.data import CLASS_NAMES, DataError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
LOSS = "categorical_crossentropy"
NATIVE_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cuda drivers|cuInit|cudart_stub|computation placer|TensorFlow binary is optimized"
    r"|rebuild TensorFlow with the appropriate compiler flags"
)
USER_ERRORS = (ConfigError, DataError)  # the user's to fix: reported as one line, never a traceback


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entrypoint: a user error becomes one `error:` line and exit code 2, never a traceback."""
    try:
        return train(cfg)
    except Exception as error:
        # Hydra's instantiate wraps what a factory raised; a user error inside stays a one-liner.
        user_error = error if isinstance(error, USER_ERRORS) else error.__cause__
        is_user_error = isinstance(user_error, USER_ERRORS)
        if sweep.parent_run_id() is not None:
            # In a sweep one bad job must not stop the others: record it, report it, move on.
            sweep.record_job_failure(cfg.tracking.experiment, user_error if is_user_error else error)
            log.error("job %s failed: %s", HydraConfig.get().job.num, user_error if is_user_error else repr(error))
            return float("nan")
        if is_user_error:
            fail(str(user_error))
        raise


def cli() -> None:
    """`python -m forgery.train`: refuse bad overrides in one line, then hand over to Hydra."""
    arguments = sys.argv[1:]
    # Flags such as --cfg, --help or --config-dir change what Hydra does; only plain runs are pre-checked.
    if all(not argument.startswith("-") or argument in ("-m", "--multirun") for argument in arguments):
        problem = override_error(CONFIG_DIR, "train", [argument for argument in arguments if not argument.startswith("-")])
        if problem:
            fail(problem)
    main()


def fail(message: str) -> None:
    """Print one `error:` line and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def train(cfg: DictConfig) -> float:
    """Run one experiment end to end and return the final validation ROC AUC (what a sweeper maximises)."""
    from hydra.utils import instantiate

    validate(cfg)
    started = time.perf_counter()
    dataset = instantiate(cfg.data)  # before importing Keras, so a data error shows in a second, not ten
    log.info("data %s: %s (%.1f s)", dataset.name, json.dumps(dataset.counts()), time.perf_counter() - started)
    for issue, count in dataset.issues.items():
        if count:
            log.warning("data: %d %s (see the loader's warnings above)", count, issue.replace("_", " "))

    with quiet_native_startup():
        import keras

        keras.ops.zeros(1)  # the first op initialises the backend's devices, which is chatty too

    from forgery import tracking

    keras.utils.set_random_seed(cfg.seed)
    model = instantiate(cfg.model, augmentation=instantiate(cfg.augment))
    optimizer = instantiate(cfg.optimizer)
    model.compile(
        optimizer=optimizer,
        loss=LOSS,
        # Per-column AUC, averaged: with two softmax columns, FAKE's AUC equals REAL's, so this is the binary ROC AUC.
        metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=len(CLASS_NAMES), num_thresholds=500)],
    )
    output_dir = Path(cfg.output_dir)
    tags = {
        **tracking.git_tags(Path.cwd()),
        "hydra_output_dir": str(output_dir.resolve()),
        "command_line": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": cfg.model.name,
        "data": dataset.name,
        **sweep.job_tags(),
    }
    with tracking.tracked_run(cfg.tracking.experiment, cfg.tracking.run_name, tags) as run_id:
        log.info("MLflow run %s in experiment %r", run_id, cfg.tracking.experiment)
        tracking.log_params(tracking.flatten_params(OmegaConf.to_container(cfg, resolve=True)))
        tracking.log_metrics({f"data_{issue}": count for issue, count in dataset.issues.items()})
        history = fit(model, dataset, cfg, on_epoch_end=tracking.log_metrics)
        result = evaluate_and_explain(model, dataset, history, cfg)
        tracking.log_metrics(result["headline"])
        write_outputs(output_dir, result, cfg.gradcam.upscale, cfg.gradcam.alpha)
        tracking.log_folder(output_dir / "report", "report")
        tracking.log_folder(output_dir / "plots", "plots")
        tracking.log_folder(output_dir / "config", "config")
        examples = dataset.test.images[:2]  # the signature: uint8 (N, 32, 32, 3) raw pixels, 0-255
        tracking.log_keras_model(model, examples, model.predict(examples, verbose=0))
        headline = result["headline"]
        log.info(
            "test accuracy %.4f, ROC AUC %.4f; run %s. Browse with: mlflow ui",
            headline["test_accuracy"],
            headline["test_roc_auc"],
            run_id,
        )
    return float(history["val_auc"][-1])


def fit(model: Any, dataset: Any, cfg: DictConfig, on_epoch_end: Callable[[dict[str, float], int], None]) -> dict[str, list[float]]:
    """Keras `fit` on the training split with validation each epoch; metrics go to `on_epoch_end(metrics, epoch)`."""
    import keras

    class EpochMetrics(keras.callbacks.Callback):
        """Hands each epoch's Keras logs to the tracker, step = epoch number (1-based, as Keras prints it)."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            on_epoch_end({name: float(value) for name, value in (logs or {}).items()}, epoch + 1)

    history = model.fit(
        dataset.train.images,
        one_hot(dataset.train.labels),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(dataset.val.images, one_hot(dataset.val.labels)),
        callbacks=[EpochMetrics()],
        verbose=progress_mode(cfg.verbose),
    )
    return {name: [float(value) for value in values] for name, values in history.history.items()}


def evaluate_and_explain(model: Any, dataset: Any, history: dict[str, list[float]], cfg: DictConfig) -> dict[str, Any]:
    """Test-split metrics, curves, report and Grad-CAM explanations of one FAKE and one REAL test image."""
    from forgery import evaluate, gradcam, models, report

    test = dataset.test
    probabilities = model.predict(test.images, batch_size=256, verbose=0)
    headline = evaluate.headline_metrics(test.labels, probabilities)
    roc = evaluate.roc_points(test.labels, probabilities)
    pr = evaluate.pr_points(test.labels, probabilities)
    confusion = evaluate.confusion(test.labels, probabilities)
    cut = gradcam.cut_model(model)
    explanations = []
    for label, index in sorted(gradcam.pick_examples(test.labels, cfg.seed).items()):
        heatmaps = {target: gradcam.make_gradcam_heatmap(cut, test.images[index], target) for target in range(len(CLASS_NAMES))}
        explanations.append(report.Explanation(CLASS_NAMES[label].lower(), test.images[index], label, probabilities[index], heatmaps))
    overlay_count = sum(len(item.heatmaps) for item in explanations)
    headline = {
        **headline,
        "final_train_accuracy": history["accuracy"][-1],
        "final_val_accuracy": history["val_accuracy"][-1],
        "final_val_auc": history["val_auc"][-1],
        "gradcam_overlays": overlay_count,
    }
    card = report.model_card(
        model_name=cfg.model.name,
        architecture=models.architecture_summary(model),
        optimizer=type(model.optimizer).__name__,
        learning_rate=float(cfg.optimizer.lr),
        loss=LOSS,
        parameters=int(model.count_params()),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        augmentation=cfg.augment.name,
        dataset=dataset.name,
        counts=dataset.counts(),
        issues=dict(dataset.issues),
        gradcam_examples=len(explanations),
        seed=cfg.seed,
        backend=_backend(),
    )
    return {
        "headline": headline,
        "history": history,
        "training_metrics": report.training_metrics(history, headline, roc, pr, confusion),
        "classification_report": evaluate.format_report_tsv(evaluate.classification_report(test.labels, probabilities)),
        "gradcam_results": report.gradcam_results(explanations, cut.layer_name),
        "model_card": card,
        "explanations": explanations,
        "resolved_config": OmegaConf.to_yaml(cfg, resolve=True),
    }


def write_outputs(output_dir: Path, result: dict[str, Any], upscale: int, alpha: float) -> None:
    """Write report/, plots/ and config/ under the run's output folder (the only file writer of a run)."""
    from PIL import Image
    from matplotlib import pyplot as plt

    from forgery import gradcam, plots, report

    report_dir, plots_dir, config_dir = (output_dir / name for name in ("report", "plots", "config"))
    for folder in (report_dir, plots_dir, config_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("training_metrics", "gradcam_results", "model_card"):
        (report_dir / f"{name}.json").write_text(json.dumps(result[name], indent=2) + "\n")
    (report_dir / "classification_report.tsv").write_text(result["classification_report"])
    for item in result["explanations"]:
        Image.fromarray(gradcam.upscaled(item.image, upscale)).save(report_dir / report.input_file(item.name))
        for target, heatmap in item.heatmaps.items():
            picture = gradcam.overlay(item.image, heatmap, upscale=upscale, alpha=alpha)
            Image.fromarray(picture).save(report_dir / report.overlay_file(item.name, target))

    metrics = result["training_metrics"]
    figures = {
        "loss.png": plots.history_figure(result["history"], "loss"),
        "accuracy.png": plots.history_figure(result["history"], "accuracy"),
        "roc_curve.png": plots.roc_figure(metrics["roc_curve"]["fpr"], metrics["roc_curve"]["tpr"], metrics["roc_curve"]["auc"]),
        "pr_curve.png": plots.pr_figure(metrics["pr_curve"]["recall"], metrics["pr_curve"]["precision"], metrics["pr_curve"]["auc"]),
        "confusion_matrix.png": plots.confusion_figure(metrics["confusion_matrix"]["matrix"]),
    }
    for file_name, figure in figures.items():
        figure.savefig(plots_dir / file_name, dpi=110)
        plt.close(figure)
    (config_dir / "resolved.yaml").write_text(result["resolved_config"])
    hydra_dir = output_dir / ".hydra"
    for file_name in ("config.yaml", "overrides.yaml"):
        if (hydra_dir / file_name).exists():
            (config_dir / file_name).write_text((hydra_dir / file_name).read_text())


@contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Hold back what native code writes to stderr meanwhile; replay it all except known start-up chatter.

    TensorFlow's C++ logging prints several lines (oneDNN, missing CUDA drivers) on every start, before
    TF_CPP_MIN_LOG_LEVEL is read, so the only way to keep a run's output readable is to filter the file
    descriptor itself. Anything else written meanwhile is printed after, not lost.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
