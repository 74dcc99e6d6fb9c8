"""Training end to end on tiny data: the stages freeze what they should, a run writes every artifact,
a rerun reuses a finished run, a changed configuration moves the old run aside."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_card, write_tiny_paper_card

from project.commands.cli import main
from project.config.cards import load_config
from project.config.schema import Config
from project.data.prepare import prepare
from project.model.backbones import WeightsSource
from project.model.classifier import backbone_of, build_model
from project.train.metrics import class_weights
from project.train.training import feed_of, fit_stages, make_optimizer

ARTIFACTS = ["model.keras", "history.csv", "config.resolved.yaml", "predictions.csv", "metrics.json", "COMPLETE"]


# ------------------------------------------------------------------ the smoke run: digits, 1 epoch


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`python -m project train` (in this process) with the tiny card on digits."""
    folder = tmp_path_factory.mktemp("smoke")
    card = write_tiny_paper_card(folder)
    digits = write_card(folder / "digits.yaml", {"adapter": "digits", "split": {"val": 0.15, "test": 0.2, "seed": 0}})
    args = ["train", "--paper", str(card), "--dataset", str(digits), "--runs-dir", str(folder / "runs"), "--quiet"]
    assert main(args) == 0
    root = folder / "runs" / "tiny__digits"
    return {"args": args, "root": root, "run": root / "baseline", "config": load_config(str(card), str(digits))}


def test_smoke_run_writes_every_artifact(smoke):
    run, root = smoke["run"], smoke["root"]
    for name in ARTIFACTS:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (root / "split.csv").is_file() and (root / "split.json").is_file()
    assert not (run / "split.csv").exists()  # one split per paper x dataset, not per run
    assert Config.model_validate(yaml.safe_load((run / "config.resolved.yaml").read_text())) == smoke["config"]
    history = pd.read_csv(run / "history.csv")
    assert history["stage"].tolist() == ["train"] and history["global_epoch"].tolist() == [1]
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "macro_f1", "val_macro_f1"} <= set(history.columns)


def test_smoke_metrics_agree_with_the_predictions(smoke):
    run, root = smoke["run"], smoke["root"]
    metrics = json.loads((run / "metrics.json").read_text())
    split = pd.read_csv(root / "split.csv", dtype=str)
    predictions = pd.read_csv(run / "predictions.csv", dtype={"true": str, "predicted": str})
    classes = [str(d) for d in range(10)]
    assert list(predictions.columns) == ["source", "true", "predicted", "confidence", *[f"p_{c}" for c in classes]]
    test = split[split["subset"] == "test"]
    assert predictions["source"].tolist() == test["source"].tolist()
    assert predictions["true"].tolist() == test["label"].tolist()
    probabilities = predictions[[f"p_{c}" for c in classes]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(predictions["confidence"], probabilities.max(axis=1))
    assert predictions["predicted"].tolist() == [classes[i] for i in probabilities.argmax(axis=1)]

    assert metrics["test_accuracy"] == pytest.approx(np.mean(predictions["true"] == predictions["predicted"]))
    true = predictions["true"].astype(int).to_numpy()
    loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(true)), true], 1e-7, 1)))
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-3)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["num_classes"] == 10
    assert sorted(metrics["per_class"]) == classes
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"]["3"])
    assert sum(c["support"] for c in metrics["per_class"].values()) == len(test)
    matrix = np.array(metrics["confusion_matrix"])
    assert (
        matrix.shape == (10, 10)
        and matrix.sum() == len(test)
        and np.trace(matrix) == (true == probabilities.argmax(1)).sum()
    )
    (stage,) = metrics["stages"]
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert stage["stage"] == "train" and stage["epochs"] == 1
    assert stage["params_trainable"] + stage["params_frozen"] == model.count_params()
    assert stage["params_frozen"] > 0  # BatchNormalization statistics and the mean-subtraction layer
    assert (
        metrics["weights_used"] == "random (from scratch)"
        and metrics["weights_kind"] == "random"
        and metrics["seed"] == 1
    )
    # random weights: BatchNormalization trains (gamma, beta) and tracks the data's statistics
    gamma, beta, mean, variance = backbone_of(model).get_layer("block1_norm1").get_weights()
    assert not np.allclose(gamma, 1.0) and not np.allclose(beta, 0.0)
    assert not np.allclose(mean, 0.0) and not np.allclose(variance, 1.0)
    assert metrics["wall_seconds"] > 0 and metrics["train_images_per_second"] > 0


