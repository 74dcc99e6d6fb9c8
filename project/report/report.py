"""The before/after report: reports/<paper>__<dataset>/{report.md, report.html, figures/, ...}.

Generated only from what is in runs/ (never re-trains). The report is a list of sections, each
a list of blocks (paragraph, list, table, figure, code, warning); two small Jinja templates render
the same blocks as Markdown and as one self-contained HTML page, so both hold the same content
in the same order. Numbers are formatted here with fixed formats, and the one date in the report
is the completion time of the newest run used, so the same runs give byte-identical files.
"""

import base64
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from project import figures
from project.artifacts import COMPLETE, atomic_write, read_json, require_complete, run_root, write_json
from project.config.cards import read_yaml, validate
from project.config.schema import SEARCHABLE, Config
from project.errors import UserError
from project.paths import REPO_ROOT
from project.train.metrics import IMBALANCED, imbalance_ratio, wilson_interval

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "missing"
TOP_TRIALS = 10
EXAMPLES = 12
SECTIONS = [
    "Summary",
    "Paper vs reproduction",
    "Hyperparameters",
    "Search",
    "Learning curves",
    "Per-class results",
    "Examples",
    "Data",
    "Model",
    "Sanity checks",
    "Compute and environment",
    "Reproduce",
    "Model card",
]
NO_TEST_SELECTION = (
    "The test subset was not used for any selection: trials were ranked, narrowed and early-stopped on the "
    "validation subset only, and the test subset was evaluated once per trained model."
)


# ------------------------------------------------------------------ formatting


def f4(value):
    return MISSING if value is None else f"{value:.4f}"


def signed(value):
    return "" if value is None else f"{value:+.4f}"


