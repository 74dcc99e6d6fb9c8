"""`make sanity` on deliberately broken set-ups: every check fires on the mistake it is there for,
and stays quiet on the same set-up done right (so a check that always fires fails here too)."""

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from project.config.cards import load_config, with_values
from project.model.classifier import build_model
from project.train import sanity, sweep
from project.train import sanity_loss_checks as loss_checks
from project.train import sanity_signal_checks as signal_checks
from project.train.training import feed_of


def checks_of(card, digits_card, tmp_path):
    """run_checks on a card (path) and the digits card: {name: result}."""
    checks, _ = sanity.run_checks(load_config(str(card), str(digits_card)), tmp_path / "runs")
    return {c["name"]: c for c in checks}


# a scratch CNN that memorises 20 digits within the overfit check's epochs (flatten keeps every pixel)
FLAT = {"model": {"head": {"pooling": "flatten"}}}


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), keras.utils.to_categorical(data.target, 10).astype("float32")


def mlp_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    x = keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy")
    return model


# ---------------------------------------------------------------- learning rate


def test_a_learning_rate_far_too_low_fails_the_overfit_and_the_sweep_says_raise_it(
    tiny_paper_card, digits_card, tmp_path
):
    card = tiny_paper_card(tmp_path / "cards", **FLAT, **{"training.learning_rate": 1e-7})
    checks = checks_of(card, digits_card, tmp_path)
    overfit, sweep = checks["overfit"], checks["lr_sweep"]
    assert overfit["status"] == "FAIL" and overfit["numbers"]["best_accuracy"] < 1.0
    low, high = sweep["numbers"]["suggested_range"]
    assert sweep["numbers"]["card_lr"] == 1e-7 and 1e-7 < low / 10
    assert sweep["status"] == "WARN" and "far below" in sweep["advice"] and "raise it" in sweep["advice"]
    # the sweep itself is unaffected by the card's rate: it still finds where this network learns
    assert sweep["numbers"]["min_loss"] < 0.5 * sweep["numbers"]["start_loss"] and 1e-4 < high < 1.0


def test_a_learning_rate_that_explodes_is_found_and_warned_about(digits):
    x, y = digits
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 1024, 32)]
    held = (x[1024:1280], y[1024:1280])
    bad = loss_checks.check_lr_sweep(mlp_classifier(), batches, current_lr=1.0, held=held)
    explodes = bad["numbers"]["lr_explodes"]
    assert explodes is not None and 0.01 < explodes <= 1.0, bad["numbers"]
    assert bad["numbers"]["steps"] < 100  # the sweep stopped there
    assert bad["status"] == "WARN" and "explodes" in bad["advice"] and f"{explodes:.2g}" in bad["advice"]
    assert bad["numbers"]["suggested_range"][1] < explodes
    good = loss_checks.check_lr_sweep(mlp_classifier(), batches, current_lr=0.01, held=held)
    assert good["status"] == "PASS" and "inside it" in good["advice"], good["advice"]


def test_the_sweep_loss_is_measured_on_the_held_batch(digits):
    """The curve is the held batch's loss after each step (the steps' own losses are kept apart)."""
    x, y = digits
    model = mlp_classifier()
    held = (x[1024:1280], y[1024:1280])
    found = sweep.lr_sweep(model, [(x[:32], y[:32])], steps=40, min_lr=1e-3, max_lr=1.0, held=held)
    assert len(found["loss"]) == len(found["step_loss"]) == len(found["lr"])
    assert found["start_loss"] == pytest.approx(
        loss_checks.onehot_cross_entropy(held[1], mlp_classifier()(held[0])), rel=1e-5
    )
    assert found["loss"][-1] == pytest.approx(
        loss_checks.onehot_cross_entropy(held[1], model(held[0])), rel=1e-4
    )  # after the last step
    # one batch of 32 seen again and again: its own loss drops far below that of 256 held images
    assert min(found["step_loss"]) < 0.5 * min(found["loss"])


# ---------------------------------------------------------------- initial loss, activations


