"""Figures (matplotlib, Agg, no pyplot state): the report's learning curves, confusion matrices,
trial scatter plots and grid of misclassified images, and the sanity checks' plots.

Every figure is saved with fixed size, dpi and no "Software" metadata, so the same inputs give
byte-identical PNG files and a regenerated report diffs cleanly.
"""

import functools
import io
import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

DPI = 100
STAGE_COLOURS = {"coarse": "#1f77b4", "fine": "#ff7f0e"}


def literal_text(function):
    """The figure's text is shown as written: a class name, file name or stage name with '$' in
    it is not parsed as TeX (mathtext), which would garble it or, unbalanced, fail the report."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper


def png_bytes(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


@literal_text
def learning_curves(history, title):
    """Loss and accuracy, train vs val, per global epoch; a dotted line where each stage begins."""
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_title(metric)
        ax.set_xlabel("epoch (all stages)")
        if history is None or history.empty or metric not in history:
            _empty(ax, "no history")
            continue
        x = history["global_epoch"].to_numpy()
        ax.plot(x, history[metric], marker="o", markersize=3, label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(x, history[f"val_{metric}"], marker="o", markersize=3, linestyle="--", label=f"val {metric}")
        for stage, first in history.groupby("stage", sort=False)["global_epoch"].min().items():
            ax.axvline(first - 0.5, color="grey", linestyle=":", linewidth=1)
            ax.text(
                first - 0.4, 1.0, str(stage), transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey"
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def confusion(matrix, class_names, title):
    """Row-normalised confusion matrix (colour = share of the true class), counts in the cells."""
    matrix = np.asarray(matrix, dtype=float)
    k = len(class_names)
    size = min(12.0, max(4.0, 0.45 * k + 2.0))
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(matrix[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=[str(c) for c in class_names], rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticks(ticks, labels=[str(c) for c in class_names], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def trial_scatter(trials, name, objective, log, bounds=None):
    """Val objective of each trial against one hyperparameter; failed trials as red crosses on the floor.

    trials: a DataFrame with columns `name`, "objective" (NaN when failed), "stage", "failed".
    bounds: the searched range (min, max), drawn as dotted lines so that a best value at its edge shows.
    """
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ok = trials[~trials["failed"] & trials["objective"].notna()]
    for stage, group in ok.groupby("stage", sort=True):
        ax.scatter(group[name], group["objective"], s=30, label=f"{stage}", color=STAGE_COLOURS.get(stage))
    bad = trials[trials["failed"] | trials["objective"].isna()]
    if len(bad):
        ax.scatter(
            bad[name],
            np.zeros(len(bad)),
            transform=ax.get_xaxis_transform(),
            marker="x",
            color="red",
            s=40,
            clip_on=False,
            label="failed / exploded",
        )
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="both", labelsize=8, labelrotation=30)
    if bounds is not None:
        low, high = bounds
        for edge in bounds:
            ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
        if log:
            ax.set_xlim(low / 1.2, high * 1.2)
        else:
            margin = 0.04 * (high - low)
            ax.set_xlim(low - margin, high + margin)
    ax.set_xlabel(f"{name}{' (log axis)' if log else ''}")
    ax.set_ylabel(f"val {objective}" if not objective.startswith("val") else objective)
    ax.grid(alpha=0.3)
    if len(trials):
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no trials")
    ax.set_title(name)
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def image_grid(images, captions, title, columns=6):
    """A grid of uint8 images (H, W[, C]) with a caption under each."""
    count = max(1, len(images))
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    fig = Figure(figsize=(1.7 * columns, 1.95 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    if not images:
        _empty(axes[0], "no misclassified test images")
    for ax, image, caption in zip(axes, images, captions):
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)


# ------------------------------------------------------------------ sanity checks


def lr_sweep(check):
    curve, n = check["curve"], check["numbers"]
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.subplots()
    if curve.get("step_loss"):
        ax.semilogx(curve["lr"], curve["step_loss"], color="0.85", lw=1, label="loss of each step's batch")
    ax.semilogx(curve["lr"], curve["loss"], color="0.55", lw=1, label="loss on the held batch")
    ax.semilogx(curve["lr"][: len(curve["smoothed"])], curve["smoothed"], color="C0", lw=2, label="held, smoothed")
    ax.axvspan(*n["suggested_range"], color="C2", alpha=0.15, label="suggested coarse range")
    ax.axvline(n["lr_steepest"], color="C1", ls="--", label=f"falls fastest {n['lr_steepest']:.1e}")
    if n["lr_explodes"]:
        ax.axvline(n["lr_explodes"], color="C3", ls="--", label=f"explodes {n['lr_explodes']:.1e}")
    if n.get("card_lr"):
        ax.axvline(n["card_lr"], color="k", ls=":", label=f"card {n['card_lr']:g}")
    finite = [v for v in curve["loss"] if math.isfinite(v)] or [n["start_loss"]]
    ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * n["start_loss"]) * 1.05)
    ax.set(xlabel="learning rate", ylabel="loss", title="learning-rate sweep")
    ax.legend(fontsize=8)
    return fig


def activations(check):
    rows = check["layers"]
    depth = np.arange(1, len(rows) + 1)
    fig = Figure(figsize=(max(7, len(rows) * 0.25), 6), layout="tight")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(depth, [r["mean"] for r in rows], "o-", label="mean")
    top.plot(depth, [r["std"] for r in rows], "s-", label="std")
    top.axhline(check["collapsed_std"], color="C3", ls=":", lw=1, label=f"collapse std {check['collapsed_std']:g}")
    top.set(ylabel="activation", title="activations at initialisation by depth")
    top.legend(fontsize=8)
    zeros = [np.nan if r["zero_fraction"] is None else r["zero_fraction"] for r in rows]
    saturated = [np.nan if r["saturated_fraction"] is None else r["saturated_fraction"] for r in rows]
    bottom.plot(depth, zeros, "o-", label="zero fraction (ReLU)")
    bottom.plot(depth, saturated, "s-", label="saturated fraction (tanh/sigmoid)")
    for r, d in zip(rows, depth):
        if r["flags"]:
            bottom.annotate(",".join(r["flags"]), (d, 1.0), fontsize=6, rotation=90, va="top", color="C3")
    bottom.set(ylabel="fraction", ylim=(-0.02, 1.02), xlabel="layer")
    bottom.set_xticks(depth, [r["layer"].split("/")[-1] for r in rows], rotation=90, fontsize=6)
    bottom.legend(fontsize=8)
    return fig


def overfit(check):
    history = check["history"]
    fig = Figure(figsize=(6, 3.5), layout="tight")
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="loss")
    ax.plot(epochs, [h["accuracy"] for h in history], label="accuracy")
    ax.set(xlabel="epoch", title=f"overfitting {check['numbers']['examples']} examples")
    ax.legend()
    return fig


@literal_text
def reliability(panels):
    """Reliability diagrams side by side: per confidence bin, accuracy (bars) against the diagonal.

    panels: [(title, {"confidence", "accuracy", "count"} per bin as arrays, ece)].
    """
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.8))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    for ax, (title, bins, ece) in zip(axes, panels):
        edges = np.linspace(0.0, 1.0, len(bins["count"]) + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        filled = np.asarray(bins["count"]) > 0
        ax.bar(
            centres[filled],
            np.asarray(bins["accuracy"])[filled],
            width=edges[1] - edges[0],
            alpha=0.8,
            edgecolor="black",
            linewidth=0.5,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        ax.scatter(
            np.asarray(bins["confidence"])[filled],
            np.asarray(bins["accuracy"])[filled],
            s=12,
            color="black",
            zorder=3,
            label="mean confidence",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: ECE {ece:.3f}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def parallel_coordinates(axes, objective, failed, label):
    """One line per trial across one vertical axis per hyperparameter, each scaled to its own range
    (log10 for log-sampled ones), coloured by the objective; failed trials dashed red.

    axes: [(name, values as floats, tick labels {position 0-1: text})]; objective: floats (NaN when failed).
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    fig = Figure(figsize=(max(5.0, 1.6 * len(axes) + 2.0), 4.0))
    ax = fig.subplots()
    objective = np.asarray(objective, dtype=float)
    finite = objective[np.isfinite(objective)]
    norm = (
        Normalize(finite.min(), finite.max() if finite.max() > finite.min() else finite.min() + 1e-9)
        if len(finite)
        else Normalize(0, 1)
    )
    cmap = colormaps["viridis"]
    x = np.arange(len(axes))
    lines = np.column_stack([values for _, values, _ in axes]) if axes else np.zeros((len(objective), 0))
    order = np.argsort(np.where(np.isfinite(objective), objective, -np.inf), kind="stable")  # best drawn on top
    for i in order:
        if failed[i] or not np.isfinite(objective[i]):
            ax.plot(x, lines[i], color="red", linestyle="--", linewidth=1, alpha=0.7)
        else:
            ax.plot(x, lines[i], color=cmap(norm(objective[i])), linewidth=1.8, alpha=0.9)
    for k, (_, _, ticks) in enumerate(axes):
        ax.axvline(k, color="black", linewidth=0.8)
        for position, text in ticks.items():
            ax.text(k + 0.03, position, text, fontsize=7, va="center", color="dimgray")
    ax.set_xticks(x, [name for name, _, _ in axes], fontsize=8, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, max(0.8, len(axes) - 0.4))
    if not len(objective):
        _empty(ax, "no trials")
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    ax.set_title("every trial (dashed red: failed or exploded)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def importance_bars(names, spearman, forest):
    """|Spearman rho| and random-forest importance of each hyperparameter on the objective."""
    fig = Figure(figsize=(5.5, 0.45 * len(names) + 1.6))
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y - 0.2, np.abs(spearman), height=0.4, label="|Spearman rho|")
    ax.barh(y + 0.2, forest, height=0.4, label="random-forest importance")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7)
    ax.set_title("hyperparameter importance (rough with few trials)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def before_after(sides, target=None):
    """Test accuracy before and after: each side's first run with its 95% interval, its other seeds
    as small dots, and the target as a dashed line. sides: [(label, [accuracy per seed], (low, high))]."""
    fig = Figure(figsize=(4.6, 2.6))
    ax = fig.subplots()
    for y, (_, values, (low, high)) in enumerate(sides):
        ax.errorbar(
            [values[0]],
            [y],
            xerr=[[values[0] - low], [high - values[0]]],
            fmt="o",
            capsize=4,
            color=STAGE_COLOURS["coarse"] if y == 0 else STAGE_COLOURS["fine"],
        )
        if len(values) > 1:
            ax.scatter(
                values[1:],
                [y] * (len(values) - 1),
                s=12,
                color="grey",
                zorder=3,
                label="other seeds" if y == 0 else None,
            )
    if target is not None:
        ax.axvline(target, color="red", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_yticks(range(len(sides)), [label for label, _, _ in sides])
    ax.set_ylim(-0.6, len(sides) - 0.4)
    ax.set_xlabel("test accuracy (95% interval)")
    ax.grid(alpha=0.3, axis="x")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return png_bytes(fig)


@literal_text
def gradcam_grid(images, panels, captions, class_names, columns=3):
    """Per image: the image, then each model's Grad-CAM heatmap over it, titled with its prediction.
    panels: [(label, heatmaps in [0, 1] at the images' size, predicted class indices)]."""
    from matplotlib import colormaps

    width = 1 + len(panels)
    rows = math.ceil(len(images) / columns) if len(images) else 1
    fig = Figure(figsize=(1.6 * width * columns, 1.9 * rows))
    axes = np.atleast_2d(fig.subplots(rows, width * columns))
    for ax in axes.flat:
        ax.axis("off")
    jet = colormaps["jet"]
    for i, image in enumerate(images):
        row, first = divmod(i, columns)
        ax = axes[row, first * width]
        ax.imshow(image.astype("uint8"))
        ax.set_title(captions[i], fontsize=7)
        for k, (label, heat, predicted) in enumerate(panels, 1):
            overlay = 0.55 * image / 255.0 + 0.45 * jet(heat[i])[..., :3]
            ax = axes[row, first * width + k]
            ax.imshow(np.clip(overlay, 0, 1))
            ax.set_title(f"{label}: {class_names[predicted[i]]}", fontsize=7)
    if not len(images):
        _empty(axes[0, 0], "no images")
    fig.tight_layout()
    return png_bytes(fig)
