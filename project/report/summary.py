"""The report's Summary and Paper vs reproduction sections, built from one before/after comparison.

`comparison(runs, card, config)` gathers every number of comparison.json (project.report.compare does the
statistics); `summary` and `paper_section` turn it into blocks. A run's metrics are a records.Metrics.
"""

from project.records import Metrics
from project.report import compare
from project.report.blocks import MISSING, accuracy_ci, ci_text, f4, mean_std, p, p4, signed, table, warning
from project.report.folds import (
    OPTIMISTIC,
    cross_validated,
    cross_validated_headline,
    fold_blocks,
    fold_data,
    runs_label,
)
from project.report.load import probabilities_of
from project.train.metrics import IMBALANCED, SCALAR, imbalance_ratio, wilson_interval

SUMMARY_METRICS = [
    ("test accuracy", "test_accuracy"),
    ("test macro-F1", "test_macro_f1"),
    ("test balanced accuracy", "test_balanced_accuracy"),
    ("test loss (cross-entropy)", "test_loss"),
]
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "top5_accuracy": "top-5 accuracy",
}
UNDEFINED = {
    "roc_auc": "a class is missing from the test subset, so ROC AUC is undefined",
    "top5_accuracy": "top-5 accuracy needs more than 5 classes",
}
INTERVALS = (
    "**Ours** is the {run} run's value on the test subset with its 95% interval: a Wilson interval for proportions "
    "(accuracy and top-5 accuracy on all test images, sensitivity on the images of the class, specificity on the others), "
    "a percentile bootstrap over the test images of predictions.csv for macro-F1, balanced accuracy and ROC AUC. With "
    "several seeds their mean ± std follows; the verdict uses the interval. **Reproduced:** the paper's value lies inside "
    "the interval and its half-width is at most the row's tolerance; **inconclusive:** inside a wider interval; "
    "**below / above:** the whole interval lies below / above the paper's value; **not comparable:** another dataset, "
    "or a metric this run does not give."
)


def value(metrics, key):
    """A test metric of a run's metrics.json: its top-level copy (test_accuracy, ...) or the `test` scores'."""
    return getattr(metrics, key) if key in Metrics.model_fields else getattr(metrics.test, key.removeprefix("test_"))


# ------------------------------------------------------------------ the numbers (comparison.json)


def comparison(runs, card, config):
    before, after = runs["baseline"][0], (runs["tuned"][0] if runs["tuned"] else None)
    final = (after or before)["metrics"]
    test = final.test
    ratio = imbalance_ratio(final.counts.train)
    imbalanced = bool(ratio > IMBALANCED)
    data = {
        "before": before["name"],
        "after": after["name"] if after else None,
        "headline": "No tuned run yet: there is no before/after comparison.",
        "decision": None,
        "paired": None,
        "bootstrap": None,
        "seeds": None,
        "trivial_baseline": {
            "subset": "test",
            "majority_share": test.majority_share,
            **test.trivial_baseline.model_dump(),
        },
        "train_imbalance_ratio": ratio,
        "imbalanced": imbalanced,
        "lead_metrics": ["macro_f1", "balanced_accuracy"] if imbalanced else ["accuracy"],
        "selection": selection((after or before)["config"]["paper"]),
        "paper": paper_rows(card, config, runs),
        "folds": fold_data(runs) if cross_validated(runs) else None,
    }
    if after:
        # a test image one run could not decode (its metrics.json lists it) is paired in neither
        skipped = set(before["metrics"].skipped_images.test) | set(after["metrics"].skipped_images.test)
        correct = compare.paired_correct(
            *(r["predictions"][~r["predictions"]["source"].isin(skipped)] for r in (before, after)),
            str(before["folder"] / "predictions.csv"),
            str(after["folder"] / "predictions.csv"),
        )
        data["paired"] = {
            "test": "McNemar exact: two-sided binomial test of b out of b + c, p = 0.5",
            **compare.mcnemar_exact(*correct),
        }
        data["bootstrap"] = compare.paired_bootstrap(*correct)
        if (len(runs["baseline"]) > 1 or len(runs["tuned"]) > 1) and not data["folds"]:
            data["seeds"] = compare.seed_comparison(
                [r["metrics"].test_accuracy for r in runs["baseline"]],
                [r["metrics"].test_accuracy for r in runs["tuned"]],
            )
        data["decision"] = compare.deciding(data["paired"], data["bootstrap"], data["seeds"], data["folds"])
        data["headline"] = compare.headline(data["paired"], data["bootstrap"], data["seeds"], data["folds"])
    elif data["folds"] and data["folds"]["measured_on"] == "held_out_fold":
        data["headline"] = cross_validated_headline(data["folds"])
    return data


