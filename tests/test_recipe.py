"""Training recipes as papers state them (issue 16, part 2): stages in steps, warmup_cosine and
one_cycle, gradient clipping, a moving average of the weights, mixup / CutMix, test-time
augmentation, and the one clear error for each bad value."""

import contextlib
import io
import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import DIGITS_DATASET, TINY_SEARCH, write_card, write_tiny_paper_card

from project.commands.cli import main
from project.config.cards import load_config, with_values
from project.config.schema import Paper, Training
from project.data.mixing import mix_batch_fn
from project.data.prepare import prepare
from project.errors import UserError
from project.model.classifier import build_model
from project.report.hyperparameters import flatten
from project.train import schedules
from project.train.averaging import judged_weights
from project.train.knobs import Knobs, ScheduledRate
from project.train.training import compile_model, evaluate, feed_of, fit_stages, make_optimizer
from project.train.tta import VIEWS, tta_probabilities
from project.tune.reuse import architecture_key
from project.tune.search_space import card_values


def training(**values):
    return Training.model_validate({"stages": [{"name": "train", "epochs": 10}], **values})


# ------------------------------------------------------------------ steps <-> epochs


def test_steps_are_the_papers_images_seen_at_any_batch_size():
    t = training(batch_size=32, stages=[{"name": "train", "steps": 100}])
    assert t.steps_batch_size == 32  # counted at the card's batch size
    stage = t.stages[0]
    assert schedules.stage_epochs(t, stage, steps_per_epoch=10, batch_size=32) == 10
    # twice the batch: half the steps, the same 3,200 images, the same 10 epochs of 5 steps
    assert schedules.run_steps(100, t, 64) == 50
    assert schedules.stage_epochs(t, stage, steps_per_epoch=5, batch_size=64) == 10
    # rounded up to whole epochs: 100 steps of 7 a epoch is 14.3 epochs
    assert schedules.stage_epochs(t, stage, steps_per_epoch=7, batch_size=32) == 15
    assert (
        schedules.conversion_text(t, stage, 5, 64)
        == "100 steps at batch 32 = 50 steps at batch 64 -> 10 epochs of 5 steps"
    )
    assert schedules.stage_epochs(training(), training().stages[0], 7, 32) == 10  # a stage in epochs stays as it is


def test_a_new_batch_size_keeps_the_cards_step_count(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, **{"training.stages": [{"name": "train", "steps": 400}]})
    plain = load_config(str(card), str(digits_card)).paper.training
    assert (plain.batch_size, plain.steps_batch_size) == (32, 32)
    # --set batch_size: the steps stay counted at the card's 32, so the run sees the paper's images
    overridden = load_config(str(card), str(digits_card), ["training.batch_size=64"]).paper.training
    assert (overridden.batch_size, overridden.steps_batch_size) == (64, 32)
    # a tuner trial's batch size (cards.with_values) likewise
    config = load_config(str(card), str(digits_card))
    trial = with_values(config, {"training.batch_size": 128}).paper.training
    assert (trial.batch_size, trial.steps_batch_size) == (128, 32)
    assert schedules.run_steps(400, trial, 128) == 100


# ------------------------------------------------------------------ schedules


def rate_at(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def both_schedules(kind, peak, steps_per_epoch, epochs, warmup):
    """The plain schedule and a tuner trial's (variables), for the same stage."""
    t = training(schedule=kind, warmup_steps=warmup)
    knobs = Knobs()
    knobs.set(t, peak, steps_per_epoch, epochs, warmup_steps=warmup)
    return schedules.plain_schedule(t, peak, steps_per_epoch, epochs, warmup), ScheduledRate(kind, knobs)


def test_warmup_cosine_rises_from_zero_to_the_peak_then_falls_to_zero():
    peak, total, warmup = 0.1, 100, 20  # 10 epochs of 10 steps
    for schedule in both_schedules("warmup_cosine", peak, 10, 10, warmup):
        expected = {
            0: 0.0,
            10: peak / 2,  # half way up
            20: peak,  # the warmup's end
            60: peak / 2,  # half way down the cosine
            total: 0.0,
            total + 5: 0.0,
        }
        for step, value in expected.items():
            assert rate_at(schedule, step) == pytest.approx(value, abs=1e-7), (schedule, step)
        assert rate_at(schedule, 30) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 10 / 80)), rel=1e-5)