def test_saved_model_loads_safely_and_takes_raw_images(smoke):
    run, root = smoke["run"], smoke["root"]
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 16, 16, 3)
    data = prepare(smoke["config"], root)
    images = np.concatenate([x.numpy() for x, _ in data.dataset("test", feed_of(smoke["config"].paper))])
    assert images.max() > 200  # raw 0-255 pixels go in; the model normalises them itself
    predictions = pd.read_csv(run / "predictions.csv")
    expected = predictions[[c for c in predictions.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)


def test_rerun_with_the_same_config_reuses_the_run(smoke, capsys):
    run = smoke["run"]
    stamp, before = (run / "model.keras").stat().st_mtime_ns, (run / "metrics.json").read_text()
    assert main([a for a in smoke["args"] if a != "--quiet"]) == 0  # the message is INFO: --quiet hides it
    assert "is complete for this configuration" in capsys.readouterr().out
    assert (run / "model.keras").stat().st_mtime_ns == stamp and (run / "metrics.json").read_text() == before
    assert not (smoke["root"] / "archive").exists()


def test_rerun_with_a_changed_config_moves_the_old_run_aside(smoke):
    run, root = smoke["run"], smoke["root"]
    old_metrics, split = (run / "metrics.json").read_text(), (root / "split.csv").read_text()
    assert main([*smoke["args"], "--set", "training.learning_rate=0.02"]) == 0
    (archived,) = (root / "archive").iterdir()
    assert archived.name.endswith("-baseline")
    assert (archived / "metrics.json").read_text() == old_metrics and (archived / "COMPLETE").exists()
    assert all((run / name).exists() for name in ARTIFACTS)
    assert "learning_rate: 0.02" in (run / "config.resolved.yaml").read_text()
    assert (root / "split.csv").read_text() == split  # the same test set as before


# ------------------------------------------------------------------ two stages


@pytest.fixture
def small_data(tmp_path):
    """90 images of 8x8 in 3 classes of different brightness, as an npz dataset card."""
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    images = np.clip(rng.normal(60 + 70 * labels[:, None, None, None], 20, (90, 8, 8, 3)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "small.npz", x=images, y=labels)
    return write_card(
        tmp_path / "small.yaml",
        {"adapter": "npz", "options": {"path": "small.npz"}, "split": {"val": 0.2, "test": 0.2}},
    )


def weights_of(model, name):
    return [w.copy() for w in backbone_of(model).get_layer(name).get_weights()]


@pytest.mark.parametrize(
    "weights",
    [WeightsSource("imagenet"), WeightsSource("random_fallback", "imagenet weights unavailable")],
    ids=lambda weights: weights.kind,
)
def test_two_stages_freeze_exactly_what_they_should(tmp_path, small_data, weights):
    card = write_tiny_paper_card(
        tmp_path,
        model={"input_size": 8, "scratch": {"blocks": [4, 4]}},
        training={
            "batch_size": 16,
            "stages": [
                {"name": "head", "epochs": 1, "unfreeze": 0},
                {"name": "top", "epochs": 1, "unfreeze": "block2_conv1", "learning_rate": 0.05},
            ],
        },
    )
    config = load_config(str(card), str(small_data))
    data = prepare(config, tmp_path / "run")
    model, _ = build_model(config.paper.model, data.num_classes, data.stats(config.paper.model.input_size))
    layers = ["block1_conv1", "block1_norm1", "block2_conv1", "block2_norm1"]
    start = {name: weights_of(model, name) for name in layers}
    head = model.get_layer("predictions").get_weights()[0].copy()

    # pretrained weights: BatchNormalization stays frozen (and in inference mode) when unfrozen;
    # random ones, a fallback included, train it with its layer
    stages = fit_stages(model, config.paper, data, tmp_path / "run" / "baseline", weights=weights, verbose=0)
    assert [s["stage"] for s in stages] == ["head", "top"] and [s["epochs"] for s in stages] == [1, 1]
    head_params = model.get_layer("predictions").count_params()
    assert stages[0]["params_trainable"] == head_params and stages[0]["unfrozen_layers"] == 0
    batchnorm = 0 if weights.pretrained else 2 * 4  # block2_norm1's gamma and beta
    assert stages[1]["params_trainable"] == head_params + 3 * 3 * 4 * 4 + batchnorm  # block2_conv1: no bias with BN
    assert stages[1]["unfrozen_layers"] == 4 and stages[1]["learning_rate"] == 0.05
    for stage in stages:
        assert stage["params_trainable"] + stage["params_frozen"] == model.count_params()

    end = {name: weights_of(model, name) for name in layers}
    for name in ("block1_conv1", "block1_norm1"):  # frozen throughout (BN statistics too)
        assert all(np.array_equal(a, b) for a, b in zip(start[name], end[name])), name
    unchanged = [np.array_equal(a, b) for a, b in zip(start["block2_norm1"], end["block2_norm1"])]
    assert unchanged == [weights.pretrained] * 4  # gamma, beta, moving mean and variance
    assert not np.array_equal(start["block2_conv1"][0], end["block2_conv1"][0])
    assert not np.array_equal(head, model.get_layer("predictions").get_weights()[0])

    # a finished stage is not trained again
    again = fit_stages(model, config.paper, data, tmp_path / "run" / "baseline", weights=weights, verbose=0)
    assert again == stages


class FinalWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


@pytest.mark.parametrize("reload_last", [True, False])
def test_the_best_epoch_is_reloaded_unless_a_trial_drops_the_model(tmp_path, digits_card, reload_last):
    # a high learning rate: val accuracy wanders, so the best epoch is not the last
    card = write_tiny_paper_card(
        tmp_path, **{"training.learning_rate": 1.0, "training.stages.0.epochs": 4, "runtime.backup_seconds": 0}
    )
    config = load_config(str(card), str(digits_card))
    data = prepare(config, tmp_path / "run")
    keras.utils.set_random_seed(config.paper.seed)  # both cases train the same model
    model, _ = build_model(config.paper.model, data.num_classes, data.stats(config.paper.model.input_size))
    final = FinalWeights()
    folder = tmp_path / "run" / "baseline"
    fit_stages(model, config.paper, data, folder, extra_callbacks=[final], verbose=0, trial=not reload_last)

    history = pd.read_csv(folder / "logs" / "history_train.csv")
    assert history.val_accuracy.idxmax() != len(history) - 1  # else the two cases are the same
    checkpoint = folder / "checkpoints" / "train.weights.h5"
    assert checkpoint.exists() == reload_last  # a trial's last stage writes no checkpoint
    assert (folder / "backup").exists() == reload_last  # nor any resume state
    if reload_last:
        best = keras.models.clone_model(model)
        best.load_weights(checkpoint)
        assert not all(
            np.array_equal(a, b) for a, b in zip(best.get_weights(), final.weights)
        )  # the best epoch, not the last
    expected = best.get_weights() if reload_last else final.weights
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), expected))