def plain(value):
    """A hyperparameter value in one fixed, short form."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def span(low, high):
    low, high = int(low), int(high)
    return str(low) if low == high else f"{low}–{high}"


def mean_std(values):
    values = np.asarray(values, dtype=float)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def accuracy_ci(metrics):
    count = metrics["test"]["count"]
    return wilson_interval(int(round(metrics["test_accuracy"] * count)), count)


def ci_text(interval):
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def table(head, rows, marks=None):
    return {
        "type": "table",
        "head": list(head),
        "rows": [[str(c) for c in row] for row in rows],
        "marks": list(marks) if marks is not None else [False] * len(rows),
    }


def p(text):
    return {"type": "p", "text": text}


def ul(items):
    return {"type": "ul", "items": list(items)}


def warning(text):
    return {"type": "warning", "text": text}


def h3(text):
    return {"type": "h3", "text": text}


def figure(name, alt):
    return {"type": "figure", "name": name, "alt": alt}


def code(lines):
    return {"type": "code", "lines": list(lines)}


# ------------------------------------------------------------------ runs


def commands(config):
    cards = f"PAPER={config.paper_name} DATASET={config.dataset_name}"
    return {"train": f"make train {cards}", "tune": f"make tune {cards}", "all": f"make all {cards}", "cards": cards}


def load_run(folder):
    folder = Path(folder)
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else None
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"source": str, "true": str, "predicted": str})
    return {
        "name": folder.name,
        "folder": folder,
        "metrics": read_json(folder / "metrics.json"),
        "history": history,
        "predictions": predictions,
        "config": read_yaml(folder / "config.resolved.yaml"),
        "completed": (folder / COMPLETE).read_text(encoding="utf-8").strip(),
    }


def _seed_folders(root, name):
    def seed_of(folder):
        tail = folder.name.rsplit("seed", 1)[-1]
        return (int(tail) if tail.isdigit() else 0, folder.name)

    return sorted((f for f in root.glob(f"{name}-seed*") if f.is_dir()), key=seed_of)


def load_runs(config, root):
    """baseline (required), tuned (optional) and the extra seeds of each; incomplete runs are refused."""
    root = Path(root)
    cmd = commands(config)
    if not (root / "baseline").exists():
        raise UserError(f"no baseline run at {root / 'baseline'}: create it with `{cmd['train']}` (or `{cmd['all']}`)")
    runs = {"baseline": [load_run(require_complete(root / "baseline", cmd["train"]))], "tuned": []}
    if (root / "tuned").exists():
        runs["tuned"].append(load_run(require_complete(root / "tuned", cmd["tune"])))
    for name in ("baseline", "tuned"):
        for folder in _seed_folders(root, name):
            runs[name].append(load_run(require_complete(folder, cmd["train" if name == "baseline" else "tune"])))
    return runs


def run_config(run):
    return validate(Config, run["config"], run["folder"] / "config.resolved.yaml")


# ------------------------------------------------------------------ hyperparameters


def dotted(node, prefix=""):
    """{dotted key: value} of a card's nested sections; list items by index (training.stages.0.epochs),
    each augmentation transform whole (augmentation.0)."""
    flat = {}
    if isinstance(node, dict) and node:
        for key, value in node.items():
            flat.update(dotted(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, list) and node and all(isinstance(n, dict) for n in node):
        for i, item in enumerate(node):
            flat.update({f"{prefix}.{i}": item} if prefix == "augmentation" else dotted(item, f"{prefix}.{i}"))
    else:
        flat[prefix] = node
    return flat


def flatten(paper):
    """The trained-on values of a paper card (a resolved-config dict): seed, model, training, augmentation."""
    model = dict(paper["model"])
    if model.get("backbone") != "scratch":
        model.pop("scratch", None)
    return {
        "seed": paper["seed"],
        **dotted(model, "model"),
        **dotted(paper["training"], "training"),
        **dotted(paper["augmentation"] or [], "augmentation"),
        "augmentation_strength": paper["augmentation_strength"],
    }


def _covers(keys, key):
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def card_keys(paper_file):
    """The dotted keys a paper card file sets itself (the rest are the template's defaults)."""
    return set(dotted(read_yaml(paper_file))) if paper_file and Path(paper_file).is_file() else set()


def override_keys(overrides):
    keys = set()
    for text in overrides or ():
        key = text.split("=", 1)[0].strip()
        keys.add(key.split(".", 1)[1] if key.startswith("paper.") else key)
    return keys


def origin(key, assumed, in_card, overridden):
    """Where a baseline value comes from: a --set override, assumed (the card says so), the paper, or a default."""
    if _covers(overridden, key):
        return "override (--set)"
    if any(key == a or key.startswith(a + ".") for a in assumed):
        return "assumed"
    return "paper" if _covers(in_card, key) else "template default"


def searched_keys(paper):
    space = (paper.get("search") or {}).get("space") or {}
    stages = len(paper["training"]["stages"])
    keys = {}
    for name in space:
        target = SEARCHABLE[name].replace(".-1.", f".{stages - 1}.")
        keys[target] = name
    return keys


def hyperparameters(runs, card, config):
    before_paper = runs["baseline"][0]["config"]["paper"]
    before = flatten(before_paper)
    after = flatten(runs["tuned"][0]["config"]["paper"]) if runs["tuned"] else None
    keys = list(before) + [k for k in (after or {}) if k not in before]
    searched = searched_keys(before_paper)
    assumed = card.assumed
    in_card = card_keys(config.paper_file)
    overridden = override_keys(runs["baseline"][0]["config"].get("overrides"))
    rows, marks, changed = [], [], []
    for key in keys:
        b = plain(before[key]) if key in before else "—"
        a = MISSING if after is None else (plain(after[key]) if key in after else "—")
        is_changed = after is not None and b != a
        if is_changed:
            changed.append(key)
        searched_name = next((n for k, n in searched.items() if key == k or key.startswith(k + ".")), "")
        rows.append([key, b, a, "yes" if is_changed else "", origin(key, assumed, in_card, overridden), searched_name])
        marks.append(is_changed)
    blocks = [
        p(
            "Every value the models were trained with, from each run's `config.resolved.yaml`. "
            "**Changed** rows differ between before and after; **origin** says where the baseline value comes from: "
            "the paper, assumed (the paper card's `assumed` list: the paper does not state it), a template default "
            "(the card does not set it), or a `--set` override; **searched** names "
            "the hyperparameter of the search space that sets it."
        ),
        table(["hyperparameter", "before", "after", "changed", "origin", "searched"], rows, marks),
        p(
            f"{len(changed)} of {len(keys)} values changed by optimisation."
            if after is not None
            else "No tuned run yet: the after column is missing."
        ),
    ]
    data = {
        "before": before,
        "after": after,
        "changed": changed,
        "origin": {k: origin(k, assumed, in_card, overridden) for k in keys},
        "searched": {k: n for k, n in sorted(searched.items())},
        "best_hyperparameters": _best_hyperparameters(runs),
    }
    return blocks, data


def _best_hyperparameters(runs):
    if not runs["tuned"]:
        return None
    path = runs["tuned"][0]["folder"] / "best_hyperparameters.json"
    return read_json(path) if path.exists() else None


# ------------------------------------------------------------------ summary


def metric_summary(m):
    lo, hi = accuracy_ci(m)
    return {
        "run": m.get("run"),
        "seed": m.get("seed"),
        "test_accuracy": m["test_accuracy"],
        "test_accuracy_ci95": [lo, hi],
        "test_macro_f1": m["test_macro_f1"],
        "test_balanced_accuracy": m["test"]["balanced_accuracy"],
        "test_loss": m["test_loss"],
        "test_count": m["test"]["count"],
        "test_majority_share": m["test"]["majority_share"],
        "val_accuracy": m.get("val_accuracy"),
        "per_class": m["per_class"],
        "confusion_matrix": m["confusion_matrix"],
    }


# ------------------------------------------------------------------ search


def tuning_files(root):
    """trials.csv, summary.json and fine_space.json of the tuning step (each may be missing)."""
    folder = Path(root) / "tuning"
    trials = pd.read_csv(folder / "trials.csv") if (folder / "trials.csv").exists() else None
    summary_ = read_json(folder / "summary.json") if (folder / "summary.json").exists() else {}
    fine = read_json(folder / "fine_space.json") if (folder / "fine_space.json").exists() else {}
    return trials, summary_, fine


def _column(table, *names):
    """The first column named exactly, else starting with, else containing one of `names`."""
    lowered = {c.lower(): c for c in table.columns}
    for test in (lambda c, n: c == n, lambda c, n: c.startswith(n), lambda c, n: n in c):
        for name in names:
            for low, column in lowered.items():
                if test(low, name):
                    return column
    return None


def normalise_trials(trials, space):
    """A uniform view: trial, stage, hyperparameters, objective, epochs, status, failed."""

    def column(*names, default=""):
        name = _column(trials, *names)
        return trials[name] if name else pd.Series(default, index=trials.index)

    status = column("status", default="completed").fillna("").astype(str).str.lower()
    reason = column("failure_reason", "reason").fillna("").astype(str)
    exploded = status.eq("exploded") | reason.str.lower().str.contains("explod")
    objective = _column(trials, "best_objective", "best")
    view = pd.DataFrame(
        {
            "trial": column("trial_id", "trial", default="").astype(str),
            "stage": column("stage", default="search").astype(str),
            "objective": pd.to_numeric(trials[objective], errors="coerce") if objective else np.nan,
            "epochs": pd.to_numeric(column("epochs_run", "epochs", default=np.nan), errors="coerce"),
            "status": np.where(exploded, "exploded", status.where(status != "", "completed")),
            "seconds": pd.to_numeric(column("wall_seconds", "seconds", default=np.nan), errors="coerce"),
        }
    )
    view["failed"] = view["status"] != "completed"
    for name in space:
        if name in trials:
            view[name] = trials[name]
    return view


def space_text(entry):
    """A card Param or a tuning space entry ({"type": float|int|choice|fixed, ...}) in words."""
    if entry.get("type") == "fixed":
        return f"fixed at {plain(entry['value'])}"
    if entry.get("choices") is not None:
        return "choice of " + ", ".join(plain(c) for c in entry["choices"])
    step = f", step {plain(entry['step'])}" if entry.get("step") else ""
    kind = "integer, " if entry.get("type") == "int" else ""
    return f"{kind}{entry.get('sampling', 'linear')} in [{plain(entry['min'])}, {plain(entry['max'])}]{step}"


def edge_warnings(summary_, best, search):
    """The tuning step's warnings (summary.json); else the same rule applied to best_hyperparameters.json."""
    from project.tune.search_space import card_space
    from project.tune.search_space import edge_warnings as warnings_for

    if "warnings" in summary_:
        return list(summary_["warnings"])
    values = (best or {}).get("hyperparameters")
    return warnings_for(card_space(search), values) if values else []


def search_time_blocks(summary_, ranks=None):
    """The time the trials took, what a budget bought, and the final round of finalists (summary.json)."""
    blocks = [
        p(f"**Search time:** {summary_['trial_seconds']:.1f} s of trials (every trial's wall time, all workers).")
    ]
    budget = summary_.get("budget")
    if budget:
        trials = budget["trials"]
        blocks.append(
            p(
                f"**Budget:** {budget['budget_seconds']:.0f} s. The first trial took {budget['first_trial_seconds']:.1f} s "
                f"(epochs {budget['epoch_seconds']:.2f} s each, {budget['fixed_seconds']:.1f} s building and tracing), "
                f"which bought {trials['coarse']} coarse and {trials['fine']} fine trials."
            )
        )
    final = summary_.get("final_round")
    if final:
        metric = final["metric"]
        best = summary_["best"]
        rows = [
            [
                f["stage"],
                str(f["trial_id"]),
                f4(f["search_score"]),
                f4(f[metric]),
                "yes" if (f["stage"], f["trial_id"]) == (best["stage"], best["trial_id"]) else "",
            ]
            for f in final["finalists"]
        ]
        blocks += [
            h3("Final round"),
            p(
                f"The top {len(rows)} trials of the search, each trained for the card's full epochs like the baseline; "
                f"the best {metric} became the tuned run (short trials rank roughly)."
            ),
            table(["stage", "trial", f"search {summary_['objective']}", f"full-length {metric}", "chosen"], rows),
        ]
    if ranks:
        blocks.append(
            p(
                f"**Rank agreement** (`make bench`, {ranks['created'][:10]}): Spearman rho = {ranks['rho']:.2f} between "
                f"the {ranks['epochs']['coarse']}-epoch and {ranks['epochs']['full']}-epoch scores of {ranks['configurations']} "
                f"configurations of this card's space: "
                + (
                    "short trials rank the configurations much as full-length ones do."
                    if ranks["rho"] >= 0.7
                    else "short trials rank the configurations only roughly; the final round matters."
                )
            )
        )
    return blocks


def rank_agreement(reports_dir, config):
    """What `make bench` measured of this paper x dataset's short-trial ranking, if it did
    (<reports>/bench/bench.json: the details of its rank-agreement section), else None."""
    path = Path(reports_dir) / "bench" / "bench.json"
    if not path.exists():
        return None
    bench = read_json(path)
    ranks = bench["details"].get("rank agreement", {})
    if (ranks.get("paper"), ranks.get("dataset")) != (config.paper_name, config.dataset_name) or ranks.get(
        "rho"
    ) is None:
        return None
    return {**ranks, "created": bench["created"]}


def search_section(runs, root, cmd, figs, ranks=None):
    paper = runs["baseline"][0]["config"]["paper"]
    search = paper.get("search")
    if not search:
        return [warning("The paper card has no `search` section, so nothing was searched.")], None
    space = search["space"]
    trials, summary_, fine_file = tuning_files(root)
    best = _best_hyperparameters(runs)
    fine = summary_.get("fine_space") or fine_file.get("space")
    blocks = [
        p(
            f"**Method:** Keras Tuner random search in two stages, coarse → fine. The coarse stage samples the card's "
            f"ranges below with few epochs per trial; the fine stage narrows every numeric range around the top "
            f"{search['top_k']} coarse trials (in log space for log-sampled ones), keeps only the choices found among "
            f"them, and trains each trial for more epochs. The best trial's values are then retrained with the card's "
            f"full epoch budget (the tuned run)."
        ),
        p(
            f"**Objective:** {search['objective']} ({search['direction']}imise), on the validation subset. "
            f"**Search seed:** {search['seed']}."
        ),
        p(f"**{NO_TEST_SELECTION}**"),
        h3("Search space"),
    ]
    space_rows = []
    for name, param in space.items():
        narrowed = space_text(fine[name]) if fine and name in fine else _observed(trials, space, name, "fine")
        space_rows.append([name, SEARCHABLE[name], space_text(param), narrowed])
    blocks.append(table(["hyperparameter", "card key", "coarse", "fine"], space_rows))
    if fine and fine_file.get("top_k"):
        blocks.append(p(f"The fine space was narrowed around coarse trials {', '.join(map(str, fine_file['top_k']))}."))
    elif not fine:
        blocks.append(
            p("The fine column shows the values the fine trials tried (the narrowed space was not recorded).")
        )
    if trials is None:
        blocks.append(
            warning(
                f"No search results in runs/ yet ({Path(root) / 'tuning' / 'trials.csv'} is missing): run `{cmd['tune']}`."
            )
        )
        return blocks, None
    view = normalise_trials(trials, space)
    blocks += [h3("Trials per stage"), _stage_table(view, search)]
    warnings_ = edge_warnings(summary_, best, run_config(runs["baseline"][0]).paper.search)
    blocks.append(h3("Edge-of-range warnings"))
    blocks.append(ul(warnings_) if warnings_ else p("None: no best value lies in the outer 10% of its range."))
    blocks += [h3(f"Top {TOP_TRIALS} trials"), _top_table(view, space, search)]
    if best and best.get("hyperparameters"):
        blocks.append(
            p(
                f"**Best trial:** {best.get('stage', '?')} trial {best.get('trial_id', '?')}, "
                f"{best.get('objective', search['objective'])} {f4(best.get('score'))}; values: "
                + ", ".join(f"{k} = {plain(v)}" for k, v in sorted(best["hyperparameters"].items()))
            )
        )
    blocks += search_time_blocks(summary_, ranks)
    blocks += [h3("Objective against each hyperparameter")]
    for name, param in space.items():
        if name not in view or not _numeric(param):
            continue
        values = view[[name, "objective", "stage", "failed"]].copy()
        values[name] = pd.to_numeric(values[name], errors="coerce")
        file = f"trials_{name}.png"
        bounds = (param["min"], param["max"]) if param.get("choices") is None else None
        figs[file] = figures.trial_scatter(values, name, search["objective"], param.get("sampling") == "log", bounds)
        blocks.append(
            figure(file, f"val objective against {name} (dotted: the card's range); failed trials as red crosses")
        )
    return blocks, trials


def _numeric(param):
    if param.get("choices") is not None:
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in param["choices"])
    return True