def test_one_cycle_rises_from_a_25th_of_the_peak_and_ends_far_below():
    peak, total, warmup = 0.1, 100, 30
    start, end = peak / 25, peak / 25 / 1e4
    for schedule in both_schedules("one_cycle", peak, 10, 10, warmup):
        expected = {0: start, 15: (start + peak) / 2, 30: peak, 65: (peak + end) / 2, total: end}
        for step, value in expected.items():
            assert rate_at(schedule, step) == pytest.approx(value, rel=1e-5), (schedule, step)


def test_the_optimizer_applies_the_schedule_at_its_step():
    t = training(schedule="warmup_cosine", warmup_epochs=2)
    optimizer = make_optimizer(t, 0.1, steps_per_epoch=10, epochs=10, warmup_steps=20)
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    optimizer.iterations.assign(10)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.05)


def test_warmup_is_resolved_per_stage_and_shrinks_with_a_short_trial():
    t = training(schedule="warmup_cosine", warmup_epochs=2, stages=[{"name": "train", "epochs": 10}])
    stage = t.stages[0]
    assert schedules.warmup_steps(t, stage, steps_per_epoch=10, batch_size=32) == 20
    assert schedules.warmup_steps(t, stage, 10, 32, epochs=5) == 10  # a 5-epoch trial: the same fifth of it
    t = training(schedule="warmup_cosine", warmup_steps=40, batch_size=32, stages=[{"name": "train", "epochs": 10}])
    assert schedules.warmup_steps(t, t.stages[0], 10, 64) == 20  # steps at the card's batch: half as many at 64
    one = training(schedule="one_cycle")
    assert schedules.warmup_steps(one, one.stages[0], 10, 32) == 30  # PyTorch's pct_start 0.3 without a warmup
    assert schedules.warmup_steps(training(schedule="cosine"), stage, 10, 32) == 0


def test_a_warmup_in_other_units_longer_than_its_stage_is_refused_before_training():
    t = training(schedule="warmup_cosine", warmup_steps=500, stages=[{"name": "train", "epochs": 10}])
    with pytest.raises(
        UserError, match=r"training\.warmup_steps \(500: 500 steps at batch 32\) must be shorter than stage 'train'"
    ):
        schedules.warmup_steps(t, t.stages[0], steps_per_epoch=37, batch_size=32)


# ------------------------------------------------------------------ clipping and the moving average


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_clipnorm_and_ema_reach_every_optimizer(optimizer):
    t = training(optimizer=optimizer, clipnorm=0.5, ema=0.99)
    for built in (make_optimizer(t, 0.1, 10, 1), make_optimizer(t, 0.1, 10, 1, knobs=Knobs())):
        assert (built.clipnorm, built.use_ema, built.ema_momentum) == (0.5, True, 0.99)
    plain = make_optimizer(training(optimizer=optimizer), 0.1, 10, 1)
    assert (plain.clipnorm, plain.use_ema) == (None, False)


def test_clipnorm_clips_the_update():
    weights = keras.Variable(np.zeros(4, "float32"))
    optimizer = make_optimizer(training(optimizer="sgd", clipnorm=0.5), 1.0, 10, 1)
    optimizer.apply_gradients([(np.full(4, 10.0, "float32"), weights)])
    assert float(np.linalg.norm(keras.ops.convert_to_numpy(weights))) == pytest.approx(0.5)


