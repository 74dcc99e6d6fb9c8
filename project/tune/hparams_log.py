"""The search in TensorBoard's HParams dashboard: `tuning/hparams/` holds the experiment (every
searched hyperparameter, the trial's stage and status, the objective) and one run per trial,
written from trials.csv when the search ends, so `tensorboard --logdir runs/<paper>__<dataset>`
shows every trial in its table and parallel-coordinates views."""

import math
import shutil
from pathlib import Path

import pandas as pd

FOLDER = "hparams"


def _plain(value):
    """A trials.csv cell as the value HParams takes (bool, number or text); None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _domain(entry, values):
    from tensorboard.plugins.hparams import api as hp

    if entry["type"] in ("float", "int") and entry.get("min") is not None:
        interval = hp.IntInterval if entry["type"] == "int" else hp.RealInterval
        cast = int if entry["type"] == "int" else float
        return interval(cast(entry["min"]), cast(entry["max"]))
    seen = sorted({v for v in values if v is not None}, key=str)
    if not seen or len({type(v) for v in seen}) > 1:  # HParams wants one type per hyperparameter
        return hp.Discrete([str(v) for v in seen]) if seen else None
    return hp.Discrete(seen)


def write_hparams(folder, table, space, objective):
    """Rewrite tuning/hparams/ from the trials table (trials.csv as a DataFrame); written aside and
    swapped in, so TensorBoard never reads half an experiment."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    out = Path(folder) / FOLDER
    tmp = out.with_name(f".{FOLDER}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    columns = [n for n in space if n in table] + ["stage", "status"]
    values = {n: [_plain(v) for v in table[n]] for n in columns}
    hparams = {}
    for name in columns:
        entry = space.get(name, {"type": "choice"})
        domain = _domain(entry, values[name])
        if domain is not None and isinstance(domain, hp.Discrete) and isinstance(domain.values[0], str):
            values[name] = [None if v is None else str(v) for v in values[name]]
        hparams[name] = hp.HParam(name, domain)
    metric = f"best_{objective}"
    writer = tf.summary.create_file_writer(str(tmp))
    with writer.as_default():
        hp.hparams_config(hparams=list(hparams.values()), metrics=[hp.Metric(metric, display_name=objective)])
    writer.close()
    for i in range(len(table)):
        record = table.iloc[i]
        trial = f"{record['stage']}-{record['trial_id']}"
        writer = tf.summary.create_file_writer(str(tmp / trial))
        with writer.as_default():
            chosen = {hparams[n]: values[n][i] for n in columns if values[n][i] is not None}
            hp.hparams(chosen, trial_id=trial)
            score = pd.to_numeric(pd.Series([record[metric]]), errors="coerce").iloc[0]
            if pd.notna(score):
                tf.summary.scalar(metric, float(score), step=int(_plain(record["epochs_run"]) or 0))
        writer.close()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
