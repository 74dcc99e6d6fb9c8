"""`make sanity`: every check passes on a sound model and fails (or warns) on a broken one."""

import json
import math

import keras
import numpy as np
import pytest
from conftest import write_tiny_paper_card
from sklearn.datasets import load_digits

from project.commands.cli import main
from project.train import sanity, sweep
from project.train import sanity_loss_checks as loss_checks
from project.train import sanity_signal_checks as signal_checks


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    return x, keras.utils.to_categorical(data.target, 10).astype("float32"), data.target


def mlp(hidden=(32,), regularizer=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    x = inputs
    for units in hidden:
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer="he_normal", kernel_regularizer=regularizer
        )(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_regularizer=regularizer, name="out")(x)
    return keras.Model(inputs, outputs)


# ---------------------------------------------------------------- 1 initial loss


def test_initial_loss_passes_at_ln_c_and_fails_with_a_large_output_layer(digits):
    x, y, _ = digits
    model = mlp()
    batches = [(x[:128], y[:128]), (x[128:256], y[128:256])]
    good = loss_checks.check_initial_loss(model, batches, 10)
    assert good["status"] == "PASS", good
    assert abs(good["numbers"]["loss"] - math.log(10)) < 0.25 * math.log(10)

    kernel, bias = model.get_layer("out").get_weights()
    model.get_layer("out").set_weights([kernel * 100, bias])
    bad = loss_checks.check_initial_loss(model, batches, 10)
    assert bad["status"] == "FAIL"
    assert bad["numbers"]["relative_difference"] > 0.25
    assert "output layer" in bad["advice"]


def test_initial_loss_fails_on_logits(digits):
    x, y, _ = digits
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(10)(inputs))  # no softmax
    bad = loss_checks.check_initial_loss(model, [(x[:64], y[:64])], 10)
    assert bad["status"] == "FAIL" and "softmax" in bad["advice"]


# ---------------------------------------------------------------- 2 regularisation