class Weights(keras.callbacks.Callback):
    """The raw and the averaged weights at every epoch's end."""

    def __init__(self):
        super().__init__()
        self.raw, self.averaged = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.raw.append(self.model.get_weights())
        self.averaged.append(judged_weights(self.model))


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_moving_average_is_what_validation_judges_and_what_is_kept(tmp_path, digits_card):
    card = write_tiny_paper_card(
        tmp_path, **{"training.ema": 0.98, "training.learning_rate": 0.03, "training.stages.0.epochs": 2}
    )
    config = load_config(str(card), str(digits_card))
    data = prepare(config, tmp_path / "run")
    keras.utils.set_random_seed(1)
    model, _ = build_model(config.paper.model, data.num_classes, data.stats(config.paper.model.input_size))
    seen = Weights()
    folder = tmp_path / "run" / "baseline"
    fit_stages(model, config.paper, data, folder, extra_callbacks=[seen], verbose=0)
    history = pd.read_csv(folder / "logs" / "history_train.csv")
    best = int(history.val_accuracy.values.argmax())  # BestCheckpoint keeps the first of equal values

    assert not same(seen.raw[best], seen.averaged[best])  # the average is not the raw weights
    assert same(model.get_weights(), seen.averaged[best])  # the kept model is the averaged one
    kept, _, _ = evaluate(model, data, config.paper, "val")
    assert kept["loss"] == pytest.approx(history.val_loss[best], rel=1e-4)  # validation judged the average
    model.set_weights(seen.raw[best])
    raw, _, _ = evaluate(model, data, config.paper, "val")
    assert raw["loss"] != pytest.approx(history.val_loss[best], rel=1e-3)  # not the raw weights


class Crash(keras.callbacks.Callback):
    """Ends the process's training at the start of epoch `at`, after the resume state of the one before."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("killed")


def test_a_resumed_run_with_a_moving_average_continues_exactly(tmp_path, digits_card):
    from project.train.runtime import set_determinism

    set_determinism(True)
    values = {"training.ema": 0.98, "training.stages.0.epochs": 2, "runtime.backup_seconds": 0}
    config = load_config(str(write_tiny_paper_card(tmp_path, **values)), str(digits_card))
    data = prepare(config, tmp_path / "run")
    stats = data.stats(config.paper.model.input_size)

    def train(folder, callbacks=()):
        keras.utils.set_random_seed(1)
        model, _ = build_model(config.paper.model, data.num_classes, stats)
        fit_stages(model, config.paper, data, folder, extra_callbacks=list(callbacks), verbose=0)
        return pd.read_csv(folder / "logs" / "history_train.csv")

    whole = train(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="killed"):
        train(tmp_path / "resumed", [Crash(at=1)])
    resumed = train(tmp_path / "resumed")  # from the backup of epoch 1: raw weights and their average
    assert resumed.equals(whole)


# ------------------------------------------------------------------ mixup and CutMix


def batches(dataset, count=3):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def equal_batches(a, b):
    return all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


@pytest.mark.parametrize("alphas", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0}])
def test_mixing_changes_training_batches_only_and_is_seeded(tmp_path, tiny_config, alphas):
    data = prepare(tiny_config, tmp_path / "run")
    plain_feed = feed_of(tiny_config.paper)
    mixed_feed = feed_of(with_values(tiny_config, {f"training.{k}": v for k, v in alphas.items()}).paper)
    assert (mixed_feed.mixup, mixed_feed.cutmix) == (alphas.get("mixup"), alphas.get("cutmix"))

    plain = batches(data.dataset("train", plain_feed, epochs=(0, 2)))
    mixed = batches(data.dataset("train", mixed_feed, epochs=(0, 2)))
    again = batches(data.dataset("train", mixed_feed, epochs=(0, 2)))
    assert equal_batches(mixed, again)  # seeded by (seed, epoch, batch): the same batches every time
    for (x, y), (x0, y0) in zip(mixed, plain, strict=True):
        assert not np.array_equal(x, x0) and not np.array_equal(y, y0)
        assert np.allclose(y.sum(axis=1), 1.0) and (y.max(axis=1) < 1).any()  # soft labels
    for subset in ("val", "test"):
        assert equal_batches(
            batches(data.dataset(subset, mixed_feed), 10), batches(data.dataset(subset, plain_feed), 10)
        )


def mix_batch(images, labels, key, **alphas):
    """The pipeline's mixing map function called eagerly on one batch."""
    mixed, soft = mix_batch_fn(**alphas)(tf.constant(images), tf.constant(labels), tf.constant(key, tf.int64))
    return mixed.numpy(), soft.numpy()