def test_the_optimizer_is_built_before_the_first_traced_step(tmp_path, tiny_config):
    # its variables made inside the traced step would leave functions in TF's library for good
    from project.train.training import compile_model

    stats = prepare(tiny_config, tmp_path / "run").stats(tiny_config.paper.model.input_size)
    model, _ = build_model(tiny_config.paper.model, 10, stats)
    compile_model(model, tiny_config.paper, 0.01, steps_per_epoch=10, epochs=1)
    assert model.optimizer.built and len(model.optimizer.variables) > len(model.trainable_variables)


# ------------------------------------------------------------------ optimizers and class weights


@pytest.mark.parametrize(
    "optimizer, cls",
    [
        ("sgd", "SGD"),
        ("momentum", "SGD"),
        ("nesterov", "SGD"),
        ("adam", "Adam"),
        ("adamw", "AdamW"),
        ("rmsprop", "RMSprop"),
    ],
)
def test_optimizers(tiny_config, optimizer, cls):
    t = tiny_config.paper.training.model_copy(update={"optimizer": optimizer, "weight_decay": 0.001})
    built = make_optimizer(t, 0.1, steps_per_epoch=10, epochs=5)
    assert type(built).__name__ == cls and built.weight_decay == 0.001
    if optimizer in ("momentum", "nesterov"):
        assert built.momentum == 0.9 and built.nesterov == (optimizer == "nesterov")


@pytest.mark.parametrize(
    "schedule, at_step_20", [("constant", 0.1), ("step", 0.01), ("cosine", 0.05), ("exponential", 0.001)]
)
def test_schedules(tiny_config, schedule, at_step_20):
    t = tiny_config.paper.training.model_copy(update={"schedule": schedule, "step_every": 2, "decay": 0.1})
    rate = make_optimizer(t, 0.1, steps_per_epoch=10, epochs=4).get_config()["learning_rate"]
    if isinstance(rate, dict):
        rate = float(keras.ops.convert_to_numpy(keras.optimizers.schedules.deserialize(rate)(20)))
    assert rate == pytest.approx(at_step_20, rel=1e-4)


def test_auto_class_weights_balance_the_classes():
    weights = class_weights(np.array([0] * 30 + [1] * 10), 3)
    assert weights == {0: pytest.approx(40 / 90), 1: pytest.approx(40 / 30), 2: 1.0}


# ------------------------------------------------------------------ the real paper card


@pytest.mark.slow
def test_kermany2018_trains_one_epoch_on_digits(tmp_path, digits_card):
    """The real paper card (issue 2, section 8) at InceptionV3's minimum input size, random weights."""
    config = load_config("kermany2018", str(digits_card))
    assert config.paper.model.backbone == "InceptionV3" and config.paper.model.weights == "imagenet"
    runs = tmp_path / "runs"
    args = [
        "train",
        "--paper",
        "kermany2018",
        "--dataset",
        str(digits_card),
        "--runs-dir",
        str(runs),
        "--quiet",
        "--set",
        "model.weights=none",
        "--set",
        "model.input_size=75",
        "--set",
        "training.stages.0.epochs=1",
    ]
    assert main(args) == 0
    run = runs / "kermany2018__digits" / "baseline"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights_used"] == "random" and metrics["num_classes"] == 10 and (run / "COMPLETE").exists()
    (stage,) = metrics["stages"]
    assert stage["epochs"] == 1 and stage["unfrozen_layers"] == 0
    assert stage["params_trainable"] == 2048 * 10 + 10  # the final layer only: the base stays frozen
