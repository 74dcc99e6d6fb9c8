"""Training monitors: the update/weight ratio callback and the end-of-training diagnosis."""

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_paper_card
from sklearn.datasets import load_digits

from project.train.monitors import RATIO_HIGH, RATIO_LOW, UpdateRatio, diagnose, ratio_summary


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), keras.utils.to_categorical(data.target, 10).astype("float32")


def fit_with_ratio(digits, optimizer, tmp_path, epochs=2, peak_lr=None):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    monitor = UpdateRatio(peak_lr=peak_lr)
    log = tmp_path / "history.csv"
    history = model.fit(
        x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[monitor, keras.callbacks.CSVLogger(str(log))]
    )
    return monitor, history, pd.read_csv(log)


def test_update_ratio_is_quiet_at_a_sensible_learning_rate(digits, tmp_path, capsys):
    monitor, history, csv = fit_with_ratio(digits, keras.optimizers.Adam(1e-3), tmp_path)
    assert monitor.summary()["status"] == "PASS" and not monitor.warnings
    assert "WARN" not in capsys.readouterr().err
    ratios = history.history["update_ratio"]
    assert len(ratios) == 2 and all(RATIO_LOW < r < RATIO_HIGH for r in ratios)
    assert csv["update_ratio"].tolist() == pytest.approx(ratios)  # the CSV history carries it
    # a constant rate is its own peak: the judged ratio is the measured one
    assert csv["update_ratio_at_peak_lr"].tolist() == pytest.approx(ratios)


def cosine(rate, epochs, steps=29):  # 1,797 digits in batches of 64
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, epochs * steps))


def test_a_schedule_s_tail_is_judged_at_the_peak_rate_and_raises_no_warning(digits, tmp_path, capsys):
    decaying = keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 29, 0.05))  # / 20 an epoch
    monitor, history, csv = fit_with_ratio(digits, decaying, tmp_path, epochs=4, peak_lr=1e-3)
    measured, judged = csv["update_ratio"], csv["update_ratio_at_peak_lr"]
    assert measured.iloc[-1] < RATIO_LOW < judged.iloc[-1] < RATIO_HIGH  # near 0 by design at the end
    assert measured.iloc[-1] < measured.iloc[0] / 1000 and judged.iloc[-1] > judged.iloc[0] / 20
    assert monitor.summary()["status"] == "PASS" and "WARN" not in capsys.readouterr().err


@pytest.mark.parametrize("rate, advice", [(1e-6, "raise the learning rate"), (1e3, "lower the learning rate")])
def test_a_cosine_schedule_100x_off_still_warns(digits, tmp_path, capsys, rate, advice):
    optimizer = cosine(rate, 2) if rate < 1 else keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(rate, 58))
    monitor, _, _ = fit_with_ratio(digits, optimizer, tmp_path, peak_lr=rate)
    assert monitor.summary()["status"] == "WARN" and advice in capsys.readouterr().err


def test_update_ratio_warns_to_raise_a_tiny_learning_rate(digits, tmp_path, capsys):
    monitor, history, _ = fit_with_ratio(digits, keras.optimizers.SGD(1e-9), tmp_path)
    summary = monitor.summary()
    assert summary["status"] == "WARN" and summary["median"] < RATIO_LOW
    assert "raise the learning rate" in summary["advice"]
    out = capsys.readouterr().err
    assert out.count("WARN") == 1 and "raise the learning rate" in out  # once per fit, not every epoch


def test_update_ratio_warns_to_lower_a_huge_learning_rate(digits, tmp_path, capsys):
    monitor, _, _ = fit_with_ratio(digits, keras.optimizers.SGD(1e3), tmp_path)
    summary = monitor.summary()
    assert summary["status"] == "WARN" and summary["median"] > RATIO_HIGH
    assert "lower the learning rate" in capsys.readouterr().err


def test_ratio_summary_of_a_history_column():
    assert ratio_summary(pd.Series([1e-3, 2e-3, np.nan]))["status"] == "PASS"
    assert ratio_summary([1e-3, math.inf])["status"] == "WARN"  # weights blew up in one epoch
    assert ratio_summary([])["status"] == "n/a"


# ---------------------------------------------------------------- diagnosis


def history(loss, accuracy, val_loss=None, val_accuracy=None, **extra):
    table = {"loss": loss, "accuracy": accuracy, **extra}
    if val_loss is not None:
        table.update(val_loss=val_loss, val_accuracy=val_accuracy)
    return pd.DataFrame(table)


def problems(result):
    return [f["problem"] for f in result["findings"]]


def test_diagnosis_overfitting():
    h = history(
        loss=[1.5, 0.6, 0.2, 0.05, 0.02, 0.01],
        accuracy=[0.5, 0.8, 0.95, 0.99, 1.0, 1.0],
        val_loss=[1.4, 0.9, 0.8, 0.9, 1.1, 1.3],
        val_accuracy=[0.55, 0.7, 0.74, 0.74, 0.73, 0.72],
    )
    result = diagnose(h, target=0.9)
    assert problems(result) == ["overfitting"]
    assert "val_loss rose" in result["findings"][0]["evidence"] and "augmentation" in result["findings"][0]["advice"]


