"""The report on cross-validation (split.folds): every fold's run, each side's mean ± std and 95% t
interval, the before/after change paired by fold, and, without a test subset (split.test 0), the
held-out folds pooled and the figure labelled optimistic. comparison.json's `folds` (records.Folds)."""

import pandas as pd

from project.report import compare
from project.report.blocks import MISSING, ci_text, f4, p, p4, signed, table
from project.train.metrics import wilson_interval


def cross_validated(runs):
    """True when the runs are cross-validation folds (split.folds)."""
    return any(r["metrics"].fold for r in runs["baseline"])


def fold_data(runs):
    """comparison.json's folds: every fold's run on each side, mean ± std and 95% t interval of each
    side, the runs both sides trained paired by (seed, fold); without a test subset (split.test 0) also
    the accuracy of the first seed's held-out folds pooled: every image predicted once, by the model
    that did not train on it."""

    def units(group):
        return {(r["metrics"].seed, r["metrics"].fold): r["metrics"].test_accuracy for r in group}

    first = runs["baseline"][0]["metrics"]
    result = compare.fold_comparison(units(runs["baseline"]), units(runs["tuned"]) or None)
    result |= {
        "folds": first.folds,
        "seeds": len({r["metrics"].seed for r in runs["baseline"]}),
        "measured_on": first.test_subset,
        "runs": {
            side: [
                {
                    "run": r["name"],
                    "seed": r["metrics"].seed,
                    "fold": r["metrics"].fold,
                    "val_accuracy": r["metrics"].val_accuracy,
                    "test_accuracy": r["metrics"].test_accuracy,
                }
                for r in runs[name]
            ]
            for side, name in (("before", "baseline"), ("after", "tuned"))
        },
        "pooled": None,
    }
    if first.test_subset == "held_out_fold":
        pooled = pd.concat([r["predictions"] for r in runs["baseline"] if r["metrics"].seed == first.seed])
        right, count = int((pooled["true"] == pooled["predicted"]).sum()), len(pooled)
        result["pooled"] = {"accuracy": right / count, "count": count, "ci95": list(wilson_interval(right, count))}
    return result


def cross_validated_headline(folds):
    b, pooled = folds["before"], folds["pooled"]
    return (
        f"Cross-validated accuracy over {folds['folds']} folds (no test subset: split.test 0): "
        f"{b['mean']:.4f} ± {b['std'] or 0:.4f}, 95 % t interval {ci_text(b['ci95'])}; pooled over the held-out "
        f"folds {pooled['accuracy']:.4f} {ci_text(pooled['ci95'])} on {pooled['count']} images. Each fold's figure is "
        f"measured on the fold that also chose its checkpoint: optimistic, not a held-out test result."
    )


OPTIMISTIC = (
    "**No test subset (split.test: 0).** Every *test* figure in this report is measured on a run's held-out "
    "fold, the same images that chose its checkpoint (and early stopping): a cross-validated figure, "
    "optimistic, not a held-out test result. Keep a test subset apart (split.test > 0) for a fair one."
)


def fold_blocks(folds):
    """The cross-validation table: each fold's run, then each side's mean ± std and the 95% t interval of
    its mean; with a tuned side, the paired t-test over the folds both sides trained."""
    measured = "held-out-fold accuracy" if folds["measured_on"] == "held_out_fold" else "test accuracy"
    before, after = folds["runs"]["before"], folds["runs"]["after"]
    tuned = {(r["seed"], r["fold"]): r for r in after}
    head = ["run", "seed", "fold", "val accuracy", f"{measured} before"]
    head += [f"{measured} after (tuned)", "change"] if after else []
    rows = []
    for r in before:
        a = tuned.get((r["seed"], r["fold"]))
        row = [r["run"], str(r["seed"]), str(r["fold"]), f4(r["val_accuracy"]), f4(r["test_accuracy"])]
        if after:
            row += [f4(a["test_accuracy"]), signed(a["test_accuracy"] - r["test_accuracy"])] if a else [MISSING, ""]
        rows.append(row)
    sides = [folds["before"]] + ([folds["after"]] if after else [])
    extra = [""] if after else []
    rows.append(["mean ± std", "", "", "", *(_spread(side) for side in sides), *extra])
    rows.append(["95% t interval of the mean", "", "", "", *(_ci(side["ci95"]) for side in sides), *extra])
    blocks = [table(head, rows)]
    seeds = f" × {folds['seeds']} seeds" if folds["seeds"] > 1 else ""
    text = (
        f"**Cross-validation:** {folds['folds']} folds{seeds} (split.folds); each run trains on the other folds and "
        f"validates on its own. The interval is Student's t over the runs (n = {folds['before']['n']}), so few folds give a wide one."
    )
    if folds["pooled"]:
        pooled = folds["pooled"]
        text += (
            f" Pooled over the held-out folds of the first seed: {f4(pooled['accuracy'])} {ci_text(pooled['ci95'])} "
            f"(Wilson, {pooled['count']} images, each predicted once by the run that did not train on it)."
        )
    paired = folds["paired"]
    if paired:
        test = (
            f"t = {paired['t']:.3f}, df = {paired['df']:.0f}, p = {p4(paired['p_value'])}"
            if paired["p_value"] is not None
            else f"not computed: {paired['reason']}"
        )
        text += (
            f" **Paired by fold** ({len(paired['differences'])} runs both sides trained, the same training and "
            f"validation images): mean change {signed(paired['difference'])}, 95% t interval {_ci(paired['ci95'])}; "
            f"paired t-test {test}."
        )
    return blocks + [p(text)]


def _spread(side):
    return f"{side['mean']:.4f} ± {side['std']:.4f}" if side["std"] is not None else f"{side['mean']:.4f} (one run)"


def _ci(interval):
    return ci_text(interval) if interval else "—"


def runs_label(group):
    """How many runs a group holds: '3 seeds', '3 folds' or '2 seeds × 3 folds'."""
    seeds, folds = len({r["metrics"].seed for r in group}), len({r["metrics"].fold for r in group if r["metrics"].fold})
    text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    if folds:
        text = f"{folds} folds" if seeds == 1 else f"{text} × {folds} folds"
    return text