def _observed(trials, space, name, stage):
    if trials is None or name not in trials or "stage" not in trials:
        return "—"
    values = trials.loc[trials["stage"].astype(str) == stage, name].dropna()
    if values.empty:
        return "—"
    if space[name].get("choices") is not None or not pd.api.types.is_numeric_dtype(values):
        return "tried " + ", ".join(sorted({plain(v) for v in values}))
    return f"tried [{plain(float(values.min()))}, {plain(float(values.max()))}]"


def _stage_table(view, search):
    rows = []
    for stage, group in view.groupby("stage", sort=False):
        planned = search.get(stage, {}) if stage in ("coarse", "fine") else {}
        status = group["status"].str.lower()
        epochs = pd.to_numeric(group["epochs"], errors="coerce")
        rows.append(
            [
                stage,
                str(len(group)),
                str(planned.get("trials", "—")),
                str(int((status == "completed").sum())),
                str(int((status == "failed").sum())),
                str(int((status == "exploded").sum())),
                str(planned.get("epochs", "—")),
                "—" if epochs.isna().all() else span(epochs.min(), epochs.max()),
            ]
        )
    return table(
        [
            "stage",
            "trials run",
            "trials in card",
            "completed",
            "failed",
            "exploded",
            "epochs per stage of a trial (card)",
            "epochs run",
        ],
        rows,
    )


