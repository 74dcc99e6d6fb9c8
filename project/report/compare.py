"""Before/after comparisons a grader can trust: paired tests on the shared test images, the seed-level
test, the Summary's headline sentence and the verdict against each number the paper reports.

Plain functions on numbers and tables (numpy, scipy, pandas); no TensorFlow. Every random draw comes
from a numpy Generator with a fixed seed, so the same runs give the same report.
"""

import math
import re

import numpy as np
from scipy import stats

from project.errors import UserError

RESAMPLES = 2000
SEED = 0
ALPHA = 0.05
VERDICTS = ("reproduced", "inconclusive", "below", "above", "not comparable")


def _paired(correct_before, correct_after):
    before, after = np.asarray(correct_before, dtype=bool), np.asarray(correct_after, dtype=bool)
    if before.shape != after.shape or before.ndim != 1 or not len(before):
        raise ValueError(
            f"two non-empty 1-D arrays of the same length are needed, got shapes {before.shape} and {after.shape}"
        )
    return before, after


def interval95(values):
    lo, hi = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5])
    return [float(lo), float(hi)]


def mcnemar_exact(correct_before, correct_after):
    """b: images right before and wrong after; c: the reverse. Under no change each discordant image is
    b or c with probability 1/2, so p is the two-sided exact binomial test of b out of b + c."""
    before, after = _paired(correct_before, correct_after)
    b, c = int(np.sum(before & ~after)), int(np.sum(~before & after))
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "n_discordant": b + c, "p_value": p}


def paired_bootstrap(correct_before, correct_after, resamples=RESAMPLES, seed=SEED):
    """95% percentile interval of accuracy(after) - accuracy(before), resampling test images (the same for both)."""
    before, after = _paired(correct_before, correct_after)
    change = after.astype(float) - before.astype(float)
    rng = np.random.default_rng(seed)
    n = len(change)
    differences = [change[rng.integers(0, n, n)].mean() for _ in range(resamples)]
    return {
        "difference": float(change.mean()),
        "ci95": interval95(differences),
        "images": n,
        "resamples": resamples,
        "seed": seed,
    }


def bootstrap_metric(function, y_true, probabilities, resamples=RESAMPLES, seed=SEED):
    """95% percentile interval of function(y_true, probabilities) over test images resampled with replacement;
    resamples where the metric is undefined (None, e.g. AUC without some class) are left out and counted."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        value = function(y_true[index], probabilities[index])
        if value is not None:
            values.append(value)
    return {
        "ci95": interval95(values) if values else None,
        "resamples": resamples,
        "defined": len(values),
        "seed": seed,
    }


def _side(values):
    return {
        "accuracies": [float(v) for v in values],
        "n": len(values),
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
    }


def welch(before, after):
    """Welch's t-test of after against before; p is None (with the reason) when it is undefined."""
    if min(len(before), len(after)) < 2:
        return {
            "t": None,
            "df": None,
            "p_value": None,
            "reason": f"Welch's t-test needs at least 2 seeds on each side (n = {len(before)} before, {len(after)} after)",
        }
    if np.ptp(before) == 0 and np.ptp(after) == 0:
        return {
            "t": None,
            "df": None,
            "p_value": None,
            "reason": "every seed gave the same accuracy on each side (zero variance on both sides): t is undefined",
        }
    result = stats.ttest_ind(after, before, equal_var=False)
    return {"t": float(result.statistic), "df": float(result.df), "p_value": float(result.pvalue), "reason": ""}


def permutation_floor(n_before, n_after):
    """The smallest two-sided p an exact permutation test of n_before vs n_after seeds can give."""
    relabellings = math.comb(n_before + n_after, n_before)
    return min(1.0, (2 if n_before == n_after else 1) / relabellings), relabellings


def seed_comparison(before_accs, after_accs, resamples=RESAMPLES, seed=SEED):
    """Per-seed test accuracies of each side: mean ± std, Welch's t-test and a bootstrap interval of the
    difference of means (seeds resampled within each side)."""
    before, after = np.asarray(before_accs, dtype=float), np.asarray(after_accs, dtype=float)
    rng = np.random.default_rng(seed)
    differences = [
        rng.choice(after, len(after)).mean() - rng.choice(before, len(before)).mean() for _ in range(resamples)
    ]
    floor, relabellings = permutation_floor(len(before), len(after))
    note = (
        f"n = {len(before)} seeds before, {len(after)} after. An exact permutation test of {len(before)} vs "
        f"{len(after)} seeds has only {relabellings} relabellings, so its two-sided p cannot go below {floor:.3g}; "
        f"Welch's t-test is used instead (it assumes roughly normal per-seed accuracies, not equal variances)."
    )
    return {
        "before": _side(before),
        "after": _side(after),
        "difference": float(after.mean() - before.mean()),
        "ci95": interval95(differences),
        "resamples": resamples,
        "seed": seed,
        "welch": welch(before, after),
        "note": note,
    }