def selection(paper):
    """The metrics that chose the checkpoint (and early stopping) and ranked the search, from a resolved config."""
    stopping, search = paper["training"]["early_stopping"], paper["search"]
    return {
        "checkpoint": stopping["monitor"] if stopping else "val_accuracy",
        "early_stopping": bool(stopping),
        "search": search["objective"] if search else None,
        "search_direction": search["direction"] if search else None,
    }


def metric_value(metric, class_name, metrics):
    if metric in ("sensitivity", "specificity"):
        return getattr(metrics.test.per_class[class_name], metric)
    return value(metrics, f"test_{metric}")


def measure(r, run):
    """Our value of one reported metric, its 95% interval and how it was computed; or why there is none."""
    m = run["metrics"]
    names, count = m.class_names, m.test.count
    none = {"ours": None, "ci95": None, "interval": ""}
    name = r.class_name
    if r.metric in ("sensitivity", "specificity"):
        name = name or (names[1] if len(names) == 2 else None)
        if name is None:
            return none | {
                "reason": f"{r.metric} of which class? This dataset has {len(names)} classes: set class_name"
            }
        if name not in names:
            return none | {"reason": f"{name!r} is not a class of this dataset ({', '.join(names)})"}
        support = m.test.per_class[name].support
        total = support if r.metric == "sensitivity" else count - support
        ours = metric_value(r.metric, name, m)
        where = f"the {total} test images {'of' if r.metric == 'sensitivity' else 'not of'} class {name}"
        return {
            "ours": ours,
            "class_name": name,
            "ci95": list(wilson_interval(round(ours * total), total)),
            "interval": f"Wilson, on {where}",
            "reason": "",
        }
    ours = metric_value(r.metric, None, m)
    if ours is None:
        return none | {"reason": f"{UNDEFINED[r.metric]} (this dataset has {len(names)} classes)"}
    if r.metric in ("accuracy", "top5_accuracy"):
        return {
            "ours": ours,
            "ci95": list(wilson_interval(round(ours * count), count)),
            "interval": f"Wilson, on {count} test images",
            "reason": "",
        }
    probabilities, y_true = probabilities_of(run["predictions"], names)
    boot = compare.bootstrap_metric(SCALAR[r.metric], y_true, probabilities)
    if boot["ci95"] is None:
        return none | {
            "reason": f"{METRIC_NAMES[r.metric]} is undefined in every bootstrap resample of the test images"
        }
    return {
        "ours": ours,
        "ci95": boot["ci95"],
        "reason": "",
        "interval": f"bootstrap over the {len(y_true)} test images ({boot['resamples']} resamples, seed {boot['seed']})",
    }


def paper_rows(card, config, runs):
    group = runs["tuned"] or runs["baseline"]
    rows = []
    for r in card.reported:
        row = {
            "dataset": r.dataset,
            "metric": r.metric,
            "class_name": r.class_name,
            "value": r.value,
            "where": r.where,
            "test_size": r.test_size,
            "tolerance": r.tolerance,
            "note": r.note,
            "run": group[0]["name"],
            "ours": None,
            "ci95": None,
            "interval": "",
            "seeds": None,
        }
        reason = (
            ""
            if compare.same_dataset(r.dataset, config.dataset_name)
            else f"the paper measured it on {r.dataset}, this run on the dataset card {config.dataset_name}"
        )
        if not reason:
            measured = measure(r, group[0])
            reason = measured.pop("reason")
            row.update(measured)
        if row["ours"] is not None and len(group) > 1:
            mean, std = mean_std([metric_value(r.metric, row["class_name"], run["metrics"]) for run in group])
            row["seeds"] = {"n": len(group), "mean": mean, "std": std}
        row["verdict"] = compare.paper_verdict(r.value, row["ours"], row["ci95"], r.tolerance, comparable=not reason)
        row["explanation"] = compare.verdict_text(row["verdict"], r.value, row["ci95"], r.tolerance, reason)
        rows.append(row)
    overall, detail = compare.overall_verdict([row["verdict"] for row in rows])
    return {"overall": overall, "overall_detail": detail, "rows": rows}