def test_regularisation_passes_when_l2_is_in_the_loss_and_fails_when_it_is_not(digits):
    x, y, _ = digits
    batches = [(x[:128], y[:128])]
    plain = mlp()
    wired = mlp(regularizer=keras.regularizers.L2(1.0))
    wired.set_weights(plain.get_weights())
    good = loss_checks.check_regularisation(plain, wired, batches)
    assert good["status"] == "PASS", good
    assert good["numbers"]["loss_with_l2"] > good["numbers"]["loss_without"]
    assert len(good["numbers"]["regularised_weights"]) == 2

    # a model whose layers say L2 but whose loss never sees it: the regularizer is set after
    # the weights exist, so Keras never attaches it to them
    unwired = mlp()
    for layer in unwired.layers[1:]:
        layer.kernel_regularizer = keras.regularizers.L2(1.0)
    unwired.set_weights(plain.get_weights())
    bad = loss_checks.check_regularisation(plain, unwired, batches)
    assert bad["status"] == "FAIL"
    assert bad["numbers"]["increase"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- 3 overfit


def tiny_set(digits):
    x, y, labels = digits
    index = loss_checks.stratified(labels, 20, seed=0)
    return x[index], y[index]


def compiled(optimizer):
    model = mlp(hidden=(64,))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_stratified_takes_classes_in_turn():
    labels = np.repeat(np.arange(10), 30)
    index = loss_checks.stratified(labels, 20)
    assert len(set(index)) == 20
    assert np.bincount(labels[index], minlength=10).tolist() == [2] * 10
    skewed = np.array([0] * 50 + [1] * 3 + [2] * 50)
    counts = np.bincount(skewed[loss_checks.stratified(skewed, 20)])
    assert counts[1] == 3 and sorted(counts[[0, 2]].tolist()) == [8, 9]  # the rare class gives all it has


def test_overfit_passes_on_a_sound_model(digits):
    x, y = tiny_set(digits)
    good = loss_checks.check_overfit(compiled(keras.optimizers.Adam(0.01)), [(x, y)], epochs=200)
    assert good["status"] == "PASS", good["numbers"]
    assert good["numbers"]["final_accuracy"] == 1.0 and good["numbers"]["final_loss"] <= loss_checks.OVERFIT_LOSS


class ShuffledLabels:
    """The same 20 images with their labels permuted anew every epoch."""

    def __init__(self, x, y):
        self.x, self.y, self.rng = x, y, np.random.default_rng(0)

    def __iter__(self):
        yield self.x, self.y[self.rng.permutation(len(self.y))]


def test_overfit_fails_with_labels_shuffled_every_epoch(digits):
    x, y = tiny_set(digits)
    bad = loss_checks.check_overfit(compiled(keras.optimizers.Adam(0.01)), ShuffledLabels(x, y), epochs=60)
    assert bad["status"] == "FAIL"
    assert bad["numbers"]["final_accuracy"] < 1.0
    assert "labels" in bad["advice"]


def test_overfit_fails_with_learning_rate_zero(digits):
    x, y = tiny_set(digits)
    bad = loss_checks.check_overfit(compiled(keras.optimizers.Adam(0.0)), [(x, y)], epochs=60)
    assert bad["status"] == "FAIL"
    assert bad["numbers"]["best_accuracy"] < 0.5


# ---------------------------------------------------------------- 4 learning-rate sweep


def regression(variance, n=256, d=8):
    """Least squares whose inputs have covariance `variance` * I: plain gradient descent on the
    mean squared error diverges above the learning rate 1 / variance."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(n, d)))
    x = (q * np.sqrt(n * variance)).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) + rng.normal(size=(n, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model, [(x, y)]


def test_lr_sweep_finds_the_explosion_point_on_a_toy_problem():
    found = {}
    for variance in (100.0, 10000.0):
        model, batches = regression(variance)
        check = loss_checks.check_lr_sweep(model, batches, current_lr=10.0 / variance)
        critical = 1.0 / variance
        n = check["numbers"]
        assert critical < n["lr_explodes"] < 10 * critical, (variance, n)
        assert n["lr_steepest"] < critical and n["suggested_range"][0] < critical
        assert check["status"] == "WARN" and "explodes" in check["advice"]  # the card's lr 10x critical
        found[variance] = n["lr_explodes"]
    assert 30 < found[100.0] / found[10000.0] < 300  # the explosion point follows the curvature


def synthetic_sweep(start, bottom, explode, noise=0.03):
    """A sweep of 400 steps from 1e-7 to 10 whose loss is flat (2.3) up to the learning rate `start`, falls
    linearly in log(lr) to 1.0 at `bottom`, rises steeply after and is stopped (exploded) at `explode`;
    with noise that a one-step reading would mistake for structure."""
    lrs = np.geomspace(1e-7, 10, 400)
    x, a, b = np.log10(lrs), np.log10(start), np.log10(bottom)
    loss = np.where(x < a, 2.3, np.where(x < b, 2.3 - 1.3 * (x - a) / (b - a), 1.0 + 1.5 * (x - b)))
    loss = loss + np.random.default_rng(0).normal(0, noise, size=len(loss))
    exploded = int(np.searchsorted(lrs, explode))
    return {
        "lr": lrs[: exploded + 1].tolist(),
        "loss": loss[: exploded + 1].tolist(),
        "start_loss": 2.3,
        "exploded_at": exploded,
    }


def test_read_sweep_finds_where_the_loss_starts_to_fall_bottoms_out_and_explodes():
    curve = synthetic_sweep(1e-4, 3e-2, 0.3)
    found = sweep.read_sweep(curve)
    assert found["fell"] and found["min_loss"] == pytest.approx(1.0, abs=0.1)
    assert 1e-4 < found["lr_falls_from"] < 2e-4  # 3% below the start: a few steps into the fall
    assert 2e-2 < found["lr_at_min"] < 4.5e-2 and found["lr_explodes"] == curve["lr"][-1]
    assert 1e-4 <= found["falls_fastest"][0] <= found["lr_steepest"] <= found["falls_fastest"][1] <= found["lr_at_min"]
    assert found["suggested_range"] == [found["lr_falls_from"], found["lr_at_min"]]  # Smith's bounds
    # a fall over less than two decades still gets a range two decades wide
    sharp = sweep.read_sweep(synthetic_sweep(1e-3, 3e-3, 0.1))
    assert 2e-3 < sharp["lr_at_min"] < 4e-3 and sharp["suggested_range"] == [
        sharp["lr_at_min"] / 100,
        sharp["lr_at_min"],
    ]
    assert not sweep.read_sweep(synthetic_sweep(1e-3, 3e-3, 1.0, noise=0.0) | {"start_loss": 1.05})["fell"]


def test_the_sweep_stops_where_the_loss_blows_up_or_climbs_back_to_its_start():
    start, best = 2.3, 1.5  # fell from ln(10) to 1.5
    assert not sweep.blew_up(2.0, 2.0, average=2.0, best=best, start=start)
    assert sweep.blew_up(2.2, 2.2, average=2.4, best=best, start=start)  # back above the start: collapsed to chance
    assert sweep.blew_up(6.5, 2.2, average=2.2, best=best, start=start)  # above 4 x the best (fastai)
    assert not sweep.blew_up(2.5, 2.5, average=2.5, best=2.2, start=start)  # never fell by 10%: noise, not collapse
    assert sweep.blew_up(math.nan, 2.2, average=2.2, best=best, start=start)
    assert sweep.blew_up(2.2, math.inf, average=2.2, best=best, start=start)  # the step's own loss overflowed


def test_lr_sweep_warns_when_no_learning_rate_lowers_the_loss(digits):
    x, y, _ = digits
    model = mlp()
    for layer in model.layers:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    check = loss_checks.check_lr_sweep(model, [(x[:64], y[:64])], steps=30)
    assert check["status"] == "WARN" and "lowered the loss" in check["advice"]


# ---------------------------------------------------------------- 5 activations


def deep_mlp(initializer, activation="tanh", layers=10, units=100):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((units,))]
        + [keras.layers.Dense(units, activation=activation, kernel_initializer=initializer) for _ in range(layers)]
    )
    return model


@pytest.fixture(scope="module")
def gaussian_batch():
    return np.random.default_rng(0).normal(size=(256, 100)).astype("float32")


def test_activations_collapse_with_small_weights(gaussian_batch):
    check = signal_checks.check_activations(deep_mlp(keras.initializers.RandomNormal(stddev=0.01)), gaussian_batch)
    rows = check["layers"]
    assert len(rows) == 10
    stds = [r["std"] for r in rows]
    assert all(a > b for a, b in zip(stds, stds[1:]))  # shrinks layer after layer
    assert "collapsed" not in rows[0]["flags"] and all("collapsed" in r["flags"] for r in rows[3:])
    assert check["numbers"]["saturated"] == 0
    assert check["status"] == "FAIL" and "too small" in check["advice"]


def test_activations_saturate_with_unit_weights(gaussian_batch):
    check = signal_checks.check_activations(deep_mlp(keras.initializers.RandomNormal(stddev=1.0)), gaussian_batch)
    assert all("saturated" in r["flags"] for r in check["layers"])
    assert all(r["saturated_fraction"] > 0.5 for r in check["layers"])
    assert check["numbers"]["collapsed"] == 0
    assert check["status"] == "FAIL" and "too large" in check["advice"]


@pytest.mark.parametrize("initializer, activation", [("glorot_normal", "tanh"), ("he_normal", "relu")])
def test_activations_are_healthy_with_glorot_or_he(gaussian_batch, initializer, activation):
    check = signal_checks.check_activations(deep_mlp(initializer, activation), gaussian_batch)
    assert check["status"] == "PASS", [(r["layer"], r["std"], r["flags"]) for r in check["layers"]]
    assert min(r["std"] for r in check["layers"]) > 0.1


def test_activations_flag_dead_relus(gaussian_batch):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((100,)),
            keras.layers.Dense(50, activation="relu", bias_initializer=keras.initializers.Constant(-100.0)),
            keras.layers.Dense(50, activation="relu", kernel_initializer="he_normal"),
        ]
    )
    rows = signal_checks.check_activations(model, gaussian_batch)["layers"]
    assert rows[0]["zero_fraction"] == 1.0 and "dead" in rows[0]["flags"]


def test_activations_reach_inside_a_nested_backbone():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 3))
    inner_out = keras.layers.ReLU(name="inner_relu")(keras.layers.Conv2D(4, 3, name="conv")(inner_in))
    inner = keras.Model(inner_in, inner_out, name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(inner(x))
    x = keras.layers.Dense(5, activation="tanh", name="head")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    batch = np.random.default_rng(0).uniform(0, 255, size=(4, 8, 8, 3)).astype("float32")
    rows = signal_checks.check_activations(model, batch)["layers"]
    assert [(r["layer"], r["kind"]) for r in rows] == [("backbone/inner_relu", "relu"), ("head", "tanh")]


# ---------------------------------------------------------------- 6 preprocessing


def conv_model(*preprocessing):
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for layer in preprocessing:
        x = layer(x)
    x = keras.layers.Conv2D(4, 3)(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, size=(16, 8, 8, 3)).astype("float32")


def test_preprocessing_passes_when_the_inputs_match(images):
    check = signal_checks.check_preprocessing(conv_model(keras.layers.Rescaling(1 / 127.5, offset=-1.0)), images, "tf")
    assert check["status"] == "PASS", check
    assert -1.0 <= check["numbers"]["min"] and check["numbers"]["max"] <= 1.0
    mean, var = images.mean(axis=(0, 1, 2)), images.var(axis=(0, 1, 2))
    centred = conv_model(keras.layers.Normalization(mean=mean, variance=var))
    assert signal_checks.check_preprocessing(centred, images, "centred")["status"] == "PASS"


def test_preprocessing_warns_on_raw_or_doubly_scaled_inputs(images):
    raw = signal_checks.check_preprocessing(conv_model(), images, "tf")
    assert raw["status"] == "WARN" and "0-255" in raw["advice"]
    twice = signal_checks.check_preprocessing(
        conv_model(keras.layers.Rescaling(1 / 127.5, offset=-1.0)), images / 255.0, "tf"
    )
    assert twice["status"] == "WARN" and "tiny" in twice["advice"]
    uncentred = signal_checks.check_preprocessing(conv_model(), images, "centred")
    assert uncentred["status"] == "WARN" and "not near 0" in uncentred["advice"]


def test_expected_mode_follows_the_backbone_and_its_weights():
    from project.config.cards import load_config, with_values

    config = load_config("demo", "digits")
    assert signal_checks.expected_mode(config.paper.model) == "tf"
    assert signal_checks.expected_mode(with_values(config, {"model.preprocessing": "none"}).paper.model) == "centred"
    pretrained = with_values(config, {"model.weights": "imagenet", "model.preprocessing": "none"})
    assert signal_checks.expected_mode(pretrained.paper.model) == "tf"
    scratch = with_values(config, {"model.backbone": "scratch"})
    assert signal_checks.expected_mode(scratch.paper.model) == "centred"


# ---------------------------------------------------------------- the command


def tiny_card(tmp_path, **training):
    return write_tiny_paper_card(
        tmp_path, seed=42, model={"head": {"pooling": "flatten"}}, training={"learning_rate": 0.003, **training}
    )


def test_sanity_command_writes_all_six_checks(tmp_path, capsys):
    card = tiny_card(tmp_path)
    runs = tmp_path / "runs"
    code = main(["sanity", "--paper", str(card), "--dataset", "digits", "--runs-dir", str(runs)])
    captured = capsys.readouterr()
    out = captured.out + captured.err  # a check that does not PASS is a warning, on stderr
    folder = runs / "tiny__digits"
    summary = json.loads((folder / "sanity.json").read_text())
    names = [c["name"] for c in summary["checks"]]
    assert names == ["initial_loss", "regularisation", "overfit", "lr_sweep", "activations", "preprocessing"]
    for check in summary["checks"]:
        assert check["status"] in ("PASS", "WARN", "FAIL") and check["numbers"] and check["advice"]
        assert f"{check['status']:<4}  {check['title']}" in out
        if "plot" in check:
            assert (folder / check["plot"]).stat().st_size > 1000
    plots = {c["plot"] for c in summary["checks"] if "plot" in c}
    assert plots == {"sanity_lr_sweep.png", "sanity_activations.png", "sanity_overfit.png"}
    statuses = {c["name"]: c["status"] for c in summary["checks"]}
    assert statuses["initial_loss"] == statuses["regularisation"] == statuses["overfit"] == "PASS", out
    assert statuses["preprocessing"] == "PASS"  # scratch: per-channel mean subtraction -> zero-centred
    range_test = next(c for c in summary["checks"] if c["name"] == "lr_sweep")
    assert range_test["status"] == "PASS" and "the card's 0.003 lies inside it" in range_test["advice"], range_test[
        "advice"
    ]
    assert range_test["numbers"]["steps"] > loss_checks.SWEEP["steps"]  # from random initialisation: the longer sweep
    assert code == (1 if summary["status"] == "FAIL" else 0)


@pytest.mark.slow
def test_sanity_command_exits_1_on_a_fail_unless_forced(tmp_path, capsys):
    # a learning rate far too low cannot overfit 20 examples: FAIL, exit 1 with the advice
    card, runs = tiny_card(tmp_path, learning_rate=1e-9), tmp_path / "runs"
    code = main(["sanity", "--paper", str(card), "--dataset", "digits", "--runs-dir", str(runs)])
    captured = capsys.readouterr()
    out = captured.out + captured.err  # a check that does not PASS is a warning, on stderr
    summary = json.loads((runs / "tiny__digits" / "sanity.json").read_text())
    assert {c["name"]: c["status"] for c in summary["checks"]}["overfit"] == "FAIL"
    assert code == 1 and "FAIL 3 overfit" in out and "--force" in out
    assert (
        main(["sanity", "--paper", str(card), "--dataset", "digits", "--runs-dir", str(runs), "--quiet", "--force"])
        == 0
    )


def test_verdict_returns_1_on_a_fail_unless_forced(capsys):
    checks = [
        {"title": "3 overfit", "status": "FAIL", "advice": "fix the labels"},
        {"title": "1", "status": "PASS", "advice": ""},
    ]
    assert sanity.verdict(checks, force=False) == 1
    assert "fix the labels" in capsys.readouterr().err  # the FAIL line is a warning
    assert sanity.verdict(checks, force=True) == 0
    assert sanity.verdict(checks[1:], force=False) == 0