def test_logits_instead_of_probabilities_fail_the_initial_loss(tiny_config):
    model, _ = build_model(with_values(tiny_config, {"model.preprocessing": "none"}).paper.model, 10)
    images = np.random.default_rng(0).uniform(0, 255, size=(32, 16, 16, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(32) % 10, 10)
    good = loss_checks.check_initial_loss(model, [(images, labels)], 10)
    assert good["status"] == "PASS" and good["numbers"]["outputs_are_probabilities"]
    model.get_layer("predictions").activation = keras.activations.linear  # a head that forgot its softmax
    bad = loss_checks.check_initial_loss(model, [(images, labels)], 10)
    assert bad["status"] == "FAIL" and not bad["numbers"]["outputs_are_probabilities"] and "softmax" in bad["advice"]


def scratch_activations(tiny_config, **scratch):
    config = with_values(
        tiny_config, {f"model.scratch.{k}": v for k, v in scratch.items()} | {"model.preprocessing": "none"}
    )
    keras.utils.set_random_seed(0)
    model, _ = build_model(config.paper.model, 10)
    images = np.random.default_rng(0).normal(size=(32, 16, 16, 3)).astype("float32")
    return signal_checks.check_activations(model, images)


def test_tiny_initial_weights_collapse_the_activations_of_a_deep_scratch_cnn(tiny_config):
    deep = {"blocks": [16, 16, 16], "convs_per_block": 2, "activation": "tanh", "normalization": "none"}
    bad = scratch_activations(tiny_config, initializer="normal_0.01", **deep)
    assert bad["numbers"]["collapsed"] >= 4 and bad["status"] == "FAIL" and "too small" in bad["advice"]
    good = scratch_activations(tiny_config, initializer="glorot_normal", **deep)
    assert good["status"] == "PASS" and good["numbers"]["collapsed"] == 0


def test_one_collapsed_layer_in_a_healthy_network_is_flagged_without_failing():
    keras.utils.set_random_seed(0)
    dense = [
        keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal", name=f"dense{i}") for i in range(4)
    ]
    # normalization after every layer: one layer's collapse does not spread to the next
    normalised = [layer for d in dense for layer in (d, keras.layers.BatchNormalization(epsilon=1e-8))]
    model = keras.Sequential([keras.Input((64,)), *normalised])
    kernel, bias = dense[1].get_weights()
    dense[1].set_weights([kernel * 1e-3, bias])
    x = np.random.default_rng(0).normal(size=(128, 64)).astype("float32")
    check = signal_checks.check_activations(model, x)
    assert [r["layer"] for r in check["layers"] if r["flags"]] == ["dense1"] and check["layers"][1]["flags"] == [
        "collapsed"
    ]
    assert check["status"] == "WARN" and "dense1" in check["advice"] and "too small" in check["advice"]


# ---------------------------------------------------------------- preprocessing


def grey_images(count=32, size=32, seed=0):
    """Mid-grey images with smooth texture, as scans or X-rays: far from black everywhere."""
    import cv2

    coarse = np.random.default_rng(seed).normal(140, 30, size=(count, 4, 4)).astype("float32")
    smooth = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])
    return np.clip(smooth, 0, 255).round()[..., None].repeat(3, axis=-1)


def test_unscaled_inputs_to_a_backbone_that_expects_minus_one_to_one_warn(tiny_paper_card, digits_card, tmp_path):
    card = tiny_paper_card(
        tmp_path / "cards",
        model={"backbone": "MobileNetV2", "width": 0.35, "input_size": 32, "weights": "none", "preprocessing": "none"},
    )
    config = load_config(str(card), str(digits_card))
    # the template's own rescaling taken out: what a pretrained MobileNetV2 then receives
    mode = signal_checks.expected_mode(with_values(config, {"model.weights": "imagenet"}).paper.model)
    assert mode == "tf"
    raw, _ = build_model(config.paper.model, 10)
    bad = signal_checks.check_preprocessing(raw, grey_images(), mode)
    assert bad["status"] == "WARN" and "0-255" in bad["advice"] and bad["numbers"]["max"] > 100
    scaled, _ = build_model(with_values(config, {"model.preprocessing": "backbone"}).paper.model, 10)
    assert signal_checks.check_preprocessing(scaled, grey_images(), mode)["status"] == "PASS"


def centred_model(images):
    """A model that standardises its inputs with the plain images' own channel statistics."""
    mean, var = images.mean(axis=(0, 1, 2)), images.var(axis=(0, 1, 2))
    inputs = keras.Input(images.shape[1:])
    x = keras.layers.Normalization(mean=mean, variance=var)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))


