"""The sections on the trained runs themselves: learning curves, per-class results, examples of
mistakes, the data and the model."""

import io
from pathlib import Path

import numpy as np

from project import figures
from project.errors import UserError
from project.report.blocks import MISSING, f4, figure, p, plain, signed, table, ul, warning
from project.report.load import load_data_issues, run_config
from project.train.metrics import imbalance_ratio

EXAMPLES = 12


# ------------------------------------------------------------------ learning curves


def curves_section(runs, target, figs):
    from project.train.monitors import GAP as gap  # the training monitors' threshold: one reading of the curves

    blocks = [
        p(
            "Loss and accuracy per epoch, train (solid) and validation (dashed); dotted lines mark where each "
            "fine-tuning stage begins. Train figures are measured with augmentation and dropout on, so val may lie above train."
        )
    ]
    rows = []
    for label, name, suffix in (("before", "baseline", "before"), ("after", "tuned", "after")):
        if not runs[name]:
            blocks.append(warning("No tuned run yet: the after curves are missing."))
            continue
        run = runs[name][0]
        file = f"curves_{suffix}.png"
        figs[file] = figures.learning_curves(run["history"], f"{label}: {run['name']}")
        blocks.append(figure(file, f"learning curves {label} optimisation"))
        rows += _gap_rows(label, run["history"], target, gap)
        blocks += diagnosis_blocks(label, run["metrics"].diagnosis)
    if rows:
        blocks.append(
            table(
                [
                    "run",
                    "stage",
                    "epochs",
                    "train accuracy",
                    "val accuracy",
                    "gap (train − val)",
                    "best val (epoch)",
                    "reading",
                ],
                rows,
            )
        )
        blocks.append(
            p(
                f"A gap above {gap:.2f} at the end of a stage says overfitting: more regularisation "
                f"(dropout, L2, weight decay), augmentation or data. No gap with accuracy below the target says too "
                f"little capacity or training: unfreeze more layers, a bigger head, more epochs."
            )
        )
    return blocks


def diagnosis_blocks(label, diagnosis):
    """The training monitors' diagnosis (records.Diagnosis): its summary, then each finding."""
    findings = [f"**{f.problem}**: {f.evidence} → {f.advice}" for f in diagnosis.findings]
    return [p(f"**Diagnosis of the {label} training:** {diagnosis.summary}")] + ([ul(findings)] if findings else [])


def _gap_rows(label, history, target, gap_threshold):
    rows = []
    for stage, group in history.groupby("stage", sort=False):
        last = group.iloc[-1]
        gap = float(last["accuracy"] - last["val_accuracy"])
        best = group.loc[group["val_accuracy"].idxmax()]
        if gap > gap_threshold:
            reading = "large gap: overfitting"
        elif last["val_accuracy"] < target:
            reading = "small gap, accuracy below target: too little capacity or training"
        else:
            reading = "small gap, accuracy at target: good fit"
        rows.append(
            [
                label,
                str(stage),
                str(len(group)),
                f4(float(last["accuracy"])),
                f4(float(last["val_accuracy"])),
                signed(gap),
                f"{f4(float(best['val_accuracy']))} ({int(best['global_epoch'])})",
                reading,
            ]
        )
    return rows


# ------------------------------------------------------------------ per class


def per_class_section(runs, figs):
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    names = before.class_names
    rows = []
    for name in names:
        b = before.per_class[name]
        a = after.per_class[name] if after else None
        rows.append(
            [
                name,
                str(b.support),
                f4(b.precision),
                f4(b.recall),
                f4(b.f1),
                f4(a.precision) if a else MISSING,
                f4(a.recall) if a else MISSING,
                f4(a.f1) if a else MISSING,
                signed(a.f1 - b.f1) if a else "",
            ]
        )
    blocks = [
        table(
            [
                "class",
                "support",
                "precision before",
                "recall before",
                "F1 before",
                "precision after",
                "recall after",
                "F1 after",
                "F1 change",
            ],
            rows,
        ),
        p(
            "Confusion matrices on the test subset: rows are true classes, colour is the share of the true class "
            "(row-normalised), cells hold counts."
        ),
    ]
    figs["confusion_before.png"] = figures.confusion(before.confusion_matrix, names, "before (baseline)")
    blocks.append(figure("confusion_before.png", "confusion matrix before optimisation"))
    if after:
        figs["confusion_after.png"] = figures.confusion(after.confusion_matrix, names, "after (tuned)")
        blocks.append(figure("confusion_after.png", "confusion matrix after optimisation"))
    else:
        blocks.append(warning("No tuned run yet: the after confusion matrix is missing."))
    return blocks


