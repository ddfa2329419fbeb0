"""Matplotlib figures of a run (curves, ROC, PR, confusion matrix), returned unsaved: the caller writes them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display needed: figures only go to files

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from forgery.data import CLASS_NAMES


def history_figure(history: dict[str, list[float]], metric: str) -> Figure:
    """Training and validation `metric` per epoch."""
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        if key in history:
            epochs = range(1, len(history[key]) + 1)
            axes.plot(epochs, history[key], marker="o", label=label)
    axes.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
    axes.legend()
    figure.tight_layout()
    return figure


def roc_figure(fpr: list[float], tpr: list[float], auc: float) -> Figure:
    """ROC curve with the chance diagonal."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (positive: REAL)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def pr_figure(recall: list[float], precision: list[float], auc: float) -> Figure:
    """Precision-recall curve."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(recall, precision, label=f"AP = {auc:.4f}")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall (positive: REAL)", ylim=(0, 1.02))
    axes.legend(loc="lower left")
    figure.tight_layout()
    return figure


def confusion_figure(matrix: list[list[int]]) -> Figure:
    """Confusion matrix with counts in the cells."""
    figure, axes = plt.subplots(figsize=(4, 3.5))
    image = axes.imshow(matrix, cmap="Blues")
    ticks = range(len(CLASS_NAMES))
    axes.set(xticks=ticks, yticks=ticks, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES)
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    peak = max(max(row) for row in matrix) or 1
    for row_index, row in enumerate(matrix):
        for column_index, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axes.text(column_index, row_index, str(count), ha="center", va="center", color=colour)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    return figure



def reliability_figure(before: list[dict[str, float | None]], after: list[dict[str, float | None]], temperature: float) -> Figure:
    """Reliability diagrams before and after temperature scaling, from `forgery.calibration.reliability_bins` rows."""
    figure, all_axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for axes, rows, title in ((all_axes[0], before, "raw"), (all_axes[1], after, f"temperature {temperature:.3g}")):
        filled = [row for row in rows if row["count"]]  # an empty bin has no accuracy to draw
        centres = [(row["lower"] + row["upper"]) / 2 for row in filled]
        widths = [row["upper"] - row["lower"] for row in filled]
        axes.bar(centres, [row["accuracy"] for row in filled], width=widths, edgecolor="black", alpha=0.7, label="accuracy")
        axes.plot([row["mean_confidence"] for row in filled], [row["accuracy"] for row in filled], "o", color="C3", label="bin (mean confidence, accuracy)")
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        for centre, row in zip(centres, filled):  # a bin of a few images says little: show how many it holds
            axes.text(centre, 0.02, str(row["count"]), ha="center", va="bottom", fontsize="x-small")
        axes.set(xlabel="confidence (top probability)", title=f"Reliability, {title}", xlim=(0, 1), ylim=(0, 1.02))
    all_axes[0].set_ylabel("accuracy")
    all_axes[0].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def perturbation_figure(fraction: list[float], mean_curves: dict[str, list[float]], areas: dict[str, float]) -> Figure:
    """Deletion and insertion curves, Grad-CAM order against random order, from `forgery.explain_checks` output."""
    figure, all_axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for axes, curve in zip(all_axes, ("deletion", "insertion")):
        for ordering, style in (("gradcam", "-"), ("random", "--")):
            name = f"{curve}_{ordering}"
            axes.plot(fraction, mean_curves[name], style, label=f"{ordering} order, AUC {areas[name]:.3f}")
        axes.set(xlabel=f"fraction of pixels {'removed' if curve == 'deletion' else 'restored'}", title=curve.capitalize(), ylim=(0, 1.02))
        axes.legend(loc="best", fontsize="small")
    all_axes[0].set_ylabel("probability of the explained class")
    figure.tight_layout()
    return figure
