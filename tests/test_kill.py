"""kill -9 anywhere, the same result (issue 15 section 3): a run killed at any named point
(project.faults) or at moments a seeded generator picks, and rerun until done, ends with the
predictions, metrics, history and trials of a run never interrupted; no JSON or CSV of ours is ever
half-written; COMPLETE marks only complete runs; a search copes with Keras Tuner files cut short.

tests/test_resume.py has the first resume tests (a kill inside an epoch, atomic_write killed)."""

import json
import random
import shutil
import signal
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import DIGITS_DATASET, TINY_SEARCH, ProjectEnv, write_card, write_tiny_paper_card
from test_determinism import AFFINE, without_timing

from project.records import Metrics

# ------------------------------------------------------------------ a stage resumed in one process

# Learning rate 1e-7: val_loss moves by ~1e-6 an epoch, never by ReduceLROnPlateau's min_delta
# (1e-4) nor early stopping's (0.001), so both count every epoch after the first as no improvement:
# the rate halves at each epoch end from the second on, and early stopping ends the stage after epoch 4
# of 8. The training loss still depends on every dropout draw (rate 0.5).
STAGE = {
    "model.head.dropout": 0.5,
    "training.learning_rate": 1e-7,
    "training.schedule": "plateau",
    "training.decay": 0.5,
    "training.plateau_patience": 1,
    "training.early_stopping": {"monitor": "val_loss", "patience": 3, "min_delta": 0.001},
    "training.stages": [{"name": "main", "epochs": 8, "unfreeze": "all"}],
    "runtime": {"backup_seconds": 0},
}


class Interrupt(keras.callbacks.Callback):
    """A KeyboardInterrupt inside epoch 3 (0-based 2), at its third batch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 2:
            raise KeyboardInterrupt


class InterruptAtTheEnd(keras.callbacks.Callback):
    """A KeyboardInterrupt after epoch 4, where early stopping ends the stage: its resume state is
    written (callbacks before this one), Keras' on_train_end never comes."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 3:
            raise KeyboardInterrupt


class Rates(keras.callbacks.Callback):
    """The learning rate after each epoch, as ReduceLROnPlateau left it."""

    def __init__(self, rates):
        super().__init__()
        self.rates = rates

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


@pytest.fixture(scope="module")
def stage_setup(tmp_path_factory):
    from sklearn.datasets import load_digits

    from project.config.cards import load_config
    from project.data.prepare import prepare
    from project.train.runtime import set_determinism

    folder = tmp_path_factory.mktemp("stage")
    digits = load_digits()
    np.savez(folder / "digits400.npz", x=(digits.images[:400] * 255 / 16).astype(np.uint8), y=digits.target[:400])
    (folder / "digits400.yaml").write_text(
        "adapter: npz\noptions: {path: digits400.npz}\nsplit: {val: 0.25, test: 0.2}\n"
    )
    config = load_config(str(write_tiny_paper_card(folder, "stage", **STAGE)), str(folder / "digits400.yaml"))
    set_determinism(True)
    return config, prepare(config, folder)


def fit(stage_setup, folder, rates, *extra):
    """fit_stages on a model built as a new process builds it (the card's seed first)."""
    from project.model.classifier import build_model
    from project.train.training import fit_stages, training_stats

    config, data = stage_setup
    keras.utils.set_random_seed(config.paper.seed)
    stats = training_stats(data, config.paper)
    model = build_model(config.paper.model, data.num_classes, stats, l2=config.paper.training.l2)[0]
    fit_stages(model, config.paper, data, folder, extra_callbacks=[Rates(rates), *extra], verbose=0)
    return model


def resumed(stage_setup, killed, folder, rates, change=None):
    """A copy of the killed run, its resume state changed by `change(metadata path)`, trained to its end."""
    shutil.copytree(killed, folder)
    if change is not None:
        change(folder / "backup" / "main" / "training_metadata.json")
    model = fit(stage_setup, folder, rates)
    return (folder / "logs" / "history_main.csv").read_text(), model


def without(key):
    def change(path):
        state = json.loads(path.read_text())
        state.pop(key)
        path.write_text(json.dumps(state))

    return change


