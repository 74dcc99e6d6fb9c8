"""Tuner trials that reuse one compiled model (project.tune.reuse) train exactly as a fresh process would."""

import json
from pathlib import Path

import keras_tuner
import pytest
from conftest import DIGITS_DATASET, write_card, write_tiny_paper_card

# one stage, so trials can share a compiled model; every knob the reuse sets is in play
CARD = {
    "augmentation": [{"name": "Affine", "rotate": [-10, 10], "p": 0.8}],
    "model.head.dropout": 0.2,
    "training.schedule": "cosine",
    "training.stages.0.epochs": 2,
}
FIRST = {"learning_rate": 0.02, "weight_decay": 0.001, "dropout": 0.4, "label_smoothing": 0.1, "batch_size": 32}
SECOND = {"learning_rate": 0.005, "weight_decay": 0.0001, "dropout": 0.1, "label_smoothing": 0.0, "batch_size": 16}


def run_trials(folder, trials):
    """Each {hyperparameter: value} as a trial of its own CardHyperModel (a stage of fixed values), the
    hypermodels sharing one model cache as a search's stages do, in order; returns
    [(reused, history.csv text)] per trial."""
    from project.config.cards import load_config
    from project.data.prepare import prepare
    from project.train.runtime import set_determinism
    from project.tune.hypermodel import CardHyperModel, FitClock
    from project.tune.reuse import ModelCache

    set_determinism(True)  # as tune() sets it from the card; the numbers depend on it
    folder = Path(folder)
    paper = write_tiny_paper_card(folder, **CARD)
    config = load_config(str(paper), str(write_card(folder / "digits.yaml", DIGITS_DATASET)))
    data, cache, objective = prepare(config, folder / "run"), ModelCache(), keras_tuner.Objective("val_accuracy", "max")
    out = []
    for k, values in enumerate(trials):
        space = {name: {"type": "fixed", "value": value} for name, value in values.items()}
        hypermodel = CardHyperModel(config, data, objective, space=space, epochs=2, cache=cache)
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        model = hypermodel.build(hp)
        reused = model.compiled  # what StageTuner.run_trial records
        hypermodel.fit(hp, model, folder=folder / f"trial{k}", clock=FitClock(), verbose=0)
        out.append((reused, (folder / f"trial{k}" / "logs" / "history_train.csv").read_text()))
    return out


def run_alone(project_env, folder, trial):
    """run_trials of one trial in a fresh Python process: (reused, history text)."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_reuse import run_trials\n"
        f"print('RESULT ' + json.dumps(run_trials({str(folder)!r}, [{trial!r}])))\n"
    )
    result = project_env.python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    [found] = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return found


def test_a_reused_trial_trains_exactly_as_in_a_fresh_process(tmp_path, project_env):
    (first_reused, _), (second_reused, second) = run_trials(tmp_path / "together", [FIRST, SECOND])
    assert not first_reused and second_reused  # the second trial took the first one's compiled model
    alone_reused, alone = run_alone(project_env, tmp_path / "alone", SECOND)
    assert not alone_reused
    assert second == alone  # every epoch's loss, accuracy, val figures and update ratio, to the last digit


@pytest.mark.slow
def test_another_architecture_or_optimizer_builds_its_own_model(tmp_path):
    runs = run_trials(tmp_path, [FIRST, {**FIRST, "optimizer": "nesterov"}, SECOND, {**FIRST, "head_units": 16}])
    assert [reused for reused, _ in runs] == [False, False, True, False]