def uses_seeds(seeds):
    return bool(seeds) and seeds["before"]["n"] >= 2 and seeds["after"]["n"] >= 2


# ------------------------------------------------------------------ cross-validation (split.folds)


def t_interval(values):
    """95% t interval of the mean of `values` (folds are few: the t distribution, not the normal); None below 2."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    half = stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def paired_t(before, after):
    """Student's paired t-test of after against before (the same folds); p is None, with the reason, when undefined."""
    differences = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if len(differences) < 2:
        return {
            "t": None,
            "df": None,
            "p_value": None,
            "reason": "a paired t-test needs at least 2 folds on both sides",
        }
    if np.ptp(differences) == 0:
        return {
            "t": None,
            "df": None,
            "p_value": None,
            "reason": "every fold changed by the same amount (zero variance of the differences): t is undefined",
        }
    result = stats.ttest_rel(after, before)
    return {
        "t": float(result.statistic),
        "df": float(len(differences) - 1),
        "p_value": float(result.pvalue),
        "reason": "",
    }


def fold_comparison(before, after=None):
    """Cross-validated accuracies, {(seed, fold): accuracy} per side: each side's mean ± std and the 95% t
    interval of its mean; with an after side, the runs both sides have (the same seed and fold: the same
    training and validation images) paired, the mean difference, its t interval and the paired t-test."""
    result = {"before": _side(list(before.values())) | {"ci95": t_interval(list(before.values()))}}
    result |= {"after": None, "paired": None}
    if after:
        result["after"] = _side(list(after.values())) | {"ci95": t_interval(list(after.values()))}
        common = sorted(set(before) & set(after))
        if common:
            b, a = [before[u] for u in common], [after[u] for u in common]
            differences = np.subtract(a, b)
            result["paired"] = {
                "units": [list(u) for u in common],
                "differences": [float(d) for d in differences],
                "difference": float(differences.mean()),
                "ci95": t_interval(differences),
                **paired_t(b, a),
            }
    return result


def uses_folds(folds):
    return bool(folds) and bool(folds["paired"]) and len(folds["paired"]["differences"]) >= 2


def decision(ci95, p_value):
    """improved / worse when the interval excludes 0 and p < 0.05; else within noise."""
    if p_value is not None and p_value < ALPHA:
        if ci95[0] > 0:
            return "improved"
        if ci95[1] < 0:
            return "worse"
    return "within noise"


def _number(value, sign=False):
    return (f"{value:+.4f}" if sign else f"{value:.4f}").replace("-", "\u2212")


def p_text(p_value):
    if p_value is None:
        return "p = n/a"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def deciding(paired, bootstrap, seeds=None, folds=None):
    """What the headline rests on: with 2+ folds both sides trained (split.folds) the paired difference
    over those folds, its t interval and the paired t-test's p; else with n >= 2 seeds on both sides the
    difference of mean accuracies, its bootstrap interval and Welch's p; otherwise the paired result on
    the shared test images (bootstrap interval, McNemar's exact p)."""
    if uses_folds(folds):
        f = folds["paired"]
        chosen = {
            "by": "folds",
            "test": "paired t-test over folds",
            "difference": f["difference"],
            "ci95": f["ci95"],
            "p_value": f["p_value"],
            "basis": f"paired by fold over the {len(f['differences'])} runs both sides trained, paired t-test",
        }
    elif uses_seeds(seeds):
        chosen = {
            "by": "seeds",
            "test": "Welch's t-test",
            "difference": seeds["difference"],
            "ci95": seeds["ci95"],
            "p_value": seeds["welch"]["p_value"],
            "basis": f"mean over {seeds['before']['n']} vs {seeds['after']['n']} seeds, Welch's t-test",
        }
    else:
        chosen = {
            "by": "paired",
            "test": "McNemar exact",
            "difference": bootstrap["difference"],
            "ci95": bootstrap["ci95"],
            "p_value": paired["p_value"],
            "basis": f"paired on the same {bootstrap['images']} test images, McNemar's exact test",
        }
    return chosen | {"result": decision(chosen["ci95"], chosen["p_value"])}


def headline(paired, bootstrap, seeds=None, folds=None):
    """The Summary's first sentence: improved, within noise, or worse (see `deciding`)."""
    d = deciding(paired, bootstrap, seeds, folds)
    stated = f"95 % CI [{_number(d['ci95'][0])}, {_number(d['ci95'][1])}], {p_text(d['p_value'])}; {d['basis']}"
    difference = _number(d["difference"], sign=True)
    if d["result"] == "improved":
        return f"Optimisation improved test accuracy by {difference} ({stated})."
    if d["result"] == "worse":
        return f"Optimisation made test accuracy worse by {difference} ({stated})."
    return f"The difference ({difference}, {stated}) is within noise: this is not evidence of an improvement."