def test_a_stage_resumed_mid_epoch_trains_as_if_never_interrupted(stage_setup, tmp_path, capsys):
    """Killed inside epoch 3 and resumed in a new model: the same epochs, losses, learning rates
    (ReduceLROnPlateau's reductions and counters), early stopping epoch and final weights. Without
    the counters, or without the dropout seed generators' states, the resumed run differs: both
    are needed, and this test would see either missing."""
    rates = []
    model = fit(stage_setup, tmp_path / "whole", rates)
    whole = (tmp_path / "whole" / "logs" / "history_main.csv").read_text()
    history = pd.read_csv(tmp_path / "whole" / "logs" / "history_main.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3], "early stopping ends the stage after its 4th epoch"
    assert rates == [pytest.approx(1e-7 * 0.5**k, rel=1e-6) for k in (0, 1, 2, 3)], "the rate halves from epoch 2"

    killed_rates = []
    with pytest.raises(KeyboardInterrupt):
        fit(stage_setup, tmp_path / "killed", killed_rates, Interrupt())
    assert killed_rates == rates[:2]
    metadata = json.loads((tmp_path / "killed" / "backup" / "main" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2 and metadata["counters"]["plateau"]["wait"] == 0
    assert metadata["counters"]["early_stopping"]["wait"] == 1 and metadata["seed_states"]

    again = []
    log, resumed_model = resumed(stage_setup, tmp_path / "killed", tmp_path / "resumed", again)
    assert log == whole and again == rates[2:]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), resumed_model.get_weights(), strict=True))

    # the latest state cut in half (Keras' own writer could leave that): the state before it, same numbers
    def cut(path):
        path.write_text(path.read_text()[:20])

    capsys.readouterr()
    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "cut", [], cut)
    assert log == whole
    warnings = capsys.readouterr().err
    assert "training_metadata.json cannot be read (JSONDecodeError" in warnings
    assert "[main] resuming from the state before the latest (epoch 1)" in warnings

    def lose_weights(path):  # the weights the latest state names are gone
        (path.parent / json.loads(path.read_text())["weights"]).unlink()

    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "lost", [], lose_weights)
    assert log == whole
    warnings = capsys.readouterr().err
    assert "training_metadata.json names epoch-2.weights.h5, which is missing: not resumed from it" in warnings

    def lose_best(path):  # the best weights so far, which the checkpoint file is written from at the end
        (path.parent / json.loads(path.read_text())["best_weights"]).unlink()

    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "lost-best", [], lose_best)
    assert log == whole
    assert "training_metadata.json names epoch-2.best.npz, which is missing: not resumed from it" in (
        capsys.readouterr().err
    )
    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "older", [], without("best_weights"))
    assert log == whole
    assert "training_metadata.json cannot be read (KeyError: 'best_weights')" in capsys.readouterr().err

    # killed once early stopping had ended the stage, before Keras deleted the state: nothing more trains
    with pytest.raises(KeyboardInterrupt):
        fit(stage_setup, tmp_path / "stopped", [], InterruptAtTheEnd())
    assert json.loads((tmp_path / "stopped" / "backup" / "main" / "training_metadata.json").read_text())["stopped"]
    log, _ = resumed(stage_setup, tmp_path / "stopped", tmp_path / "stopped-resumed", [])
    assert log == whole
    assert json.loads((tmp_path / "stopped-resumed" / "checkpoints" / "main.done.json").read_text())["epochs"] == 4

    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "no-counters", [], without("counters"))
    assert len(pd.read_csv(tmp_path / "no-counters" / "logs" / "history_main.csv")) == 6, "patience starts over"
    log, _ = resumed(stage_setup, tmp_path / "killed", tmp_path / "no-seeds", [], without("seed_states"))
    changed = pd.read_csv(tmp_path / "no-seeds" / "logs" / "history_main.csv")
    assert len(changed) == 4 and (changed["loss"].iloc[2:] != history["loss"].iloc[2:]).all(), "other dropout draws"


# ------------------------------------------------------------------ Keras Tuner's files cut short

COMPARED = ["trial_id", "learning_rate", "best_val_accuracy", "last_val_accuracy", "epochs_run", "status"]


def trials_of(root):
    """trials.csv of the search in `root` (a runs/<paper>__<dataset> folder)."""
    return pd.read_csv(root / "tuning" / "trials.csv", dtype={"trial_id": str})


