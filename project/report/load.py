"""Reading runs/ for the report. Every record goes through its model (project.records), so a missing,
renamed or old-format key is one UserError naming the file and the command that writes it again;
each error names that command with this report's cards.

The runs a report reads: baseline (required), tuned (optional) and the extra seeds of each, each
{name, folder, metrics (records.Metrics), history (history.csv as a DataFrame), predictions,
config (config.resolved.yaml as a dict), completed (the COMPLETE marker's time)}.
"""

import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from project.artifacts import COMPLETE, read_json, require_complete
from project.config.cards import read_yaml, validate
from project.config.schema import Config
from project.errors import UserError
from project.records import Candidate, FineSpace, History, Metrics, Sanity, Trials, TuningSummary, refused


def commands(config):
    cards = f"PAPER={config.paper_name} DATASET={config.dataset_name}"
    return {
        "train": f"make train {cards}",
        "tune": f"make tune {cards}",
        "all": f"make all {cards}",
        "sanity": f"make sanity {cards}",
        "cards": cards,
    }


def load_run(folder, command):
    folder = Path(folder)
    metrics = Metrics.read(folder / Metrics.FILE, command)
    predictions = folder / "predictions.csv"
    if not predictions.is_file():
        raise refused(predictions, "missing", command)
    val_predictions = folder / "predictions_val.csv"  # runs trained before it existed have none
    return {
        "name": folder.name,
        "folder": folder,
        "metrics": metrics,
        "history": History.read(folder / History.FILE, command).frame(),
        "predictions": _predictions(predictions),
        "val_predictions": _predictions(val_predictions) if val_predictions.is_file() else None,
        "config": read_yaml(folder / "config.resolved.yaml"),
        "completed": (folder / COMPLETE).read_text(encoding="utf-8").strip(),
    }


def probabilities_of(table, class_names):
    """(probabilities, label indices) from a predictions table (source, true, p_<class> ...)."""
    index = {name: i for i, name in enumerate(class_names)}
    probabilities = table[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    return probabilities, table["true"].astype(str).map(index).to_numpy(dtype=int)


def _predictions(path):
    return pd.read_csv(path, dtype={"source": str, "true": str, "predicted": str})


def run_folders(root, name, folds=None):
    """The run folders of one side in (seed, fold) order: <name>, <name>-seed<s>; with cross-validation
    (split.folds) <name>-fold<k>, <name>-seed<s>-fold<k> (project.train.training.fold_runs names them)."""
    pattern = re.compile(rf"{name}(?:-seed(\d+))?" + (r"-fold(\d+)" if folds else ""))
    found = []
    for folder in Path(root).glob(f"{name}*"):
        match = pattern.fullmatch(folder.name)
        if match and folder.is_dir():
            found.append(((int(match.group(1) or 0), int(match.group(2)) if folds else 0), folder))
    return [folder for _, folder in sorted(found)]


def load_runs(config, root):
    """baseline (required), tuned (optional) and the extra seeds of each, and every fold with split.folds;
    incomplete runs are refused, and so is a cross-validated side missing a fold of its first seed."""
    root = Path(root)
    cmd = commands(config)
    folds = config.dataset.split.folds
    first = root / ("baseline-fold1" if folds else "baseline")
    if not first.exists():
        other = run_folders(root, "baseline", not folds)
        hint = (
            f" ({other[0].name} exists: {'without' if folds else 'with'} split.folds; report with the cards it was trained with)"
            if other
            else ""
        )
        raise UserError(f"no baseline run at {first}: create it with `{cmd['train']}` (or `{cmd['all']}`){hint}")
    runs = {}
    for name, command in (("baseline", cmd["train"]), ("tuned", cmd["tune"])):
        folders = run_folders(root, name, folds)
        missing = [
            f"{name}-fold{k}" for k in range(1, (folds or 0) + 1) if folders and not (root / f"{name}-fold{k}").exists()
        ]
        if missing:
            raise UserError(
                f"{root}: {', '.join(missing)} missing (split.folds is {folds}): run `{command}` to train every fold"
            )
        runs[name] = [load_run(require_complete(f, command), command) for f in folders]
    return runs


def run_config(run):
    return validate(Config, run["config"], run["folder"] / "config.resolved.yaml")


class Tuning(NamedTuple):
    """The tuning step's records; each is None until the step writes it."""

    trials: Trials | None
    summary: TuningSummary | None
    fine: FineSpace | None


def load_tuning(root, cmd):
    folder = Path(root) / "tuning"

    def read(model):
        path = folder / model.FILE
        return model.read(path, cmd["tune"]) if path.exists() else None

    return Tuning(read(Trials), read(TuningSummary), read(FineSpace))


def best_hyperparameters(runs, cmd):
    """The tuned run's trial (tuned/best_hyperparameters.json), None without a tuned run."""
    if not runs["tuned"]:
        return None
    return Candidate.read(runs["tuned"][0]["folder"] / Candidate.FILE, cmd["tune"])


def load_sanity(root, cmd):
    path = Path(root) / Sanity.FILE
    return Sanity.read(path, cmd["sanity"]) if path.exists() else None


def load_data_issues(path):
    """data_issues.csv of the data check (source, reason, action, detail), None if the check has not run."""
    return pd.read_csv(path, dtype=str, keep_default_na=False) if Path(path).exists() else None


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