# ------------------------------------------------------------------ examples


def examples_section(runs, root, figs):
    run = runs["tuned"][0] if runs["tuned"] else runs["baseline"][0]
    which = "after optimisation (tuned)" if runs["tuned"] else "of the baseline (no tuned run yet)"
    table_ = run["predictions"]
    wrong = table_[table_["true"] != table_["predicted"]].sort_values(
        ["confidence", "source"], ascending=[False, True], kind="stable"
    )
    top = wrong.head(EXAMPLES)
    blocks = [
        p(
            f"The {len(top)} most confidently misclassified test images {which}, of {len(wrong)} misclassified "
            f"out of {len(table_)}."
        )
    ]
    if top.empty:
        return blocks
    blocks.append(
        table(
            ["source", "true", "predicted", "confidence"],
            [[r.source, r.true, r.predicted, f4(float(r.confidence))] for r in top.itertuples()],
        )
    )
    try:
        images = load_images(run_config(run), root, list(top["source"]))
    except UserError as error:
        blocks.append(warning(f"The images could not be loaded for the grid: {error}"))
        return blocks
    captions = [f"true {r.true} / pred {r.predicted}\n{float(r.confidence):.2f}" for r in top.itertuples()]
    figs["misclassified.png"] = figures.image_grid(images, captions, f"most confident mistakes {which.split(' (')[0]}")
    blocks.append(figure("misclassified.png", "most confidently misclassified test images"))
    return blocks


def load_images(config, root, sources):
    """The pixels of the given source ids, reloaded through the dataset card's adapter."""
    from PIL import Image, ImageOps

    from project.data.prepare import prepare

    data = prepare(config, root)
    index = {source: i for i, source in enumerate(data.sources.ids)}
    images = []
    for source in sources:
        if source not in index:
            raise UserError(f"test image {source} is not in the dataset any more")
        item = data.sources.items[index[source]]
        if data.sources.kind == "array":
            images.append(np.asarray(item))
            continue
        handle = Image.open(item if data.sources.kind == "files" else io.BytesIO(item))
        image = ImageOps.exif_transpose(handle).convert("RGB")
        image.thumbnail((128, 128))
        images.append(np.asarray(image))
    return images


# ------------------------------------------------------------------ data


def data_section(runs, root):
    run = runs["baseline"][0]
    m = run["metrics"]
    d = run["config"]["dataset"]
    split = d["split"]
    counts = m.counts.model_dump()
    names = m.class_names
    blocks = [
        ul(
            [
                f"**Dataset:** {run['config']['dataset_name']}"
                + (f" — {d['description'].rstrip('.')}" if d["description"] else ""),
                f"**Source:** {d['source'] or 'not stated in the dataset card'}; **license:** {d['license'] or 'not stated'}",
                f"**Adapter:** `{d['adapter']}` with options `{plain(d['options'])}`",
                f"**Classes ({len(names)}):** {', '.join(names)}",
                "**Split:** "
                + (
                    "provided by the data"
                    if split["provided"]
                    else f"stratified, val {split['val']:g}, test {split['test']:g}"
                    if not split.get("folds")
                    else f"stratified, test {split['test']:g}"
                )
                + (
                    f", {split['folds']} cross-validation folds of the rest (each run validates on one)"
                    if split.get("folds")
                    else ""
                )
                + (
                    f", grouped by `{split['group_by']}` (no group in two subsets or folds)"
                    if split.get("group_by")
                    else ""
                )
                + f", seed {split['seed']} "
                "(`split.csv`, the same for every run)",
            ]
        )
    ]
    rows = []
    for name in names:
        per = [counts[s][name] for s in ("train", "val", "test")]
        rows.append([name, *map(str, per), str(sum(per))])
    totals = [sum(counts[s].values()) for s in ("train", "val", "test")]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    blocks.append(table(["class", "train", "val", "test", "total"], rows))
    blocks.append(
        p(f"**Imbalance ratio** (largest / smallest class in train): {imbalance_ratio(counts['train']):.2f}.")
    )
    blocks += data_issues(Path(root) / "data_issues.csv")
    return blocks