def cut_in_half(path):
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def test_a_search_copes_with_a_cut_trial_json_and_oracle_json(tmp_path, digits_card, capsys):
    """An oracle.json that lists an ended trial as running (a kill between its two saves): the trial
    is not run again. A half-written trial.json: the trial runs again with the values our meta.json
    kept; a half-written oracle.json: rebuilt, its random state replayed; a cut trial.json of a trial
    that never started: set aside and drawn again. One warning line each, no traceback; every trial
    once in trials.csv, with an uninterrupted search's values and scores."""
    from project.config.cards import load_config
    from project.tune.tuning import tune

    search = {**TINY_SEARCH, "coarse": {"trials": 3, "epochs": 1}}
    config = load_config(str(write_tiny_paper_card(tmp_path / "cards", search=search)), str(digits_card))
    tune(config, tmp_path / "whole", stage="coarse", verbose=0)
    whole = trials_of(tmp_path / "whole")[COMPARED]
    assert whole.trial_id.tolist() == ["0", "1", "2"] and whole.learning_rate.nunique() == 3

    root = tmp_path / "cut"
    coarse = root / "tuning" / "coarse"

    def starts():
        return {t: json.loads((coarse / f"trial_{t}" / "meta.json").read_text())["starts"] for t in "012"}

    tune(config, root, stage="coarse", trials=2, verbose=0)
    oracle = json.loads((coarse / "oracle.json").read_text())
    (coarse / "oracle.json").write_text(json.dumps({**oracle, "ongoing_trials": {"tuner0": "1"}}))
    tune(config, root, stage="coarse", verbose=0)
    assert starts() == {"0": 1, "1": 1, "2": 1}, "trial 1 ended: listed as running, it does not run again"
    pd.testing.assert_frame_equal(trials_of(root)[COMPARED], whole)

    cut_in_half(coarse / "trial_1" / "trial.json")
    cut_in_half(coarse / "oracle.json")
    capsys.readouterr()
    tune(config, root, stage="coarse", verbose=0)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warnings == [
        f"{coarse / 'oracle.json'} cannot be read (JSONDecodeError): rebuilt from the trials",
        f"{coarse / 'trial_1' / 'trial.json'} cannot be read (JSONDecodeError): trial 1 runs again with its "
        f"values from meta.json",
    ]
    assert starts() == {"0": 1, "1": 2, "2": 1}, "only the trial whose trial.json was cut ran again"
    pd.testing.assert_frame_equal(trials_of(root)[COMPARED], whole)

    cut_in_half(coarse / "trial_2" / "trial.json")
    (coarse / "trial_2" / "meta.json").unlink()  # as if killed before the trial started
    tune(config, root, stage="coarse", verbose=0)
    warnings = capsys.readouterr().err
    assert "cannot be read (JSONDecodeError) and the trial never started: set aside as trial.json.broken" in warnings
    assert "Traceback" not in warnings and (coarse / "trial_2" / "trial.json.broken").exists()
    pd.testing.assert_frame_equal(trials_of(root)[COMPARED], whole)


# ------------------------------------------------------------------ commands killed with SIGKILL

# The tiny card with what a resumed run must restore: two stages (a finished one is skipped),
# dropout, augmentation, ReduceLROnPlateau and early stopping, and a resume state every epoch
# (backup_seconds 0, else a kill loses the whole stage: the same numbers, slower). Two coarse
# trials: the second one's creation can be cut between its two writes. One finalist.
KILL_CARD = {
    "augmentation": AFFINE,
    "search": {**TINY_SEARCH, "coarse": {"trials": 2, "epochs": 1}, "finalists": 1},
    "runtime": {"backup_seconds": 0},
    "model.head.dropout": 0.3,
    "training.schedule": "plateau",
    "training.plateau_patience": 1,
    "training.decay": 0.5,
    "training.early_stopping": {"monitor": "val_accuracy", "patience": 2},
    "training.stages": [{"name": "warm", "epochs": 1, "unfreeze": 0}, {"name": "main", "epochs": 2, "unfreeze": "all"}],
}
RUN = "kill__digits"
ARTIFACTS = ["model.keras", "history.csv", "predictions.csv", "metrics.json", "config.resolved.yaml"]
TRIALS = ["stage", *COMPARED, "seed"]