def _top_table(view, space, search):
    ascending = search["direction"] == "min"
    ranked = view.assign(_key=view["objective"]).sort_values(
        ["_key", "trial"], ascending=[ascending, True], na_position="last", kind="stable"
    )
    names = [n for n in space if n in view]
    rows = []
    for rank, (_, row) in enumerate(ranked.head(TOP_TRIALS).iterrows(), 1):
        rows.append(
            [str(rank), row["trial"], row["stage"]]
            + [plain(_py(row[n])) for n in names]
            + [f4(row["objective"]) if pd.notna(row["objective"]) else "—", plain(_py(row["epochs"])), row["status"]]
        )
    return table(["rank", "trial", "stage", *names, search["objective"], "epochs", "status"], rows)


def _py(value):
    """numpy / pandas scalars as plain Python values for formatting."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


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
        blocks += diagnosis_blocks(label, run["metrics"].get("diagnosis"))
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
    """The training monitors' diagnosis in metrics.json: {status, summary, findings: [{problem, evidence, advice}]}."""
    if not diagnosis:
        return []
    if not isinstance(diagnosis, dict):
        return [p(f"**Diagnosis of the {label} training:** {_describe(diagnosis)}")]
    blocks = [p(f"**Diagnosis of the {label} training:** {diagnosis.get('summary', diagnosis.get('status', ''))}")]
    findings = [
        f"**{f.get('problem', '?')}**: {f.get('evidence', '')} → {f.get('advice', '')}"
        for f in diagnosis.get("findings", [])
    ]
    return blocks + ([ul(findings)] if findings else [])