def overall_text(paper):
    detail = paper["overall_detail"]
    return f"**Overall verdict against the paper: {paper['overall']}.** {detail[0].upper()}{detail[1:]}"


# ------------------------------------------------------------------ Summary


def summary(data, runs, target, target_source, cmd):
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    blocks = [p(data["headline"]), p(overall_text(data["paper"]))]
    optimistic = bool(data["folds"]) and data["folds"]["measured_on"] == "held_out_fold"
    if optimistic:
        blocks.append(warning(OPTIMISTIC))
    elif not after:
        blocks.append(
            warning(f"No tuned run yet: the after column is missing. Run `{cmd['tune']}` and then this report again.")
        )
    if data["imbalanced"]:
        blocks.append(p(imbalance_text(data, after or before, "tuned" if after else "baseline")))
    if data["paired"]:
        blocks.append(paired_table(data["paired"], data["bootstrap"]))
    if data["seeds"]:
        blocks += seed_blocks(data["seeds"])
    if data["folds"]:
        blocks += fold_blocks(data["folds"])
    blocks += [
        p(selection_text(data)),
        metric_table(data, runs),
        p(target_text(after or before, after, target, target_source)),
    ]
    blocks += [warning(text) for text in skipped_texts(runs)]
    if (len(runs["baseline"]) > 1 or len(runs["tuned"]) > 1) and not data["folds"]:
        blocks.append(_per_seed_table(runs))
    return blocks


def metric_table(data, runs):
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    trivial = data["trivial_baseline"]
    seeds = len(runs["baseline"]) > 1 or len(runs["tuned"]) > 1
    head = [
        "metric",
        f"before ({runs['baseline'][0]['name']})",  # with folds: the first fold's run (the folds: their own table)
        f"after ({runs['tuned'][0]['name'] if runs['tuned'] else 'tuned'})",
        "change",
        f"trivial baseline (always predicting class {trivial['predicts']})",
    ]
    if seeds:
        head += [
            f"before, mean ± std ({runs_label(runs['baseline'])})",
            f"after, mean ± std ({runs_label(runs['tuned'])})",
        ]
    blank = ["", ""] if seeds else []
    order = SUMMARY_METRICS if not data["imbalanced"] else [SUMMARY_METRICS[i] for i in (1, 2, 0, 3)]
    rows = []
    for label, key in order:
        base = key.removeprefix("test_")
        row = [
            label,
            f4(value(before, key)),
            f4(value(after, key)) if after else MISSING,
            signed(value(after, key) - value(before, key)) if after else "",
            f4(trivial[base]) if base in trivial else "—",
        ]
        rows.append(
            row + ([_mean_std_text(runs["baseline"], key), _mean_std_text(runs["tuned"], key)] if seeds else [])
        )
        if key == "test_accuracy":
            rows.append(
                [
                    "95% CI of test accuracy (Wilson)",
                    ci_text(accuracy_ci(before)),
                    ci_text(accuracy_ci(after)) if after else MISSING,
                    "",
                    "",
                ]
                + blank
            )
    if before.tta or (after and after.tta):
        rows.append(tta_row(before, after) + blank)
    rows.append(["test images", str(before.test.count), str(after.test.count) if after else MISSING, "", ""] + blank)
    return table(head, rows)


def tta_row(before, after):
    """evaluation.tta's figure, a row of its own under the plain test accuracy (which it never replaces)."""
    views = (before.tta or after.tta).views

    def shown(metrics):
        return f4(metrics.test_tta_accuracy) if metrics.tta else "—"

    both = before.tta and after and after.tta
    return [
        f"test accuracy with test-time augmentation (softmax averaged over the plain image, {', '.join(views)})",
        shown(before),
        (shown(after) if after else MISSING),
        signed(after.test_tta_accuracy - before.test_tta_accuracy) if both else "",
        "",
    ]


