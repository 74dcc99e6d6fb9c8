"""The record of every trial: its meta.json (written by the tuner) and trials.csv (every trial of
both stages, rewritten whenever a trial ends), and the ranking read from them. No TensorFlow here.

tuning/<stage>/trial_*/trial.json   Keras Tuner's: values, status, score
tuning/<stage>/trial_*/meta.json    ours: status, reason, epochs, seed, wall, fit and fixed seconds, reused, worker
"""

import math
from pathlib import Path

import pandas as pd

from project.artifacts import read_json
from project.records import Trials
from project.tune.search_plan import steady_epoch

STAGES = ("coarse", "fine")
META = "meta.json"


def fixed_seconds(meta):
    """A trial's seconds outside steady-state training: its wall time less its epochs at its steady
    epoch time (building, compiling, tracing, datasets, clean-up)."""
    epochs = meta["epoch_seconds"]
    return round(meta["wall_seconds"] - len(epochs) * steady_epoch(epochs), 2) if epochs else meta["wall_seconds"]


def read_trials(folder, stage):
    """(trial.json, meta.json) of each trial of a stage, in trial order. A trial.json cut short is
    left out: the resumed search rebuilds it (project.tune.tuner_state) and runs the trial again."""
    found = []
    for path in sorted((Path(folder) / stage).glob("trial_*/trial.json")):
        meta_path = path.with_name(META)
        try:
            trial = read_json(path)
        except ValueError:
            continue
        found.append((trial, read_json(meta_path) if meta_path.exists() else {}))
    return found


def trial_row(stage, trial, meta, objective):
    status = {"COMPLETED": "completed", "RUNNING": "running"}.get(trial["status"], "failed")
    reason = ""
    if status == "failed":
        status = "exploded" if meta.get("status") == "exploded" else "failed"
        lines = [line for line in (trial.get("message") or "").splitlines() if line.strip()]
        reason = meta.get("reason") or (lines[-1] if lines else "")
    return {
        "trial_id": trial["trial_id"],
        "stage": stage,
        **trial["hyperparameters"]["values"],
        f"best_{objective}": meta.get("best", trial.get("score")),
        f"last_{objective}": meta.get("last"),
        "epochs_run": meta.get("epochs_run"),
        "status": status,
        "failure_reason": reason,
        "seed": meta.get("seed"),
        "wall_seconds": meta.get("wall_seconds"),
        "fit_seconds": meta.get("fit_seconds"),
        "fixed_seconds": meta.get("fixed_seconds"),
        "reused": meta.get("reused"),
        "worker": meta.get("worker", ""),
        "score": trial.get("score"),
    }


def trials_table(folder, objective):
    rows = [trial_row(stage, trial, meta, objective) for stage in STAGES for trial, meta in read_trials(folder, stage)]
    fixed = [
        "trial_id",
        "stage",
        f"best_{objective}",
        f"last_{objective}",
        "epochs_run",
        "status",
        "failure_reason",
        "seed",
        "wall_seconds",
        "fit_seconds",
        "fixed_seconds",
        "reused",
        "worker",
    ]
    names = list(dict.fromkeys(k for row in rows for k in row if k not in fixed and k != "score"))
    return pd.DataFrame(rows, columns=[*fixed[:2], *names, *fixed[2:], "score"]).drop(columns="score")


def write_trials_csv(folder, objective):
    table = trials_table(folder, objective)
    Trials.from_frame(table).write(Path(folder) / "trials.csv")
    return table


def ranked(folder, stages, direction):
    """Completed trials of the given stages, best first: (stage, trial) pairs."""
    done = [
        (stage, t)
        for stage in stages
        for t, _ in read_trials(folder, stage)
        if t["status"] == "COMPLETED" and t.get("score") is not None and math.isfinite(t["score"])
    ]
    return sorted(done, key=lambda pair: pair[1]["score"], reverse=direction == "max")


def ended(folder, stage):
    return sum(t["status"] in ("COMPLETED", "FAILED") for t, _ in read_trials(folder, stage))