class Commands:
    """`python -m project <command>` on the kill card, with runs/ and reports/ under `root`."""

    def __init__(self, env, cards, root):
        self.env, self.cards, self.root = env, cards, Path(root)
        self.runs = self.root / "runs" / RUN

    def run(self, command, kill=None, trace=None):
        args = [command, "--paper", self.cards[0], "--dataset", self.cards[1], "--runs-dir", self.root / "runs"]
        args += ["--reports-dir", self.root / "reports"] if command == "report" else []
        env = {"PROJECT_KILL_AT": kill or "", "PROJECT_KILL_TRACE": str(trace or "")}
        return self.env.run(*args, "--quiet", env=env, timeout=900)

    def killed(self, command, point):
        """`command` killed at `point`; then every file of ours is whole."""
        result = self.run(command, kill=point)
        assert result.returncode == -signal.SIGKILL, (
            f"{command} was not killed at {point} (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
        assert f"PROJECT_KILL_AT: SIGKILL at {point.split(':')[0].replace('*', '')}" in result.stderr
        whole_files(self.root)

    def done(self, command):
        result = self.run(command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
        whole_files(self.root)


def whole_files(root):
    """Every JSON parses and every CSV reads with pandas (a CSVLogger file no epoch has ended in yet
    is empty); COMPLETE only beside a complete run."""
    for path in root.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            pytest.fail(f"{path} is half-written")
    for path in root.rglob("*.csv"):
        if not (path.parent.name == "logs" and path.stat().st_size == 0):
            pd.read_csv(path)
    for marker in root.rglob("COMPLETE"):
        missing = [name for name in ARTIFACTS if not (marker.parent / name).exists()]
        assert not missing, f"{marker} beside a run without {missing}"
        Metrics.read(marker.parent / "metrics.json")


def same_runs(reference, runs, names):
    """Each run's predictions and history byte for byte, its metrics.json less its timing fields."""
    for name in names:
        for file in ("predictions.csv", "history.csv"):
            assert (runs / name / file).read_bytes() == (reference / name / file).read_bytes(), f"{name}/{file}"
        metrics = [without_timing(json.loads((r / name / "metrics.json").read_text())) for r in (reference, runs)]
        assert metrics[1] == metrics[0], f"{name}/metrics.json"


@pytest.fixture(scope="module")
def kill_cards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cards")
    return (
        str(write_tiny_paper_card(folder, "kill", **KILL_CARD)),
        str(write_card(folder / "digits.yaml", DIGITS_DATASET)),
    )


@pytest.fixture(scope="module")
def reference(kill_cards, tmp_path_factory):
    """An uninterrupted train, and the named points it reached, in order."""
    root = tmp_path_factory.mktemp("reference")
    commands = Commands(ProjectEnv(root), kill_cards, root)
    result = commands.run("train", trace=root / "train.trace")
    assert result.returncode == 0, result.stderr[-3000:]
    return commands


def test_train_killed_inside_an_epoch_then_in_the_resume_state_write_ends_as_if_never_killed(
    reference, kill_cards, tmp_path
):
    """The short variant: killed inside main's second epoch (main's first is in its resume state),
    rerun and killed in the resume state's commit (its weights written, its metadata not), rerun to
    the end: the same predictions, history and metrics as the uninterrupted run."""
    commands = Commands(ProjectEnv(tmp_path), kill_cards, tmp_path)
    steps = 37  # batches of an epoch: 1,168 training images by 32
    commands.killed("train", f"fit.batch:{2 * steps + 5}")
    assert (
        json.loads((commands.runs / "baseline" / "backup" / "main" / "training_metadata.json").read_text())["epoch"]
        == 1
    ), "the kill was meant to land after main's first epoch was saved"
    commands.killed("train", "write.training_metadata.json:1")
    assert not (commands.runs / "baseline" / "COMPLETE").exists()
    commands.done("train")
    same_runs(reference.runs, commands.runs, ["baseline"])


# Each rerun reaches the next point (its own count of hits): the run resumes past the points before.
TRAIN_POINTS = [
    "fit.batch:20",  # inside warm's only epoch, nothing saved yet
    "resume.weights:1",  # warm's resume state: its weights in their temporary file
    "resume.best:1",  # ... its best weights so far
    "write.training_metadata.json:1",  # ... its commit
    "checkpoint.weights:1",  # warm ended: its best weights in their temporary file
    "write.warm.done.json:1",  # warm trained, not yet marked done
    "fit.batch:42",  # inside main's second epoch, its first in the resume state
    "write.main.done.json:1",  # main trained: the dropout seeds a later stage starts from go with it
    "write.metrics.json:1",
    "write.COMPLETE:1",
]
TUNE_POINTS = [
    "trial.batch:10",  # inside the first trial
    "write.trial.json:1",  # the first trial's trial.json in its temporary file
    "write.oracle.json:4",  # the second trial's trial.json written, oracle.json not: Keras Tuner would lose it
    "trial.end:1",  # between two trials
    "write.fine_space.json:1",
    "write.trial.json:3",  # the fine trial ended, its trial.json not saved: it runs again, to the same score
    "write.trials.csv:1",
    "fit.batch:42",  # the tuned retrain (the finalist), inside an epoch
    "write.summary.json:2",  # the final round's result
    "write.best_hyperparameters.json:1",  # tuned/ being installed
    "write.COMPLETE:1",  # ... its marker
]
REPORT_POINTS = ["write.report.md:1", "write.comparison.json:1"]


@pytest.fixture(scope="module")
def searched(reference):
    """The reference runs, searched and reported without interruption."""
    for command in ("tune", "report"):
        result = reference.run(command, trace=reference.root / f"{command}.trace")
        assert result.returncode == 0, result.stderr[-3000:]
    return reference


def same_search(reference, runs):
    """Every trial once, with the uninterrupted search's values and scores; the same summary, and
    the same finalist and tuned runs."""
    trials = trials_of(runs)
    assert not trials.duplicated(["stage", "trial_id"]).any()
    pd.testing.assert_frame_equal(trials[TRIALS], trials_of(reference)[TRIALS])
    summaries = [json.loads((r / "tuning" / "summary.json").read_text()) for r in (reference, runs)]
    assert [{**s, "trial_seconds": None} for s in summaries[1:]] == [{**summaries[0], "trial_seconds": None}]
    finalists = [f"finalists/{f['stage']}-{f['trial_id']}" for f in summaries[0]["finalists"]]
    same_runs(reference, runs, ["tuned", *finalists])
    assert (runs / "tuned" / "best_hyperparameters.json").read_bytes() == (
        reference / "tuned" / "best_hyperparameters.json"
    ).read_bytes()


@pytest.mark.slow
def test_train_tune_and_report_killed_at_every_named_point_end_as_if_never_killed(searched, kill_cards, tmp_path):
    commands = Commands(ProjectEnv(tmp_path), kill_cards, tmp_path)
    for command, points in (("train", TRAIN_POINTS), ("tune", TUNE_POINTS), ("report", REPORT_POINTS)):
        for point in points:
            commands.killed(command, point)
        commands.done(command)
        if command == "train":
            same_runs(searched.runs, commands.runs, ["baseline"])
    same_search(searched.runs, commands.runs)
    assert "SIGKILL" not in (tmp_path / "reports" / RUN / "report.md").read_text()


@pytest.mark.slow
def test_train_and_tune_killed_at_random_moments_end_as_if_never_killed(searched, kill_cards, tmp_path):
    """Killed at the k-th named point of any name, k drawn by a seeded generator: the first within
    the uninterrupted run's count of points, each next one within what is left of it (a rerun
    reaches at least the points after the last kill, as it resumes from before it)."""
    commands = Commands(ProjectEnv(tmp_path), kill_cards, tmp_path)
    draw, moments = random.Random(15), []
    for command, kills in (("train", 2), ("tune", 3)):
        left = len((searched.root / f"{command}.trace").read_text().splitlines())
        for _ in range(kills):
            k = draw.randint(1, left)
            moments.append(f"{command} *:{k}")
            commands.killed(command, f"*:{k}")
            left = max(1, left - k)
        commands.done(command)
    assert len(moments) >= 5, moments
    same_runs(searched.runs, commands.runs, ["baseline"])
    same_search(searched.runs, commands.runs)