def skipped_texts(runs):
    """One line per run that skipped test images in its evaluation (metrics.json skipped_images)."""
    texts = []
    for run in runs["baseline"] + runs["tuned"]:
        m, skipped = run["metrics"], run["metrics"].skipped_images.test
        if skipped:
            n = len(skipped)
            texts.append(
                f"{run['name']}: {n} test image{' was' if n == 1 else 's were'} skipped: {', '.join(skipped)} "
                f"(not decodable when the run was evaluated, after the data check; listed in data_issues.csv). "
                f"Its test metrics are over the {m.test.count} images evaluated."
            )
    return texts


def target_text(final, after, target, target_source):
    lo, hi = accuracy_ci(final)
    met = final.test_accuracy >= target
    return (
        f"**Target {'met' if met else 'not met'}.** The {'tuned' if after else 'baseline'} model's test accuracy is "
        f"{f4(final.test_accuracy)} against the target {target:.4f} ({target_source}); its 95% interval "
        f"{ci_text((lo, hi))} "
        + (
            "lies entirely above the target."
            if lo >= target
            else "lies entirely below the target."
            if hi < target
            else "includes the target, so the test set is too small to be sure either way."
        )
    )


def imbalance_text(data, final, which):
    t = data["trivial_baseline"]
    f1, balanced, accuracy = (
        value(final, "test_macro_f1"),
        value(final, "test_balanced_accuracy"),
        value(final, "test_accuracy"),
    )
    return (
        f"**The training classes are imbalanced** (largest / smallest class in train: {data['train_imbalance_ratio']:.2f}, "
        f"above {IMBALANCED:g}), so macro-F1 and balanced accuracy lead, not accuracy. The {which} model's macro-F1 is "
        f"{f1:.4f}, {f1 - t['macro_f1']:+.4f} against the trivial baseline's {t['macro_f1']:.4f}, and its balanced "
        f"accuracy {balanced:.4f}, {balanced - t['balanced_accuracy']:+.4f} against {t['balanced_accuracy']:.4f} (the "
        f"trivial baseline always predicts {t['predicts']}); its accuracy is {accuracy:.4f} against {t['accuracy']:.4f}, "
        f"the majority class's share of the test subset."
    )


def paired_table(paired, bootstrap):
    return table(
        [f"paired comparison on the same {bootstrap['images']} test images", "value"],
        [
            ["b: right before, wrong after", str(paired["b"])],
            ["c: wrong before, right after", str(paired["c"])],
            [
                f"McNemar exact p (two-sided binomial, b of the {paired['n_discordant']} discordant images)",
                p4(paired["p_value"]),
            ],
            ["accuracy after − before", signed(bootstrap["difference"])],
            ["paired bootstrap 95% CI of the difference (images resampled)", ci_text(bootstrap["ci95"])],
            ["bootstrap resamples, seed", f"{bootstrap['resamples']}, seed {bootstrap['seed']}"],
        ],
    )


def seed_blocks(seeds):
    b, a = seeds["before"], seeds["after"]

    def spread(side):
        return (
            f"{side['mean']:.4f} ± {side['std']:.4f}" if side["std"] is not None else f"{side['mean']:.4f} (one seed)"
        )

    rows = [
        ["seeds (n)", str(b["n"]), str(a["n"])],
        ["test accuracy per seed", *(", ".join(f"{v:.4f}" for v in side["accuracies"]) for side in (b, a))],
        ["mean ± std (sample, ddof 1)", spread(b), spread(a)],
    ]
    w = seeds["welch"]
    test = (
        f"t = {w['t']:.3f}, df = {w['df']:.2f}, p = {p4(w['p_value'])}"
        if w["p_value"] is not None
        else f"not computed: {w['reason']}"
    )
    return [
        table(["seed-level comparison", "before (baseline)", "after (tuned)"], rows),
        p(
            f"**Welch's t-test** (n = {b['n']} before, {a['n']} after): {test}. Difference of means "
            f"{signed(seeds['difference'])}, bootstrap 95% CI {ci_text(seeds['ci95'])} ({seeds['resamples']} resamples of "
            f"the seeds within each side, seed {seeds['seed']}). {seeds['note']}"
        ),
    ]