def test_diagnosis_learning_rate_too_low():
    h = history(
        loss=[2.302, 2.301, 2.300, 2.299, 2.298],
        accuracy=[0.10, 0.11, 0.11, 0.12, 0.12],
        val_loss=[2.302, 2.301, 2.300, 2.299, 2.298],
        val_accuracy=[0.10, 0.11, 0.11, 0.11, 0.12],
        update_ratio_at_peak_lr=[2e-7, 2e-7, 2e-7, 2e-7, 2e-7],
    )
    result = diagnose(h, target=0.9)
    assert problems(result) == ["learning rate too low"]
    assert (
        "raise the learning rate" in result["findings"][0]["advice"]
        and "update/weight ratio" in result["findings"][0]["evidence"]
    )


def test_diagnosis_learning_rate_too_high():
    exploding = history(loss=[2.3, 1.9, 3.5, 9.0, float("nan")], accuracy=[0.2, 0.3, 0.2, 0.1, 0.1])
    assert problems(diagnose(exploding)) == ["learning rate too high"]
    climbing = history(
        loss=[2.3, 1.2, 2.6, 4.0],
        accuracy=[0.2, 0.6, 0.3, 0.1],
        val_loss=[2.3, 1.3, 2.7, 4.1],
        val_accuracy=[0.2, 0.55, 0.3, 0.1],
    )
    assert problems(diagnose(climbing)) == ["learning rate too high"]


def test_diagnosis_too_little_capacity():
    h = history(
        loss=[2.0, 1.6, 1.4, 1.3, 1.25, 1.22],
        accuracy=[0.3, 0.45, 0.52, 0.55, 0.57, 0.58],
        val_loss=[1.9, 1.6, 1.45, 1.35, 1.3, 1.27],
        val_accuracy=[0.32, 0.44, 0.5, 0.54, 0.56, 0.57],
    )
    result = diagnose(h, target=0.9, frozen_layers=100)
    assert problems(result) == ["too little capacity"]
    assert "unfreeze" in result["findings"][0]["advice"]
    scratch = diagnose(h, target=0.9, frozen_layers=0)  # a from-scratch CNN has nothing to unfreeze
    assert problems(scratch) == ["too little capacity"]
    assert "unfreeze" not in scratch["findings"][0]["advice"] and "add capacity" in scratch["findings"][0]["advice"]


def test_no_capacity_finding_when_only_the_augmented_training_accuracy_is_low():
    # the demo's shape: augmentation and dropout keep train accuracy below a val accuracy at the target
    h = history(
        loss=[1.7, 0.9, 0.5, 0.33, 0.30, 0.24],
        accuracy=[0.42, 0.70, 0.83, 0.89, 0.91, 0.92],
        val_loss=[1.1, 0.6, 0.3, 0.15, 0.10, 0.09],
        val_accuracy=[0.60, 0.80, 0.90, 0.95, 0.97, 0.97],
    )
    assert diagnose(h, target=0.97)["status"] == "ok"


def test_diagnosis_healthy():
    h = history(
        loss=[1.0, 0.4, 0.2, 0.1],
        accuracy=[0.7, 0.9, 0.95, 0.97],
        val_loss=[0.8, 0.35, 0.25, 0.2],
        val_accuracy=[0.75, 0.9, 0.93, 0.94],
        update_ratio_at_peak_lr=[3e-3, 2e-3, 1e-3, 8e-4],
    )
    result = diagnose(h, target=0.95)
    assert result["status"] == "ok" and result["findings"] == []


# ---------------------------------------------------------------- a training run carries both


def test_train_run_logs_the_ratio_and_writes_the_diagnosis(tmp_path):
    from project.config.cards import load_config
    from project.train.training import train_run

    path = write_tiny_paper_card(
        tmp_path,
        seed=42,
        model={"head": {"pooling": "flatten"}},
        training={"learning_rate": 0.003, "batch_size": 64, "stages": [{"name": "train", "epochs": 2}]},
    )
    root = tmp_path / "runs" / "tiny__digits"
    train_run(load_config(str(path), "digits"), root, verbose=0)
    table = pd.read_csv(root / "baseline" / "history.csv")
    assert table["update_ratio"].notna().all() and table["update_ratio_at_peak_lr"].notna().all() and len(table) == 2
    metrics = json.loads((root / "baseline" / "metrics.json").read_text())
    assert metrics["update_ratio"]["epochs"] == 2 and metrics["update_ratio"]["status"] in ("PASS", "WARN")
    assert metrics["diagnosis"]["status"] in ("ok", "problems") and metrics["diagnosis"]["summary"]
