"""How sure the model is: reliability diagrams, the expected calibration error (ECE, 15 bins) and
temperature scaling fitted on val only (Guo et al. 2017, "On calibration of modern neural networks").

A temperature divides the logits, so it never changes a prediction: the accuracy figures stay as
they are; only the confidence attached to them moves.
"""

import numpy as np
from scipy.optimize import minimize_scalar

from project import figures
from project.report.blocks import f4, figure, p, table, warning
from project.report.load import probabilities_of

BINS = 15
VAL_PREDICTIONS = "predictions_val.csv"


def reliability(probabilities, labels, bins=BINS):
    """Per confidence bin ((k-1)/bins, k/bins]: count, mean confidence and accuracy; and the ECE,
    the count-weighted mean gap between accuracy and confidence."""
    probabilities = np.asarray(probabilities, dtype=float)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    shown = np.maximum(count, 1)
    return {
        "ece": float(np.abs(correct_sum - confidence_sum).sum() / max(len(labels), 1)),
        "count": count,
        "confidence": confidence_sum / shown,
        "accuracy": correct_sum / shown,
    }


def _log_probabilities(probabilities):
    return np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0))


def with_temperature(probabilities, temperature):
    """softmax(log p / T): the logits up to a constant, divided by T."""
    z = _log_probabilities(probabilities) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probabilities, labels):
    """The T > 0 minimising the negative log-likelihood of `labels` (searched in log space)."""
    log_p = _log_probabilities(probabilities)
    rows = np.arange(len(labels))

    def nll(log_t):
        z = log_p / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibrate(test, val):
    """The calibration figures of one run: test (probabilities, labels) and val (or None)."""
    before = reliability(*test)
    if val is None:
        return {"ece": before["ece"], "bins": before, "temperature": None, "ece_scaled": None}
    temperature = fit_temperature(*val)
    scaled = reliability(with_temperature(test[0], temperature), test[1])
    return {"ece": before["ece"], "bins": before, "temperature": temperature, "ece_scaled": scaled["ece"]}


def calibration_section(runs, figs):
    """Before and after; a run trained before predictions_val.csv existed gets no temperature."""
    rows, panels, lines, found = [], [], [], {}
    for label, name in (("before", "baseline"), ("after", "tuned")):
        if not runs[name]:
            continue
        run = runs[name][0]
        names = run["metrics"].class_names
        val_table = run["val_predictions"]
        result = calibrate(
            probabilities_of(run["predictions"], names),
            probabilities_of(val_table, names) if val_table is not None else None,
        )
        found[label] = result
        panels.append((f"{label} ({run['name']})", result["bins"], result["ece"]))
        t = result["temperature"]
        rows.append(
            [
                label,
                run["name"],
                f4(result["ece"]),
                "—" if t is None else f"{t:.2f}",
                "—" if t is None else f4(result["ece_scaled"]),
            ]
        )
        if t is None:
            lines.append(
                warning(f"{run['name']} has no {VAL_PREDICTIONS} (trained before it was written): no temperature.")
            )
        else:
            lines.append(
                p(
                    f"**{label.capitalize()}:** ECE {result['ece']:.3f} → {result['ece_scaled']:.3f} after temperature "
                    f"T = {t:.2f} fitted on val (the accuracy figures do not change: a temperature keeps every argmax)."
                )
            )
    figs["reliability.png"] = figures.reliability(panels)
    blocks = [
        p(
            f"How far the confidence of the test predictions matches their accuracy: {BINS} bins of confidence, the "
            f"expected calibration error (ECE, the count-weighted gap between accuracy and confidence per bin), and "
            f"temperature scaling (Guo et al. 2017) fitted on the validation subset only, then applied to test."
        ),
        figure("reliability.png", "reliability diagrams before and after optimisation"),
        table(["run", "folder", f"test ECE ({BINS} bins)", "temperature T (val)", "test ECE after T"], rows),
        *lines,
    ]
    return blocks, {k: {key: v[key] for key in ("ece", "temperature", "ece_scaled")} for k, v in found.items()}