def test_mixup_and_cutmix_mix_images_and_labels_in_the_same_proportion():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 8, 10, 3)).astype(np.float32)
    labels = np.eye(6, dtype=np.float32)  # image i is class i: a label's weights say where its pixels came from
    mixed, soft = mix_batch(images, labels, [1, 0, 0], mixup=0.4)
    assert (soft.max(axis=1) < 1).any()
    for i in range(6):
        partner = [k for k in np.flatnonzero(soft[i] > 1e-6) if k != i] or [i]
        j = partner[0]
        assert np.allclose(mixed[i], soft[i, i] * images[i] + (1 - soft[i, i]) * images[j], atol=1e-3)
    boxes = 0
    for batch in range(5):
        cut, soft = mix_batch(images, labels, [1, 0, batch], cutmix=1.0)
        kept = np.all(cut == images, axis=-1).mean(axis=(1, 2))  # the share of each image's own pixels left
        assert np.allclose(np.diag(soft), kept, atol=1e-6)
        boxes += (kept < 1).any()
    assert boxes >= 3  # most batches paste a box (a weight near 1 leaves none)
    cut, _ = mix_batch(images, labels, [1, 0, 2], cutmix=1.0)
    again, _ = mix_batch(images, labels, [1, 0, 2], cutmix=1.0)
    other, _ = mix_batch(images, labels, [1, 0, 4], cutmix=1.0)
    assert np.array_equal(cut, again) and not np.array_equal(cut, other)
    single, label = mix_batch(images[:1], labels[:1], [1, 0, 0], mixup=0.4)
    assert np.array_equal(single, images[:1]) and np.array_equal(label, labels[:1])


# ------------------------------------------------------------------ test-time augmentation


