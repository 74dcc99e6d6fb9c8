"""Calibration (ECE, temperature scaling) and the search figures (parallel coordinates, importance),
on hand-made numbers whose answers are known."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from project import figures
from project.report.calibration import calibrate, fit_temperature, reliability, with_temperature
from project.report.search_insight import axis_values, importance, insight_blocks


def test_ece_of_hand_made_probabilities():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): two bins, each 0.4 off, half the images each
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    bins = reliability(probabilities, labels)
    assert bins["ece"] == pytest.approx(0.4)
    assert bins["count"].sum() == 4 and bins["count"][13] == 2 and bins["count"][8] == 2
    assert bins["accuracy"][13] == pytest.approx(0.5) and bins["confidence"][8] == pytest.approx(0.6)


def test_a_perfectly_calibrated_model_has_an_ece_near_zero():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    correct = rng.uniform(size=confidence.size) < confidence
    probabilities = np.column_stack([confidence, 1 - confidence])
    labels = np.where(correct, 0, 1)
    assert reliability(probabilities, labels)["ece"] < 0.005


def _overconfident(temperature, n=20_000, classes=5, seed=0):
    """Logits whose model is sure, and labels drawn as if the truth were softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    truth = np.exp(logits / temperature)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    model = np.exp(logits - logits.max(axis=1, keepdims=True))
    return model / model.sum(axis=1, keepdims=True), labels


def test_temperature_fitted_on_val_recovers_the_truth_and_keeps_every_prediction():
    val = _overconfident(2.0, seed=1)
    test = _overconfident(2.0, seed=2)
    t = fit_temperature(*val)
    assert t == pytest.approx(2.0, abs=0.1)
    scaled = with_temperature(test[0], t)
    assert np.array_equal(scaled.argmax(axis=1), test[0].argmax(axis=1))
    result = calibrate(test, val)
    assert result["temperature"] == t and result["ece_scaled"] < result["ece"] / 3


def test_without_val_predictions_there_is_no_temperature():
    result = calibrate(_overconfident(2.0, n=500), None)
    assert result["temperature"] is None and result["ece_scaled"] is None and result["ece"] > 0


def test_axis_values_log_and_choices():
    placed, ticks = axis_values(
        [1e-4, 1e-3, 1e-2, None], {"min": 1e-4, "max": 1e-2, "sampling": "log", "choices": None}
    )
    assert np.allclose(placed[:3], [0.0, 0.5, 1.0]) and np.isnan(placed[3])
    assert set(ticks) == {0.0, 1.0}
    placed, ticks = axis_values([32, 128, 64], {"choices": [32, 64, 128]})
    assert np.allclose(placed, [0.0, 1.0, 0.5]) and ticks[0.5] == "64"


SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-1, "sampling": "log", "choices": None},
    "dropout": {"min": 0.0, "max": 0.5, "sampling": "linear", "choices": None},
}


def _view(n=12, seed=0):
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -1, n)
    return pd.DataFrame(
        {
            "trial": [f"{i:02d}" for i in range(n)],
            "stage": "coarse",
            "objective": 0.5 + 0.1 * np.log10(lr),  # only the learning rate matters
            "failed": False,
            "learning_rate": lr,
            "dropout": rng.uniform(0, 0.5, n),
        }
    )


def test_importance_finds_the_one_hyperparameter_that_matters():
    scores = importance(_view(), SPACE).set_index("hyperparameter")
    assert scores.loc["learning_rate", "spearman"] == pytest.approx(1.0)
    assert scores.loc["learning_rate", "forest"] > 0.8 > scores.loc["dropout", "forest"]
    assert abs(scores.loc["dropout", "spearman"]) < 0.8


def test_importance_needs_enough_completed_trials():
    view = _view(n=5)
    view.loc[:1, "failed"] = True
    view.loc[:1, "objective"] = np.nan
    assert importance(view, SPACE) is None


def test_search_figures_are_pngs_with_failed_trials_drawn(tmp_path):
    view = _view()
    view.loc[3, ["failed", "objective"]] = [True, np.nan]
    figs = {}
    blocks = insight_blocks(view, SPACE, "val_accuracy", figs)
    assert set(figs) == {"trials_parallel.png", "trials_importance.png"}
    assert any(b["type"] == "table" for b in blocks)
    for name, data in figs.items():
        (tmp_path / name).write_bytes(data)
        with Image.open(tmp_path / name) as image:
            image.verify()
    # the same trials give the same bytes: the report diffs cleanly
    again = {}
    insight_blocks(view, SPACE, "val_accuracy", again)
    assert again == figs


def test_reliability_figure_is_deterministic():
    bins = reliability(*_overconfident(2.0, n=300))
    one = figures.reliability([("before", bins, bins["ece"])])
    assert one == figures.reliability([("before", bins, bins["ece"])]) and one[:4] == b"\x89PNG"