def affine_paper(tiny_config, **affine):
    spec = {"name": "Affine", "rotate": [-40, 40], "scale": [0.6, 0.7], "p": 1.0, **affine}
    return with_values(tiny_config, {"augmentation": [spec]}).paper


def test_heavy_affine_black_borders_are_reported_apart_from_correct_preprocessing(tiny_config):
    images = grey_images()
    model = centred_model(images)
    black = signal_checks.augmented_copy(images, feed_of(affine_paper(tiny_config)))
    assert np.mean(black == 0) > 0.2  # a large share of black fill
    # judged on the augmented batch, these inputs would look badly centred
    assert signal_checks.check_preprocessing(model, black, "centred")["status"] == "WARN"
    check = signal_checks.check_preprocessing(model, images, "centred", augmented=black)
    assert check["status"] == "PASS", check
    n = check["numbers"]
    assert (
        n["augmentation_mean_shift"] > signal_checks.AUGMENT_SHIFT
        and max(abs(m) for m in n["augmented_channel_mean"]) > 0.5
    )
    note, grey = check["augmentation"], int(round(float(images.mean())))
    assert "moves the inputs" in note and "border_mode: 4" in note and f"fill: [{grey}, {grey}, {grey}]" in note
    assert note not in check["advice"] and "inputs reach the backbone as it expects" in check["advice"]
    assert sanity.format_result(check).splitlines()[-1] == f"      -> {note}"  # a line of its own
    # the same transform reflecting at the borders keeps the statistics
    reflected = signal_checks.augmented_copy(images, feed_of(affine_paper(tiny_config, border_mode=4)))
    quiet = signal_checks.check_preprocessing(model, images, "centred", augmented=reflected)
    assert quiet["status"] == "PASS" and "keeps the input statistics" in quiet["augmentation"]
    assert quiet["numbers"]["augmentation_mean_shift"] < signal_checks.AUGMENT_SHIFT


def test_augmented_copy_applies_the_cards_augmentation_to_the_same_images(tiny_config):
    images = grey_images(count=4)
    assert signal_checks.augmented_copy(images, feed_of(tiny_config.paper)) is None  # the tiny card has no augmentation
    flip = with_values(tiny_config, {"augmentation": [{"name": "HorizontalFlip", "p": 1.0}]}).paper
    assert np.array_equal(signal_checks.augmented_copy(images, feed_of(flip)), images[:, :, ::-1])


def test_run_checks_judges_preprocessing_without_augmentation(tiny_paper_card, digits_card, tmp_path):
    # digits are white on black: a white fill at the borders moves every channel mean far from 0
    white = {"name": "Affine", "rotate": [-40, 40], "scale": [0.6, 0.7], "fill": 255, "p": 1.0}
    card = tiny_paper_card(tmp_path / "cards", **FLAT, augmentation=[white])
    check = checks_of(card, digits_card, tmp_path)["preprocessing"]
    assert check["status"] == "PASS", check["advice"]
    assert max(abs(m) for m in check["numbers"]["channel_mean"]) < 0.1
    assert check["numbers"]["augmentation_mean_shift"] > 1.0 and "border_mode: 4" in check["augmentation"]


# ---------------------------------------------------------------- the demo card


@pytest.mark.slow
def test_the_demo_card_passes_every_check_and_its_sweep_contains_its_rate(tmp_path):
    """The shipped demo (MobileNetV2 x0.35 from random initialisation, Adam 0.002, affine augmentation)
    trains to > 95%: no check may cry wolf on it, and the sweep must find where its loss falls."""
    checks, weights = sanity.run_checks(load_config("demo", "digits"), tmp_path / "runs")
    assert weights.kind == "random" and weights.text == "random"
    assert {c["name"]: c["status"] for c in checks} == {name: "PASS" for name in loss_checks.TITLES}, [
        c["advice"] for c in checks
    ]
    n = next(c for c in checks if c["name"] == "lr_sweep")["numbers"]
    low, high = n["suggested_range"]
    assert low <= 0.002 <= high and n["min_loss"] < 0.8 * n["start_loss"]
    assert n["falls_fastest"][0] <= n["lr_steepest"] <= n["falls_fastest"][1] <= n["lr_at_min"]
    assert 1e-4 < n["lr_steepest"] < 0.05 and (n["lr_explodes"] is None or n["lr_explodes"] > 0.002)
    assert math.isclose(n["card_lr"], 0.002)