def test_tta_averages_the_softmax_over_the_listed_views():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    images = np.random.default_rng(0).uniform(0, 255, (5, 6, 6, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    views = ["hflip", "vflip", "rot90"]
    by_hand = [images, images[:, :, ::-1], images[:, ::-1], np.rot90(images, k=1, axes=(1, 2))]
    expected = np.mean([model.predict(np.ascontiguousarray(v), verbose=0) for v in by_hand], axis=0)
    averaged, truth = tta_probabilities(model, dataset, views)
    assert np.allclose(averaged, expected, atol=1e-6) and list(truth) == [0, 1, 2, 0, 1]
    assert not np.allclose(averaged, model.predict(images, verbose=0), atol=1e-3)  # the views count
    turned = keras.ops.convert_to_numpy(VIEWS["rot270"](images))
    assert np.array_equal(turned, np.rot90(images, k=3, axes=(1, 2)))


# ------------------------------------------------------------------ a run with all of it


def test_a_run_in_steps_with_every_switch_records_and_reports_them(tmp_path, monkeypatch):
    from project.report import render

    card = write_tiny_paper_card(
        tmp_path,
        **{
            "training.stages": [{"name": "train", "steps": 40}],
            "training.schedule": "warmup_cosine",
            "training.warmup_epochs": 0.5,
            "training.clipnorm": 1.0,
            "training.ema": 0.9,
            "training.mixup": 0.2,
            "training.cutmix": 1.0,
            "evaluation": {"tta": ["hflip", "vflip"]},
        },
    )
    digits = write_card(tmp_path / "digits.yaml", DIGITS_DATASET)
    runs = tmp_path / "runs"
    cards = ["--paper", str(card), "--dataset", str(digits), "--runs-dir", str(runs)]
    assert main(["train", *cards, "--quiet"]) == 0
    run = runs / "tiny__digits" / "baseline"
    metrics = json.loads((run / "metrics.json").read_text())
    [stage] = metrics["stages"]
    steps_per_epoch = math.ceil(sum(metrics["counts"]["train"].values()) / 32)
    assert stage["planned_epochs"] == math.ceil(40 / steps_per_epoch) == stage["epochs"] == 2
    assert (stage["steps"], stage["steps_batch_size"], stage["warmup_steps"]) == (
        40,
        32,
        math.ceil(0.5 * steps_per_epoch),
    )
    assert len(pd.read_csv(run / "history.csv")) == 2
    assert metrics["tta"]["views"] == ["hflip", "vflip"]
    assert metrics["test_tta_accuracy"] == metrics["tta"]["test"]["accuracy"]
    assert metrics["test_accuracy"] == metrics["test"]["accuracy"]  # the plain figure stays the run's
    saved = keras.saving.load_model(run / "model.keras", compile=False)
    best = keras.models.clone_model(saved)
    best.load_weights(run / "checkpoints" / "train.weights.h5")  # the averaged weights of the best epoch
    assert same(saved.get_weights(), best.get_weights())
    assert main(["evaluate", "--run", str(run)]) == 0  # the saved model gives the plain and the TTA figures again

    monkeypatch.setenv("PROJECT_RUNS", str(runs))
    config = load_config(str(card), str(digits))
    with contextlib.redirect_stdout(io.StringIO()):
        render.cli(config, _report_args(runs, tmp_path / "reports"))
    md = (tmp_path / "reports" / "tiny__digits" / "report.md").read_text()
    assert f"| test accuracy | {metrics['test_accuracy']:.4f} |" in md
    tta_line = next(line for line in md.splitlines() if "test-time augmentation" in line and line.startswith("|"))
    assert f"{metrics['test_tta_accuracy']:.4f}" in tta_line and "hflip, vflip" in tta_line
    assert "2 of 2 planned (40 steps at batch 32, run at batch 32)" in md
    for key in ("training.stages.0.steps", "training.ema", "training.clipnorm", "training.mixup", "evaluation.tta"):
        assert f"| {key} |" in md, key


def _report_args(runs, reports):
    import argparse

    return argparse.Namespace(runs_dir=str(runs), reports_dir=str(reports), target=None)


def test_the_new_keys_are_in_the_hyperparameter_table(tiny_config):
    paper = with_values(tiny_config, {"training.mixup": 0.2, "evaluation.tta": ["hflip"]}).paper
    flat = flatten(paper.model_dump(mode="json"))
    assert flat["training.mixup"] == 0.2 and flat["evaluation.tta"] == ["hflip"]
    assert {"training.ema", "training.clipnorm", "training.cutmix", "training.warmup_epochs"} <= set(flat)
    assert "training.stages.0.steps" in flat


# ------------------------------------------------------------------ searching and reusing


def test_mixing_alphas_are_searchable_and_keep_the_compiled_model(tiny_config):
    space = {"mixup": {"type": "float", "min": 0.1, "max": 0.4, "sampling": "linear", "step": None}}
    assert card_values(space, {"mixup": 0.3}, 0) == {"training.mixup": 0.3}
    paper = tiny_config.paper
    key = architecture_key(paper)
    assert architecture_key(with_values(tiny_config, {"training.mixup": 0.3, "training.cutmix": 1.0}).paper) == key
    for traced in ({"training.ema": 0.99}, {"training.clipnorm": 1.0}):  # constants of the optimizer's update
        assert architecture_key(with_values(tiny_config, traced).paper) != key


def test_a_mixing_range_is_checked_like_the_card_value(tmp_path, digits_card):
    from project.tune.search_check import check_search

    def search(space):
        card = write_tiny_paper_card(tmp_path, search={**TINY_SEARCH, "space": space})
        return check_search(load_config(str(card), str(digits_card)))

    _, space = search({"mixup": {"min": 0.1, "max": 0.4}, "cutmix": {"choices": [0.5, 1.0]}})
    assert set(space) == {"mixup", "cutmix"}
    with pytest.raises(
        UserError, match=r"search\.space\.mixup: 0\.0 is not a valid training\.mixup \(accepted: 0 < value"
    ):
        search({"mixup": {"min": 0.0, "max": 0.4}})


def test_a_reused_trial_takes_its_own_warmup(tmp_path, tiny_config):
    values = {"training.schedule": "warmup_cosine", "training.warmup_epochs": 1, "training.stages.0.epochs": 4}
    values["model.preprocessing"] = "none"
    config = with_values(tiny_config, values)
    model, _ = build_model(config.paper.model, 10)
    knobs = Knobs()
    compile_model(model, config.paper, 0.1, steps_per_epoch=10, epochs=4, knobs=knobs, warmup_steps=10)
    assert float(knobs.warmup_steps.numpy()) == 10
    model.optimizer.iterations.assign(5)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)


# ------------------------------------------------------------------ bad input


def base_paper(**training_values):
    return {
        "citation": {"title": "t", "authors": ["a"], "venue": "v", "year": 2020},
        "training": {"stages": [{"name": "train", "epochs": 10}], **training_values},
    }


@pytest.mark.parametrize(
    "card, expected",
    [
        (
            base_paper(stages=[{"name": "train", "epochs": 10, "steps": 2000}]),
            "training.stages.0: give epochs or steps, not both",
        ),
        (base_paper(stages=[{"name": "train"}]), "training.stages.0: give the stage's length: epochs"),
        (base_paper(mixup=0), "training.mixup: Input should be greater than 0"),
        (base_paper(cutmix=-1.0), "training.cutmix: Input should be greater than 0"),
        (base_paper(ema=1.0), "training.ema: Input should be less than 1"),
        (base_paper(clipnorm=0), "training.clipnorm: Input should be greater than 0"),
        (
            {**base_paper(), "evaluation": {"tta": ["hflip", "spin"]}},
            "evaluation.tta.1: Input should be 'hflip', 'vflip', 'rot90', 'rot180' or 'rot270' (got 'spin')",
        ),
        ({**base_paper(), "evaluation": {"tta": ["hflip", "hflip"]}}, "evaluation.tta: each view once"),
        (
            {
                **base_paper(),
                "model": {"backbone": "scratch", "input_size": [16, 24]},
                "evaluation": {"tta": ["rot90"]},
            },
            "evaluation.tta: rot90 needs a square model.input_size, got 16x24",
        ),
        (
            base_paper(schedule="warmup_cosine", warmup_epochs=10),
            "training.warmup_epochs (10) must be shorter than every stage it warms up: stage 'train' has 10 epochs",
        ),
        (
            base_paper(schedule="one_cycle", warmup_steps=500, stages=[{"name": "train", "steps": 400}]),
            "training.warmup_steps (500) must be shorter than every stage it warms up: stage 'train' has 400 steps",
        ),
        (
            base_paper(schedule="cosine", warmup_epochs=1),
            "training.warmup_epochs: a warmup belongs to schedule warmup_cosine or one_cycle, not cosine",
        ),
        (
            base_paper(schedule="warmup_cosine"),
            "training.schedule warmup_cosine needs training.warmup_epochs or training.warmup_steps",
        ),
        (
            base_paper(schedule="warmup_cosine", warmup_epochs=1, warmup_steps=10),
            "training.warmup_epochs and training.warmup_steps: give one, not both",
        ),
    ],
)
def test_a_bad_recipe_value_is_one_error_naming_the_key(tmp_path, capsys, digits_card, card, expected):
    path = write_card(tmp_path / "bad.yaml", card)
    status = main(["validate", "--paper", str(path), "--dataset", str(digits_card)])
    err = capsys.readouterr().err
    assert status == 2
    [line] = [line for line in err.splitlines() if line]
    assert line.startswith(f"error: {path}: ") and expected in line


def test_the_valid_recipe_keys_pass(tmp_path):
    card = base_paper(
        schedule="one_cycle",
        stages=[{"name": "train", "steps": 400}],
        clipnorm=1.0,
        ema=0.999,
        mixup=0.2,
        cutmix=1.0,
    )
    paper = Paper.model_validate({**card, "evaluation": {"tta": ["hflip", "rot180"]}})
    assert paper.training.stages[0].length == "400 steps" and paper.training.steps_batch_size == 32


@pytest.mark.parametrize("name", ["kornblith2019", "tan2019_efficientnet"])
def test_the_cards_of_step_protocols_state_steps(name):
    paper = load_config(name, "digits").paper
    [stage] = paper.training.stages
    assert (stage.steps, stage.epochs, paper.training.steps_batch_size) == (20000, None, 256)
    assert not any("defined in steps" in caveat for caveat in paper.caveats)  # the gap its caveat described is closed
    # CIFAR-10's 45,000 training images at batch 256: 176 steps an epoch, the 114 epochs the card used to state
    assert schedules.stage_epochs(paper.training, stage, math.ceil(45000 / 256), 256) == 114