def data_issues(path):
    """Images excluded (and converted or warned about) by the data check, counted by reason."""
    issues = load_data_issues(path)
    if issues is None:
        return [
            p(
                "**Images excluded:** none reported (no data_issues.csv in runs/: the data check has not run on this dataset)."
            )
        ]
    if issues.empty:
        return [p(f"**Images excluded:** none (the data check's {path.name} lists no issue).")]
    excluded = int((issues["action"] == "excluded").sum())
    counts = issues.groupby(["action", "reason"]).size().sort_index()
    return [
        p(
            f"**Images excluded:** {excluded} (the data check, {path.name}); every issue it found, by action and reason:"
        ),
        table(["action", "reason", "count"], [[a, r, str(n)] for (a, r), n in counts.items()]),
    ]


# ------------------------------------------------------------------ model


def steps_text(stage):
    """How a stage the card gives in steps became epochs (records.StageInfo), or ''."""
    if stage.steps is None:
        return ""
    stated = f"{stage.steps:,} steps at batch {stage.steps_batch_size}"
    return f" of {stage.planned_epochs} planned ({stated}, run at batch {stage.batch_size})"


def model_section(runs):
    run = runs["baseline"][0]
    model = run["config"]["paper"]["model"]
    head = model["head"]
    blocks = []
    fallback = [r["name"] for g in runs.values() for r in g if r["metrics"].weights_kind == "random_fallback"]
    if fallback:
        blocks.append(
            warning(
                f"ImageNet weights were unavailable: {', '.join(fallback)} trained from RANDOM initialisation "
                f"(weights_fallback: random). Results are not those of a pretrained backbone."
            )
        )
    items = [
        f"**Backbone:** {model['backbone']}"
        + (f", width multiplier {model['width']:g}" if model["backbone"].startswith("MobileNet") else ""),
        f"**Weights used:** {run['metrics'].weights_used} (card: `{model['weights']}`)",
        f"**Input size:** {model['input_size'][0]}×{model['input_size'][1]}×3, preprocessing `{model['preprocessing']}` inside the model",
        f"**Head:** {head['pooling']} pooling, hidden layers {plain(head['hidden'])}, activation {head['activation']}, "
        f"dropout {head['dropout']:g}, normalization {head['normalization']}, softmax output",
    ]
    if model["backbone"] == "scratch":
        s = model["scratch"]
        items.append(
            f"**Scratch CNN:** blocks {plain(s['blocks'])}, {s['convs_per_block']} convs per block, kernel {s['kernel_size']}, "
            f"{s['activation']}, {s['initializer']} init, {s['normalization']} normalization"
        )
    blocks.append(ul(items))
    rows = []
    for label, name in (("before", "baseline"), ("after", "tuned")):
        for r in runs[name][:1]:
            for s in r["metrics"].stages:
                rows.append(
                    [
                        label,
                        s.stage,
                        str(s.epochs) + steps_text(s),
                        str(s.unfrozen_layers),
                        plain(s.learning_rate),
                        f"{s.params_trainable:,}",
                        f"{s.params_frozen:,}",
                    ]
                )
    blocks.append(
        table(
            [
                "run",
                "stage",
                "epochs run",
                "unfrozen backbone layers",
                "learning rate",
                "trainable params",
                "frozen params",
            ],
            rows,
        )
    )
    return blocks