def paired_correct(before, after, before_name="before", after_name="after"):
    """Per-image correctness of two runs' predictions.csv tables (source, true, predicted, ...), aligned on
    `source`; refused unless both hold exactly the same test images with the same labels."""
    for table, name in ((before, before_name), (after, after_name)):
        repeated = table["source"][table["source"].duplicated()]
        if len(repeated):
            raise UserError(
                f"{name} lists test image {repeated.iloc[0]} more than once: its predictions cannot be paired by image"
            )
    only_before = sorted(set(before["source"]) - set(after["source"]))
    only_after = sorted(set(after["source"]) - set(before["source"]))
    if only_before or only_after:
        examples = "; ".join(
            f"{len(items)} only in {name} (e.g. {items[0]})"
            for items, name in ((only_before, before_name), (only_after, after_name))
            if items
        )
        raise UserError(
            f"the runs were not evaluated on the same test images: {examples}. A before/after comparison pairs "
            f"each test image, so both runs must use the same split (runs/<paper>__<dataset>/split.csv): "
            f"retrain the older one."
        )
    merged = before.merge(after, on="source", suffixes=("_before", "_after")).sort_values("source", kind="stable")
    relabelled = merged[merged["true_before"] != merged["true_after"]]
    if len(relabelled):
        raise UserError(
            f"{before_name} and {after_name} give different true classes to {len(relabelled)} test images "
            f"(e.g. {relabelled['source'].iloc[0]}): the dataset changed between the runs; retrain the older one."
        )
    return (
        (merged["true_before"] == merged["predicted_before"]).to_numpy(),
        (merged["true_after"] == merged["predicted_after"]).to_numpy(),
    )


# ------------------------------------------------------------------ against the paper


def same_dataset(reported, card_name):
    """A reported dataset names this card when both agree ignoring case, spaces, hyphens and underscores."""

    def key(text):
        return re.sub(r"[^a-z0-9]", "", str(text).lower())

    return bool(key(card_name)) and key(reported) == key(card_name)


def paper_verdict(value, ours, interval, tolerance=0.02, comparable=True):
    """reproduced: the paper's value lies inside our 95% interval, of half-width <= tolerance; inconclusive: inside
    a wider interval; below / above: our whole interval lies below / above it; not comparable: another dataset,
    or a metric our run does not give (ours None)."""
    if not comparable or ours is None or interval is None:
        return "not comparable"
    lo, hi = interval
    if hi < value:
        return "below"
    if lo > value:
        return "above"
    return "reproduced" if (hi - lo) / 2 <= tolerance else "inconclusive"


def verdict_text(verdict, value, interval, tolerance, reason=""):
    """The verdict in words (reason: why a row is not comparable)."""
    if verdict == "not comparable":
        return f"not comparable: {reason}"
    ci = f"[{interval[0]:.4f}, {interval[1]:.4f}]"
    half = (interval[1] - interval[0]) / 2
    return {
        "reproduced": f"reproduced: the paper's {value:.4f} lies inside our 95% interval {ci}, whose half-width {half:.4f} "
        f"is within the tolerance {tolerance:g}",
        "inconclusive": f"inconclusive: the paper's {value:.4f} lies inside our 95% interval {ci}, but its half-width "
        f"{half:.4f} is above the tolerance {tolerance:g}: too wide to tell",
        "below": f"below: our result is below the paper's (our whole 95% interval {ci} lies under {value:.4f})",
        "above": f"above: our result is above the paper's (our whole 95% interval {ci} lies over {value:.4f})",
    }[verdict]


def overall_verdict(verdicts):
    """(verdict, detail) over all rows: reproduced when every comparable row is; not reproduced when one lies
    below or above; inconclusive otherwise; not comparable without a comparable row."""
    comparable = [v for v in verdicts if v != "not comparable"]
    if not comparable:
        overall = "not comparable"
    elif all(v == "reproduced" for v in comparable):
        overall = "reproduced"
    elif any(v in ("below", "above") for v in comparable):
        overall = "not reproduced"
    else:
        overall = "inconclusive"
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts)
    if not verdicts:
        return overall, "the paper card lists no reported result."
    if not comparable:
        return overall, (
            f"no result the paper reports ({len(verdicts)} in the card) can be compared with this run (another "
            f"dataset, or a metric this run does not give): the recipe is reproduced, not the result."
        )
    return overall, f"{len(comparable)} of the {len(verdicts)} results the paper reports are comparable ({counts})."