def selection_text(data):
    chosen = data["selection"]
    stopping = " and early stopping" if chosen["early_stopping"] else ""
    search = (
        f"the search ranked its trials by `{chosen['search']}` ({chosen['search_direction']}imise)"
        if chosen["search"]
        else "there was no search"
    )
    lead = (
        ""
        if data["imbalanced"]
        else (
            f" **Lead metric:** accuracy, as the training classes are balanced enough (largest / smallest "
            f"{data['train_imbalance_ratio']:.2f}, at most {IMBALANCED:g})."
        )
    )
    return (
        f"**Selection:** each training stage's checkpoint{stopping} used `{chosen['checkpoint']}` on the validation subset; "
        f"{search}. The test subset chose nothing.{lead}"
    )


def _mean_std_text(group, key):
    if len(group) < 2:
        return MISSING if not group else f"{value(group[0]['metrics'], key):.4f} (one seed)"
    mean, std = mean_std([value(r["metrics"], key) for r in group])
    return f"{mean:.4f} ± {std:.4f}"


def _per_seed_table(runs):
    rows = [
        [
            r["name"],
            str(r["metrics"].seed),
            f4(r["metrics"].test_accuracy),
            f4(r["metrics"].test_macro_f1),
            f4(r["metrics"].test_loss),
        ]
        for name in ("baseline", "tuned")
        for r in runs[name]
    ]
    return table(["run", "seed", "test accuracy", "test macro-F1", "test loss"], rows)


# ------------------------------------------------------------------ paper vs reproduction


def citation_text(c):
    return f"{', '.join(c.authors)} ({c.year}). *{c.title}*. {c.venue}." + (f" {c.link}" if c.link else "")


def paper_section(data, card, config, runs):
    blocks = [p(overall_text(data["paper"])), p(citation_text(card.citation))]
    if card.summary.strip():
        blocks.append(p(card.summary.strip()))
    label = runs_label(runs["tuned"] or runs["baseline"])
    rows = [_paper_row(row, label) for row in data["paper"]["rows"]]
    if rows:
        blocks += [
            table(
                [
                    "dataset",
                    "metric",
                    "paper",
                    "where in the paper",
                    "paper's 95% CI (its test size)",
                    "ours, 95% CI",
                    "our interval",
                    "verdict",
                    "note",
                ],
                rows,
            ),
            p(INTERVALS.format(run=data["paper"]["rows"][0]["run"])),
        ]
    else:
        blocks.append(
            warning(
                "The paper card lists no reported results (`reported:`): add the paper's numbers and where they are."
            )
        )
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    d = config.dataset
    head = ["dataset", "metric", "before (baseline)", "after (tuned)", "trivial baseline (majority class's share)"]
    blocks.append(
        table(
            head,
            [
                [
                    config.dataset_name + (f" ({d.description.rstrip('.')})" if d.description else ""),
                    "test accuracy",
                    f"{f4(before.test_accuracy)} {ci_text(accuracy_ci(before))}",
                    f"{f4(after.test_accuracy)} {ci_text(accuracy_ci(after))}" if after else MISSING,
                    f4(data["trivial_baseline"]["majority_share"]),
                ]
            ],
        )
    )
    if not any(compare.same_dataset(r.dataset, config.dataset_name) for r in card.reported):
        reported = ", ".join(sorted({r.dataset for r in card.reported})) or "no dataset"
        blocks.append(
            warning(
                f"The paper reports on {reported}; this reproduction uses {config.dataset_name}. The datasets differ, "
                f"so the numbers are not directly comparable: the paper's recipe is reproduced, not its result."
            )
        )
    return blocks


def _paper_row(row, label):
    metric = METRIC_NAMES[row["metric"]] + (f" ({row['class_name']})" if row["class_name"] else "")
    size = row["test_size"]
    theirs = f"{ci_text(wilson_interval(round(row['value'] * size), size))} ({size})" if size else "—"
    ours = "—" if row["ours"] is None else f"{row['ours']:.4f} {ci_text(row['ci95'])}"
    if row["seeds"]:
        ours += f"; {label}: {row['seeds']['mean']:.4f} ± {row['seeds']['std']:.4f}"
    return [
        row["dataset"],
        metric,
        f"{row['value']:.4f}",
        row["where"],
        theirs,
        ours,
        row["interval"] or "—",
        row["explanation"],
        row["note"],
    ]
