"""The search with real Keras Tuner on the tiny scratch CNN and digits: exploding trials, the fine
stage, trials.csv, the retrained best, resume after a kill, and the distributed chief/workers."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import pandas as pd
import pytest

from project.artifacts import read_json
from project.commands.cli import main
from project.config.cards import load_config
from project.data.prepare import prepare
from project.errors import UserError
from project.train.training import train_run
from project.tune.hypermodel import CardHyperModel
from project.tune.search_space import card_space, edge_warnings
from project.tune.tuning import StageOracle, StageTuner, check_search, tune

# No normalization: plain SGD at learning rate 10 then explodes within a few batches.
TINY = {"model.scratch.normalization": "none", "training.optimizer": "sgd", "training.batch_size": 64}
# seed 15 draws learning rates 10, 10, 10, 0.05: three exploding trials in a row (Keras Tuner's
# default max_consecutive_failed_trials of 3 would end the search there), then a working one.
EXPLODING = {
    "objective": "val_accuracy",
    "seed": 15,
    "top_k": 2,
    "coarse": {"trials": 4, "epochs": 2},
    "fine": {"trials": 1, "epochs": 1},
    "space": {"learning_rate": {"choices": [0.05, 10.0]}, "dropout": {"min": 0.0, "max": 0.5}},
}
CALM = {
    "objective": "val_accuracy",
    "seed": 3,
    "top_k": 2,
    "coarse": {"trials": 3, "epochs": 1},
    "fine": {"trials": 1, "epochs": 1},
    "space": {"learning_rate": {"min": 0.01, "max": 0.1, "sampling": "log"}, "dropout": {"min": 0.0, "max": 0.5}},
}
ARTIFACTS = ["model.keras", "history.csv", "predictions.csv", "metrics.json", "config.resolved.yaml", "COMPLETE"]


def config_with(tmp_path, tiny_paper_card, digits_card, search, **overrides):
    paper = tiny_paper_card(tmp_path / "cards", **{**TINY, "search": search, **overrides})
    return load_config(str(paper), str(digits_card))


def test_the_card_space_becomes_keras_tuner_hyperparameters_of_the_stages_hypermodel(
    tmp_path, tiny_paper_card, digits_card
):
    search = {
        **CALM,
        "space": {**CALM["space"], "batch_size": {"choices": [16, 64]}, "head_units": {"min": 8, "max": 64, "step": 8}},
    }
    config = config_with(tmp_path, tiny_paper_card, digits_card, search)
    objective = keras_tuner.Objective("val_accuracy", "max")
    model = CardHyperModel(
        config, prepare(config, tmp_path / "run"), objective, space=card_space(config.paper.search), epochs=1
    )
    oracle = StageOracle(tmp_path / "tuning", objective=objective, max_trials=2, seed=1)
    StageTuner(
        oracle=oracle, hypermodel=model, directory=str(tmp_path / "tuning"), project_name="coarse", stage="coarse"
    )
    space = {hp.name: hp for hp in oracle.get_space().space}
    assert type(space["learning_rate"]).__name__ == "Float" and space["learning_rate"].sampling == "log"
    assert (space["learning_rate"].min_value, space["learning_rate"].max_value) == (0.01, 0.1)
    assert space["dropout"].sampling == "linear" and space["dropout"].max_value == 0.5
    assert type(space["batch_size"]).__name__ == "Choice" and space["batch_size"].values == [16, 64]
    assert type(space["head_units"]).__name__ == "Int" and space["head_units"].step == 8


def test_search_marks_exploded_trials_goes_on_narrows_and_retrains_on_the_baseline_split(
    tmp_path, tiny_paper_card, digits_card, capsys
):
    config = config_with(tmp_path, tiny_paper_card, digits_card, EXPLODING)
    root = tmp_path / "runs" / config.run_name
    train_run(config, root, "baseline", verbose=0)
    split = (root / "split.csv").read_text()

    summary = tune(config, root, verbose=0, seeds=2)

    trials = pd.read_csv(root / "tuning" / "trials.csv", dtype={"trial_id": str})
    coarse, fine = trials[trials.stage == "coarse"], trials[trials.stage == "fine"]
    assert list(coarse.trial_id) == ["0", "1", "2", "3"] and list(fine.trial_id) == ["0"]
    exploding = coarse.learning_rate == 10.0
    assert exploding.sum() >= 3 and "".join("x" if e else "." for e in exploding).find("xxx") >= 0
    assert (coarse[exploding].status == "exploded").all()
    assert coarse[exploding].failure_reason.str.contains("exploded: training loss .* in epoch 1, batch").all()
    assert (coarse[exploding].epochs_run == 1).all()  # stopped in its first epoch of 2
    assert (coarse[~exploding].status == "completed").all() and (coarse[~exploding].epochs_run == 2).all()
    assert fine.status.tolist() == ["completed"] and fine.epochs_run.tolist() == [1]
    assert (
        set(trials.worker) == {"local"} and set(trials.seed) == {config.paper.seed} and (trials.wall_seconds > 0).all()
    )
    # time inside model.fit, exploded fits included; the rest of the wall time is the search's own
    assert ((trials.fit_seconds > 0) & (trials.fit_seconds < trials.wall_seconds)).all()
    assert trials.best_val_accuracy[trials.status == "completed"].notna().all()

    # fine: only learning rate 0.05 completed, so it is fixed there; dropout narrows around the best
    fine_space = read_json(root / "tuning" / "fine_space.json")["space"]
    assert fine_space["learning_rate"] == {"type": "fixed", "value": 0.05, "text": False}
    assert fine.learning_rate.tolist() == [0.05]
    best_coarse = coarse[~exploding].dropout.iloc[0]
    assert fine_space["dropout"]["min"] == pytest.approx(max(0.0, best_coarse - 0.05))
    assert fine_space["dropout"]["max"] == pytest.approx(min(0.5, best_coarse + 0.05))

    best = summary["best"]
    assert summary["warnings"] == edge_warnings(card_space(config.paper.search), best["hyperparameters"])
    assert best["card_values"]["training.learning_rate"] == 0.05

    tuned = root / "tuned"
    assert all((tuned / name).exists() for name in ARTIFACTS)
    assert all(
        (root / f"tuned-seed{config.paper.seed + 1}" / name).exists()
        for name in [*ARTIFACTS, "best_hyperparameters.json"]
    )
    assert read_json(tuned / "best_hyperparameters.json") == best
    assert (root / "split.csv").read_text() == split
    baseline_ids = pd.read_csv(root / "baseline" / "predictions.csv").source.tolist()
    assert pd.read_csv(tuned / "predictions.csv").source.tolist() == baseline_ids
    assert f"dropout: {best['hyperparameters']['dropout']}" in (tuned / "config.resolved.yaml").read_text()
    assert "test accuracy: baseline" in capsys.readouterr().out

    # a rerun resumes: nothing is trained again
    tune(config, root, verbose=0, seeds=2)
    again = pd.read_csv(root / "tuning" / "trials.csv", dtype={"trial_id": str})
    pd.testing.assert_frame_equal(again, trials)


def test_trials_leave_no_step_graph_pinned_in_tensorflows_gradient_registry(tmp_path, tiny_paper_card, digits_card):
    # each traced train step registers a CustomGradient-N entry that pins its graph (TF 2.21 leak)
    from tensorflow.python.framework import ops

    def pinned():
        return sum(key.startswith("CustomGradient-") for key in ops._gradient_registry._registry)

    config = config_with(tmp_path, tiny_paper_card, digits_card, CALM)
    before = pinned()
    tune(config, tmp_path / "run", stage="coarse", trials=2, verbose=0)
    assert pinned() == before


def test_a_tune_run_on_a_different_split_refuses(tmp_path, tiny_paper_card, digits_card, capsys):
    config = config_with(tmp_path, tiny_paper_card, digits_card, CALM)
    runs = tmp_path / "runs"
    prepare(config, runs / config.run_name)  # the baseline's split.csv
    args = [
        "tune",
        "--paper",
        str(tmp_path / "cards" / "tiny.yaml"),
        "--dataset",
        str(digits_card),
        "--runs-dir",
        str(runs),
    ]
    assert main([*args, "--set", "dataset.split.seed=5"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "split.csv was made with split" in error and "'seed': 0" in error
    assert not (runs / config.run_name / "tuning").exists()


@pytest.mark.parametrize(
    "search, words",
    [
        (None, "has no search section"),
        ({**CALM, "objective": "val_auc"}, "search.objective 'val_auc' is not recorded"),
        (
            {**CALM, "space": {"weight_decay": {"min": 0.001, "max": 2.0}}},
            "search.space.weight_decay: 2.0 is not a valid training.weight_decay",
        ),
        (
            {**CALM, "space": {"optimizer": {"choices": ["adam", "adagrad"]}}},
            "search.space.optimizer: 'adagrad' is not a valid training.optimizer",
        ),
    ],
)
def test_a_search_the_card_cannot_run_is_refused_naming_the_key(tmp_path, tiny_paper_card, digits_card, search, words):
    overrides = {} if search is None else {"search": search}
    config = load_config(str(tiny_paper_card(tmp_path / "cards", **TINY, **overrides)), str(digits_card))
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        tune(config, tmp_path / "runs" / config.run_name, verbose=0)


def tune_process(env, paper, digits_card, *args, extra_env=None):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "project",
            "tune",
            "--paper",
            str(paper),
            "--dataset",
            str(digits_card),
            "--quiet",
            *args,
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env={**env.env, **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_killed_search_resumes_and_runs_every_trial_once(tmp_path, tiny_paper_card, digits_card, project_env):
    paper = tiny_paper_card(tmp_path / "cards", **{**TINY, "search": CALM})
    tuning = project_env.runs / "tiny__digits" / "tuning"
    first = tune_process(project_env, paper, digits_card, "--stage", "coarse", "--trials", "2")
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        table = tuning / "trials.csv"
        started = (tuning / "coarse" / "trial_1" / "meta.json").exists()
        if started and table.exists() and (pd.read_csv(table).status == "completed").any():
            break
        time.sleep(0.2)
    assert first.poll() is None, f"the search ended before it could be killed:\n{first.communicate()[0]}"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert len(pd.read_csv(tuning / "trials.csv").query("status == 'completed'")) == 1

    second = tune_process(project_env, paper, digits_card, "--stage", "coarse", "--trials", "2")
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    trials = pd.read_csv(tuning / "trials.csv", dtype={"trial_id": str})
    assert trials.trial_id.tolist() == ["0", "1"] and (trials.status == "completed").all()
    starts = {t: read_json(tuning / "coarse" / f"trial_{t}" / "meta.json")["starts"] for t in trials.trial_id}
    assert starts == {"0": 1, "1": 2}  # the completed trial is not run again; the killed one is run to its end


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_search_both_stages_and_the_chief_retrains(
    tmp_path, tiny_paper_card, digits_card, project_env
):
    search = {**CALM, "coarse": {"trials": 4, "epochs": 1}, "fine": {"trials": 2, "epochs": 1}}
    paper = tiny_paper_card(tmp_path / "cards", **{**TINY, "search": search})
    distributed = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    processes = [  # -v: the messages --quiet hides say who retrained (--quiet keeps Keras' output short)
        tune_process(project_env, paper, digits_card, "-v", extra_env={**distributed, "KERASTUNER_TUNER_ID": name})
        for name in ("chief", "tuner1", "tuner2")
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], "\n\n".join(outputs)
    root = project_env.runs / "tiny__digits"
    trials = pd.read_csv(root / "tuning" / "trials.csv", dtype={"trial_id": str})
    assert trials[trials.stage == "coarse"].trial_id.tolist() == ["0", "1", "2", "3"]
    assert trials[trials.stage == "fine"].trial_id.tolist() == ["0", "1"]
    assert (trials.status == "completed").all() and set(trials.worker) == {"tuner1", "tuner2"}
    assert all((root / "tuned" / name).exists() for name in ARTIFACTS)  # retrained once, by the chief
    assert "test accuracy: tuned" in outputs[0] and "[tuned]" not in outputs[1] + outputs[2]
    assert all("no trials left" in output for output in outputs[1:])


def test_macro_f1_on_val_is_an_objective_every_trial_records(tmp_path, tiny_paper_card, digits_card):
    config = load_config(
        str(tiny_paper_card(tmp_path / "cards", **TINY, search={**CALM, "objective": "val_macro_f1"})), str(digits_card)
    )
    search, _ = check_search(config)
    assert search.objective == "val_macro_f1"
