"""The run records (project/records): every file written and read back gives the same model; a renamed
key, another format version or a missing key is ONE clear error that names the file and the command
that writes it again, in the report as on the command line."""

import contextlib
import io
import json
import shutil

import pandas as pd
import pytest
from conftest import DIGITS_DATASET, write_dataset_card, write_tiny_paper_card
from pydantic import ValidationError

from project.config.cards import load_config
from project.errors import UserError
from project.records import (
    FORMAT,
    Candidate,
    Comparison,
    FineSpace,
    History,
    Metrics,
    Sanity,
    Trials,
    TuningSummary,
)

TRAIN = "make train PAPER=tiny DATASET=digits"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny real baseline run (scratch CNN, one epoch on digits): its config and run root."""
    from project.train.training import train_run

    base = tmp_path_factory.mktemp("records")
    config = load_config(
        str(write_tiny_paper_card(base / "cards")), str(write_dataset_card(base / "cards", "digits", **DIGITS_DATASET))
    )
    root = base / "runs" / config.run_name
    with contextlib.redirect_stdout(io.StringIO()):
        train_run(config, root, "baseline", verbose=0)
    return {"config": config, "root": root}


def copy_run(run, tmp_path):
    root = tmp_path / "runs" / run["config"].run_name
    shutil.copytree(run["root"], root)
    return root


CANDIDATE = {
    "stage": "fine",
    "trial_id": "03",
    "score": 0.91,
    "objective": "val_accuracy",
    "values": {"learning_rate": 0.01, "optimizer": "adam"},
    "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam"},
    "card_values": {"training.learning_rate": 0.01, "training.optimizer": "adam"},
}
SPACE = {"learning_rate": {"type": "float", "min": 0.001, "max": 0.1, "sampling": "log", "step": None}}
SUMMARY = {
    "objective": "val_accuracy",
    "direction": "max",
    "stages": ["coarse", "fine"],
    "coarse_space": SPACE,
    "fine_space": SPACE,
    "budget": {
        "budget_seconds": 600,
        "first_trial_seconds": 30.5,
        "epoch_seconds": 4.2,
        "fixed_seconds": 9.1,
        "trial_seconds": {"coarse": 21.7, "fine": 34.3},
        "trials": {"coarse": 8, "fine": 4},
    },
    "finalists": [CANDIDATE],
    "best": CANDIDATE,
    "final_round": {
        "metric": "val_accuracy",
        "finalists": [{"stage": "fine", "trial_id": "03", "search_score": 0.91, "val_accuracy": 0.93, "run": "x"}],
    },
    "warnings": ["learning_rate = 0.099 lies in the outer 10% of [0.001, 0.1]"],
    "trial_seconds": 312.4,
}
SANITY = {
    "paper": "tiny",
    "dataset": "digits",
    "status": "WARN",
    "weights_used": "random",
    "seconds": 12.5,
    "created": "2026-01-01T00:00:00+0000",
    "checks": [
        {
            "name": "overfit",
            "title": "3 overfit 20 training examples",
            "status": "PASS",
            "numbers": {"examples": 20, "final_accuracy": 1.0, "epochs_to_100": None},
            "advice": "memorised",
            "seconds": 3.2,
            "plot": "sanity_overfit.png",
            "history": [{"epoch": 1, "loss": 2.3, "accuracy": 0.1}],
        },
        {
            "name": "preprocessing",
            "title": "6 preprocessed inputs",
            "status": "WARN",
            "numbers": {"mode": "tf", "channel_mean": [0.1, 0.2, 0.3]},
            "advice": "values span [0, 255]",
            "seconds": 0.1,
            "augmentation": "augmentation keeps the input statistics",
        },
    ],
}


def trials_frame():
    return pd.DataFrame(
        {
            "trial_id": ["00", "01", "02"],
            "stage": ["coarse", "coarse", "fine"],
            "learning_rate": [0.001, 5.0, 0.002],
            "optimizer": ["adam", "sgd", "adam"],
            "best_val_accuracy": [0.8, None, 0.85],
            "last_val_accuracy": [0.7, None, 0.85],
            "epochs_run": [2, 1, None],
            "status": ["completed", "exploded", "running"],
            "failure_reason": ["", "exploded: loss nan in epoch 1", ""],
            "seed": [1, 1, 1],
            "wall_seconds": [3.0, 1.0, 0.0],
            "fit_seconds": [2.5, 0.8, None],
            "fixed_seconds": [0.5, 0.2, None],
            "reused": [False, True, None],
            "worker": ["local", "local", "local"],
        }
    )


# ------------------------------------------------------------------ round trips


def test_records_written_by_training_read_back_the_same(run, tmp_path):
    folder = run["root"] / "baseline"
    metrics = Metrics.read(folder / "metrics.json")
    assert json.loads((folder / "metrics.json").read_text())["format"] == FORMAT == metrics.format
    metrics.write(tmp_path / "metrics.json")
    assert Metrics.read(tmp_path / "metrics.json") == metrics
    assert (tmp_path / "metrics.json").read_text() == (folder / "metrics.json").read_text()
    history = History.read(folder / "history.csv")
    assert history.columns[:3] == ["stage", "global_epoch", "epoch"] and "update_ratio" in history.columns
    history.write(tmp_path / "history.csv")
    assert History.read(tmp_path / "history.csv") == history
    assert (tmp_path / "history.csv").read_text() == (folder / "history.csv").read_text()
    assert pd.read_csv(folder / "history.csv")["format"].tolist() == [FORMAT] * len(history.rows)


@pytest.mark.parametrize(
    "model, data",
    [
        (TuningSummary, SUMMARY),
        (TuningSummary, {**SUMMARY, "budget": None, "best": None, "final_round": None, "fine_space": None}),
        (FineSpace, {"top_k": ["00", "03"], "space": SPACE}),
        (Candidate, CANDIDATE),
        (Sanity, SANITY),
    ],
)
def test_json_records_round_trip(model, data, tmp_path):
    record = model.model_validate(data)
    record.write(tmp_path / model.FILE)
    assert model.read(tmp_path / model.FILE) == record
    written = json.loads((tmp_path / model.FILE).read_text())
    assert written == ({**data, "format": FORMAT} if model is not Candidate else data)  # optional keys stay out


def test_trials_table_round_trip_keeps_the_writers_columns(tmp_path):
    frame = trials_frame()
    trials = Trials.from_frame(frame)
    trials.write(tmp_path / "trials.csv")
    back = Trials.read(tmp_path / "trials.csv")
    assert back == trials and back.objective == "val_accuracy"
    assert back.columns == list(frame.columns)
    assert back.frame()["trial_id"].tolist() == ["00", "01", "02"]  # ids stay text
    assert back.rows[2].epochs_run is None and back.rows[1].reused is True and back.rows[0].failure_reason == ""


def test_comparison_record_round_trip_from_a_report_with_seeds(run, tmp_path):
    from project.report.render import build

    root = copy_run(run, tmp_path)
    shutil.copytree(root / "baseline", root / "tuned")
    Candidate.model_validate(CANDIDATE).write(root / "tuned" / Candidate.FILE)
    for name in ("baseline", "tuned"):
        shutil.copytree(root / name, root / f"{name}-seed2")
    comparison = Comparison.model_validate(build(run["config"], root)["comparison"])
    assert comparison.paired is not None and comparison.seeds is not None and comparison.seeds.welch.p_value is None
    comparison.write(tmp_path / "comparison.json")
    assert Comparison.read(tmp_path / "comparison.json") == comparison


# ------------------------------------------------------------------ refused


def test_a_renamed_key_fails_where_it_is_written(run):
    metrics = json.loads((run["root"] / "baseline" / "metrics.json").read_text())
    metrics["test_acc"] = metrics.pop("test_accuracy")
    with pytest.raises(ValidationError, match="test_acc"):
        Metrics.model_validate(metrics)
    with pytest.raises(ValueError, match="missing column `status`"):
        Trials.from_frame(trials_frame().rename(columns={"status": "state"}))


def test_a_renamed_key_is_refused_naming_the_file_and_the_command(run, tmp_path):
    path = tmp_path / "metrics.json"
    metrics = json.loads((run["root"] / "baseline" / "metrics.json").read_text())
    metrics["test_acc"] = metrics.pop("test_accuracy")
    path.write_text(json.dumps(metrics))
    with pytest.raises(UserError) as error:
        Metrics.read(path, TRAIN)
    assert str(error.value) == (
        f"{path}: missing key `test_accuracy`; unknown key `test_acc` (renamed?): rerun `{TRAIN}`"
    )
    path = tmp_path / "history.csv"
    history = pd.read_csv(run["root"] / "baseline" / "history.csv").rename(columns={"val_loss": "validation_loss"})
    history.to_csv(path, index=False)
    with pytest.raises(UserError, match=rf"^{path}: missing column `val_loss`: rerun `make train`$"):
        History.read(path)
    nested = json.loads(json.dumps(SUMMARY))
    nested["budget"]["seconds"] = nested["budget"].pop("budget_seconds")
    (tmp_path / "summary.json").write_text(json.dumps({**nested, "format": FORMAT}))
    with pytest.raises(UserError, match=r"missing key `budget.budget_seconds`; unknown key `budget.seconds`"):
        TuningSummary.read(tmp_path / "summary.json")


def test_a_bad_value_in_a_table_names_its_row_and_column(tmp_path):
    frame = trials_frame().assign(format=FORMAT)
    frame.loc[1, "status"] = "done"
    frame.to_csv(tmp_path / "trials.csv", index=False)
    with pytest.raises(UserError, match=r"trials.csv: row 2, column `status`: Input should be 'completed'"):
        Trials.read(tmp_path / "trials.csv", "make tune")


def test_another_format_version_is_refused(run, tmp_path):
    metrics = json.loads((run["root"] / "baseline" / "metrics.json").read_text())
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**metrics, "format": 2}))
    with pytest.raises(UserError) as error:
        Metrics.read(path, TRAIN)
    assert str(error.value) == f"{path}: format 2, this code reads format 1: rerun `{TRAIN}`"
    del metrics["format"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=rf"^{path}: format 0 \(.*\), this code reads format 1: rerun `make train`$"):
        Metrics.read(path)
    path = tmp_path / "trials.csv"
    trials_frame().to_csv(path, index=False)  # no format column
    with pytest.raises(UserError, match=r"trials.csv: format 0 \(.*\), this code reads format 1: rerun `make tune`"):
        Trials.read(path)
    trials_frame().assign(format=3).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"trials.csv: format 3, this code reads format 1"):
        Trials.read(path)
    (tmp_path / "sanity.json").write_text("{not json")
    with pytest.raises(UserError, match=r"sanity.json: not valid JSON .*: rerun `make sanity`"):
        Sanity.read(tmp_path / "sanity.json")


def test_report_refuses_a_run_whose_metrics_json_lacks_a_key(run, project_env):
    config = run["config"]
    root = project_env.runs / config.run_name
    shutil.copytree(run["root"], root)
    path = root / "baseline" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["seed"]
    path.write_text(json.dumps(metrics))
    result = project_env.run(
        "report", "--paper", config.paper_file, "--dataset", config.dataset_file, "--reports-dir", project_env.reports
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"error: {path}: missing key `seed`: rerun `{TRAIN}`\n"
    assert not project_env.reports.exists()