def _gap_rows(label, history, target, gap_threshold):
    if history is None or history.empty or "val_accuracy" not in history or "accuracy" not in history:
        return [[label, "—", "0", "—", "—", "—", "—", "no history"]]
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


def _describe(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return "; ".join(_describe(v) for v in value)
    return plain(value)


# ------------------------------------------------------------------ per class


def per_class_section(runs, figs):
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    names = before["class_names"]
    rows = []
    for name in names:
        b = before["per_class"][name]
        a = after["per_class"][name] if after else None
        rows.append(
            [
                name,
                str(b["support"]),
                f4(b["precision"]),
                f4(b["recall"]),
                f4(b["f1"]),
                f4(a["precision"]) if a else MISSING,
                f4(a["recall"]) if a else MISSING,
                f4(a["f1"]) if a else MISSING,
                signed(a["f1"] - b["f1"]) if a else "",
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
    figs["confusion_before.png"] = figures.confusion(before["confusion_matrix"], names, "before (baseline)")
    blocks.append(figure("confusion_before.png", "confusion matrix before optimisation"))
    if after:
        figs["confusion_after.png"] = figures.confusion(after["confusion_matrix"], names, "after (tuned)")
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
    counts = m["counts"]
    names = m["class_names"]
    blocks = [
        ul(
            [
                f"**Dataset:** {run['config']['dataset_name']}"
                + (f" — {d['description'].rstrip('.')}" if d.get("description") else ""),
                f"**Source:** {d.get('source') or 'not stated in the dataset card'}; **license:** {d.get('license') or 'not stated'}",
                f"**Adapter:** `{d['adapter']}` with options `{plain(d.get('options') or {})}`",
                f"**Classes ({len(names)}):** {', '.join(names)}",
                "**Split:** "
                + (
                    "provided by the data"
                    if split.get("provided")
                    else f"stratified, val {split['val']:g}, test {split['test']:g}"
                )
                + f", seed {split['seed']} "
                "(`split.csv`, the same for every run)",
            ]
        )
    ]
    rows = []
    for name in names:
        per = [counts[s].get(name, 0) for s in ("train", "val", "test")]
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
    if not path.exists():
        return [
            p(
                "**Images excluded:** none reported (no data_issues.csv in runs/: the data check has not run on this dataset)."
            )
        ]
    issues = pd.read_csv(path, dtype=str, keep_default_na=False)
    if issues.empty or "reason" not in issues:
        return [p(f"**Images excluded:** none (the data check's {path.name} lists no issue).")]
    action = issues["action"] if "action" in issues else pd.Series("excluded", index=issues.index)
    excluded = int((action == "excluded").sum())
    counts = issues.assign(action=action).groupby(["action", "reason"]).size().sort_index()
    return [
        p(
            f"**Images excluded:** {excluded} (the data check, {path.name}); every issue it found, by action and reason:"
        ),
        table(["action", "reason", "count"], [[a, r, str(n)] for (a, r), n in counts.items()]),
    ]


# ------------------------------------------------------------------ model


def model_section(runs):
    run = runs["baseline"][0]
    model = run["config"]["paper"]["model"]
    head = model["head"]
    weights = run["metrics"].get("weights_used", "unknown")
    blocks = []
    fallback = [r["name"] for g in runs.values() for r in g if "fallback" in str(r["metrics"].get("weights_used", ""))]
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
        f"**Weights used:** {weights} (card: `{model['weights']}`)",
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
            for s in r["metrics"].get("stages", []):
                rows.append(
                    [
                        label,
                        s["stage"],
                        str(s["epochs"]),
                        str(s["unfrozen_layers"]),
                        plain(s["learning_rate"]),
                        f"{s['params_trainable']:,}",
                        f"{s['params_frozen']:,}",
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


# ------------------------------------------------------------------ sanity


def sanity_section(root, cmd, figs):
    """runs/<run>/sanity.json (make sanity): each check with its status, numbers, advice and plot."""
    path = Path(root) / "sanity.json"
    if not path.exists():
        return [p(f"No sanity results in runs/ ({path.name} is missing): run `make sanity {cmd['cards']}`.")]
    data = read_json(path)
    checks = data.get("checks", []) if isinstance(data, dict) else data
    rows, blocks = [], []
    for check in checks:
        numbers = check.get("numbers", {})
        shown = ", ".join(f"{k} {_num(v)}" for k, v in numbers.items() if v is not None and not _long(v))
        advice = str(check.get("advice", "")) + (
            f". Augmentation: {check['augmentation']}" if check.get("augmentation") else ""
        )
        rows.append([check.get("title", check.get("name", "?")), str(check.get("status", "?")), shown, advice])
        plot = Path(root) / str(check.get("plot", ""))
        if check.get("plot") and plot.is_file():
            figs[f"sanity_{check.get('name', plot.stem)}.png"] = plot.read_bytes()
            blocks.append(
                figure(f"sanity_{check.get('name', plot.stem)}.png", f"sanity check: {check.get('title', plot.stem)}")
            )
    overall = data.get("status", "?") if isinstance(data, dict) else "?"
    weights = (
        f", backbone weights {data['weights_used']}" if isinstance(data, dict) and data.get("weights_used") else ""
    )
    return [
        p(f"**Overall: {overall}** (`make sanity`, {path.name}{weights})."),
        table(["check", "result", "numbers", "advice"], rows),
        *blocks,
    ]


def _long(value):
    return isinstance(value, (dict, list)) and len(value) > 4


def _num(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    return plain(value)


# ------------------------------------------------------------------ compute


def code_version():
    """The last commit that touched the code (project/), so committing a report does not change it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%H", "--", "project")
        dirty = git("status", "--porcelain", "--", "project")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return (commit or "unknown (not a git checkout)") + (" with uncommitted changes in project/" if dirty else "")


def determinism_text(runs):
    """Whether every run was deterministic (runtime.deterministic), so whether rerunning gives the same numbers."""
    flags = {r["name"]: r["metrics"]["deterministic"] for group in runs.values() for r in group}
    if all(flags.values()):
        return (
            "**Deterministic:** yes, every run (runtime.deterministic): the same code, cards, data and seed on this "
            "machine give identical numbers; only the timing fields differ."
        )
    off = ", ".join(name for name, on in flags.items() if not on)
    return (
        f"**Deterministic:** no, for {off} (runtime.deterministic: false): a rerun may give slightly different numbers."
    )


def compute_section(runs, root, trials):
    base = runs["baseline"][0]["metrics"]
    dev = base.get("device", {})
    blocks = [
        ul(
            [
                f"**Device:** {dev.get('type', '?')} {dev.get('name', '')}"
                + (f" ×{dev['count']}" if dev.get("count", 1) > 1 else ""),
                *([f"**Runtime:** {_describe(base['runtime'])}"] if base.get("runtime") else []),
                determinism_text(runs),
                f"**Code version:** {base.get('git_commit') or code_version()}",
            ]
        )
    ]
    rows = []
    for name in ("baseline", "tuned"):
        for r in runs[name]:
            m = r["metrics"]
            for s in m.get("stages", []):
                rows.append(
                    [r["name"], s["stage"], str(s["epochs"]), f"{s['seconds']:.1f}", f"{s['images_per_second']:.1f}"]
                )
            rows.append(
                [
                    r["name"],
                    "total (incl. data and evaluation)",
                    "",
                    f"{m.get('wall_seconds', 0):.1f}",
                    f"{m.get('train_images_per_second', 0):.1f}",
                ]
            )
    seconds = _column(trials, "wall_seconds", "seconds") if trials is not None else None
    if seconds:
        rows.append(
            [
                "tuning",
                f"all {len(trials)} trials",
                "",
                f"{pd.to_numeric(trials[seconds], errors='coerce').sum():.1f}",
                "",
            ]
        )
    blocks.append(table(["run", "stage", "epochs", "seconds", "images/s"], rows))
    versions = [runs["baseline"][0]] + runs["tuned"][:1]
    keys = sorted({k for r in versions for k in r["metrics"].get("versions", {})})
    blocks.append(
        table(
            ["package", *[r["name"] for r in versions]],
            [[k, *[str(r["metrics"].get("versions", {}).get(k, "—")) for r in versions]] for k in keys],
        )
    )
    paper = runs["baseline"][0]["config"]["paper"]
    seeds = [f"{r['name']} {r['metrics'].get('seed')}" for g in runs.values() for r in g]
    items = [
        f"**Training seeds:** {', '.join(seeds)}",
        f"**Split seed:** {base.get('split_seed', runs['baseline'][0]['config']['dataset']['split']['seed'])}",
    ]
    if paper.get("search"):
        items.append(f"**Search seed:** {paper['search']['seed']}")
    if trials is not None and "seed" in trials:
        trial_seeds = pd.to_numeric(trials["seed"], errors="coerce").dropna()
        if len(trial_seeds):
            items.append(
                f"**Trial seeds:** {span(trial_seeds.min(), trial_seeds.max())} (recorded per trial in trials.csv)"
            )
    blocks.append(ul(items))
    return blocks


# ------------------------------------------------------------------ reproduce, model card


def reproduce_section(runs, root, config, target_arg, trials):
    cmd = commands(config)
    overrides = runs["baseline"][0]["config"].get("overrides") or []
    args = (" ARGS='" + " ".join(f"--set {o}" for o in overrides) + "'") if overrides else ""
    seeds = max(len(runs["baseline"]), len(runs["tuned"]))
    extra = (f" SEEDS={seeds}" if seeds > 1 else "") + args
    tune_extra = ""
    search = runs["baseline"][0]["config"]["paper"].get("search")
    if trials is not None and search and "stage" in trials:
        counts = trials.groupby("stage").size()
        card = {s: search[s]["trials"] for s in ("coarse", "fine")}
        if any(counts.get(s, 0) != card[s] for s in card) and counts.nunique() == 1:
            tune_extra = f" TRIALS={int(counts.iloc[0])}"
    target = f" TARGET={target_arg:g}" if target_arg is not None else ""
    lines = [f"make all {cmd['cards']}{tune_extra}{extra}{target}", "", "# or step by step:"]
    if (Path(root) / "sanity.json").exists():
        lines.append(f"make sanity {cmd['cards']}{args}")
    lines.append(f"make train {cmd['cards']}{extra}")
    if runs["tuned"]:
        lines.append(f"make tune {cmd['cards']}{tune_extra}{extra}")
    lines.append(f"make report {cmd['cards']}{target}{args}")
    run = "tuned" if runs["tuned"] else "baseline"
    lines.append(f"make evaluate RUN={Path(root) / run}")
    return [
        p("The commands that produced this report (on a fresh clone they install the pinned environment first):"),
        code(lines),
    ]


def model_card_section(card, runs, target):
    final = runs["tuned"][0] if runs["tuned"] else runs["baseline"][0]
    m = final["metrics"]
    d = final["config"]["dataset"]
    worst = min(m["per_class"].items(), key=lambda kv: (kv[1]["f1"], kv[0]))
    model = final["config"]["paper"]["model"]
    recommendations = list(card.caveats)
    if m["test_accuracy"] < target:
        recommendations.append(
            f"The test accuracy {f4(m['test_accuracy'])} is below the target {target:.4f}: do not rely on it where that target matters."
        )
    if "fallback" in str(m.get("weights_used", "")):
        recommendations.append(
            "The backbone was trained from random initialisation because ImageNet weights were unavailable."
        )
    lo, hi = accuracy_ci(m)
    if hi - lo > 0.05:
        recommendations.append(
            f"The test set is small ({m['test']['count']} images): the 95% interval {ci_text((lo, hi))} is wide."
        )
    if imbalance_ratio(m["counts"]["train"]) > IMBALANCED:
        recommendations.append(
            f"The classes are imbalanced (ratio above {IMBALANCED:g}): read per-class recall, not only accuracy."
        )
    return [
        ul(
            [
                f"**Model:** {model['backbone']} classifier ({final['name']} run), reproducing {card.citation.title} ({card.citation.year}).",
                f"**Intended use:** {card.intended_use}",
                f"**Training data:** {final['config']['dataset_name']}"
                + (f" ({d['description'].rstrip('.')})" if d.get("description") else "")
                + f", {sum(m['counts']['train'].values())} training and {sum(m['counts']['val'].values())} validation images.",
                f"**Evaluation data:** the held-out test subset, {m['test']['count']} images, the same for before and after.",
                f"**Metrics:** test accuracy {f4(m['test_accuracy'])} {ci_text((lo, hi))} (trivial baseline, the majority class's share: "
                f"{f4(m['test']['majority_share'])}), macro-F1 {f4(m['test_macro_f1'])}, "
                f"balanced accuracy {f4(m['test']['balanced_accuracy'])}; "
                f"weakest class {worst[0]} (F1 {f4(worst[1]['f1'])}).",
            ]
        ),
        h3("Caveats and recommendations"),
        ul(recommendations or ["None stated in the paper card (`caveats:`)."]),
    ]


# ------------------------------------------------------------------ assembling and writing


def build(config, root, target=None, ranks=None):
    """Everything the report holds: sections of blocks, figures (PNG bytes) and the JSON files."""
    root = Path(root)
    runs = load_runs(config, root)
    card = config.paper
    goal = target if target is not None else card.target_accuracy
    goal_source = "TARGET= / --target" if target is not None else "the paper card's target_accuracy"
    cmd = commands(config)
    figs = {}
    from project.report import (
        summary as report_summary,  # it uses this module's block helpers: imported once this module is complete
    )

    compared = report_summary.comparison(runs, card, config)
    hyper_blocks, hyper_data = hyperparameters(runs, card, config)
    search_blocks, trials = search_section(runs, root, cmd, figs, ranks)
    bodies = [
        report_summary.summary(compared, runs, goal, goal_source, cmd),
        report_summary.paper_section(compared, card, config, runs),
        hyper_blocks,
        search_blocks,
        curves_section(runs, goal, figs),
        per_class_section(runs, figs),
        examples_section(runs, root, figs),
        data_section(runs, root),
        model_section(runs),
        sanity_section(root, cmd, figs),
        compute_section(runs, root, trials),
        reproduce_section(runs, root, config, target, trials),
        model_card_section(card, runs, goal),
    ]
    sections = [
        {"title": t, "id": re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-"), "blocks": b}
        for t, b in zip(SECTIONS, bodies)
    ]
    completed = max(r["completed"] for g in runs.values() for r in g)
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    metrics = {
        "before": metric_summary(before),
        "after": metric_summary(after) if after else None,
        "change": {
            k: report_summary.value(after, k) - report_summary.value(before, k)
            for _, k in report_summary.SUMMARY_METRICS
        }
        if after
        else None,
        "target": {"accuracy": goal, "source": goal_source, "met": (after or before)["test_accuracy"] >= goal},
        "seeds": {name: [metric_summary(r["metrics"]) | {"folder": r["name"]} for r in runs[name]] for name in runs},
    }
    return {
        "title": f"{config.paper_name} on {config.dataset_name}: before and after optimisation",
        "citation": card.citation.title,
        "generated_at": completed,
        "run_name": config.run_name,
        "sections": sections,
        "figures": figs,
        "hyperparameters": hyper_data,
        "metrics": metrics,
        "comparison": compared,
        "trials_file": root / "tuning" / "trials.csv" if trials is not None else None,
        "summary_table": next(b for b in sections[0]["blocks"] if b["type"] == "table" and b["head"][0] == "metric"),
    }


def md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def inline_html(text):
    """The Markdown inline marks the blocks use (**bold**, *italic*, `code`) as HTML, escaped."""
    html = str(escape(text))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", html)
    return Markup(html)


def environment():
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html.j2"]),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = md_cell
    env.filters["inline"] = inline_html
    return env


def render(report):
    env = environment()
    data_uris = {
        name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        for name, data in report["figures"].items()
    }
    markdown = env.get_template("report.md.j2").render(report=report)
    html = env.get_template("report.html.j2").render(report=report, images=data_uris)
    return markdown, html


def write(report, folder):
    """Write (overwrite) the report's own files; nothing else in the folder is touched."""
    folder = Path(folder)
    markdown, html = render(report)
    for name, data in sorted(report["figures"].items()):
        atomic_write(folder / "figures" / name, data)
    atomic_write(folder / "report.md", markdown)
    atomic_write(folder / "report.html", html)
    write_json(folder / "hyperparameters.json", report["hyperparameters"])
    write_json(folder / "metrics.json", report["metrics"])
    write_json(folder / "comparison.json", report["comparison"])
    if report["trials_file"] is not None:
        atomic_write(folder / "trials.csv", report["trials_file"].read_bytes())
    return folder / "report.md", folder / "report.html"


def markdown_table(block):
    lines = ["| " + " | ".join(block["head"]) + " |", "|" + " --- |" * len(block["head"])]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in block["rows"]]
    return "\n".join(lines)


def cli(config, args):
    root = run_root(config, args.runs_dir)
    report = build(config, root, target=args.target, ranks=rank_agreement(args.reports_dir, config))
    md_path, html_path = write(report, Path(args.reports_dir) / config.run_name)
    print(f"report: {md_path}\n        {html_path}\n")
    print(report["comparison"]["headline"] + "\n")
    print(markdown_table(report["summary_table"]))
    verdict = next(b for b in report["sections"][0]["blocks"] if b["type"] == "p" and b["text"].startswith("**Target"))
    print("\n" + verdict["text"].replace("**", ""))
    return 0
