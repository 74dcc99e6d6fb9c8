"""Issue 16, parts 3 and 4: the fine-tuning switches (BatchNormalization trained or not, L2 on a
keras.applications backbone's kernels, per-part learning rates) and the network a paper proposes (the
scratch CNN's padding, strides and pooling per block; rescale preprocessing), with their bad inputs.
Real Keras on MobileNetV2 (width 0.35, 32x32, no weights) and the tiny scratch card."""

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import DIGITS_DATASET, TINY_PAPER, _merge, write_card, write_tiny_paper_card

from project.commands.cli import main
from project.config.cards import load_config, with_values
from project.config.schema import Paper, Stage, scratch_sizes
from project.model.backbones import WeightsSource
from project.model.classifier import apply_stage, backbone_layers, backbone_of, build_model
from project.train import sanity_loss_checks as loss_checks
from project.train.knobs import Knobs, set_knobs
from project.train.monitors import current_learning_rate
from project.train.sanity_signal_checks import check_preprocessing, expected_mode, preprocessed
from project.train.training import compile_model, train_run

LR = 0.01


def paper(**overrides):
    return Paper.model_validate(_merge(TINY_PAPER, overrides))


def mobilenet_card(model=(), **overrides):
    """MobileNetV2 at its minimum size, no weights: the fast keras.applications backbone."""
    return paper(model={"backbone": "MobileNetV2", "input_size": 32, "width": 0.35, **dict(model)}, **overrides)


def batch(size=32, n=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    return x, np.eye(classes, dtype="float32")[np.arange(n) % classes]


def values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def batchnorms(model):
    return [layer for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


# ------------------------------------------------------------------ 3. BatchNormalization while fine-tuning


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A MobileNetV2 backbone's weights in a file: model.weights: <path> is pretrained (WeightsSource 'file')."""
    model, _ = build_model(mobilenet_card().model, 3)
    path = tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5"
    backbone_of(model).save_weights(path)
    return str(path)


def test_pretrained_batchnorm_trains_only_when_the_stage_says_so(weights_file):
    """MobileNetV2 from a weights file (pretrained): its BatchNormalization layers follow the stage's
    train_batchnorm, in a forward pass in training mode as a fit step makes it (a real fit: below)."""
    card = mobilenet_card(model={"weights": weights_file})
    model, weights = build_model(card.model, 3)
    assert weights.kind == "file" and weights.pretrained
    norms = batchnorms(model)
    x, _ = batch()
    for train_batchnorm in (False, True, False):
        apply_stage(model, "all", weights, train_batchnorm)
        assert {layer.trainable for layer in norms} == {train_batchnorm}
        before = values(layer.moving_mean for layer in norms)
        model(x, training=True)
        moved = [not np.array_equal(b, a) for b, a in zip(before, values(layer.moving_mean for layer in norms))]
        assert all(moved) if train_batchnorm else not any(moved)


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_fit_stages_applies_the_stages_train_batchnorm(tmp_path, train_batchnorm):
    """Through the card and fit_stages: the second stage unfreezes everything, and its BatchNormalization
    statistics move only with train_batchnorm (the weights count as pretrained)."""
    from project.data.prepare import prepare
    from project.train.training import fit_stages

    card = write_tiny_paper_card(
        tmp_path,
        model={"input_size": 8},
        training={
            "batch_size": 64,
            "stages": [
                {"name": "head", "epochs": 1, "unfreeze": 0},
                {"name": "all", "epochs": 1, "unfreeze": "all", "train_batchnorm": train_batchnorm},
            ],
        },
    )
    config = load_config(str(card), str(write_card(tmp_path / "digits.yaml", DIGITS_DATASET)))
    data = prepare(config, tmp_path / "run")
    model, _ = build_model(config.paper.model, data.num_classes, data.stats(config.paper.model.input_size))
    norm = backbone_of(model).get_layer("block1_norm1")
    before = values(norm.weights)
    folder = tmp_path / "run" / "baseline"
    stages = fit_stages(model, config.paper, data, folder, weights=WeightsSource("imagenet"), verbose=0)
    unchanged = [np.array_equal(b, a) for b, a in zip(before, values(norm.weights))]
    assert unchanged == [not train_batchnorm] * 4  # gamma, beta, moving mean and variance
    assert stages[1]["params_trainable"] - stages[0]["params_trainable"] == 3 * 3 * 3 * 8 + (
        16 if train_batchnorm else 0
    )


# ------------------------------------------------------------------ 3. L2 on a keras.applications backbone


def kernels(model):
    """Paths of every Conv and Dense kernel (depthwise kernels are not `kernel`)."""
    found = []
    for layer in [*backbone_layers(model), *model.layers]:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.trainable:
            found.append(layer.kernel.path)
    return found


def test_l2_reaches_the_kernels_of_a_keras_applications_backbone():
    plain, weights = build_model(mobilenet_card().model, 3)
    regularised, _ = build_model(mobilenet_card().model, 3, l2=1e-3)
    for model in (plain, regularised):
        apply_stage(model, "all", weights)
    regularised.set_weights(plain.get_weights())
    assert plain.losses == []
    paths = sorted(v.path for v in regularised.trainable_weights if v.regularizer is not None)
    assert paths == sorted(kernels(regularised)) and len(paths) == len(regularised.losses) == 36  # 35 convs + output
    assert "Conv1/kernel" in paths and not any("depthwise" in path for path in paths)
    assert backbone_of(regularised).get_layer("Conv1").get_config()["kernel_regularizer"] is not None  # saved too

    # the loss rises by exactly l2 * sum of squares of those kernels
    x, y = batch()
    squares = sum(
        float(np.sum(np.square(keras.ops.convert_to_numpy(v))))
        for v in regularised.trainable_weights
        if v.regularizer is not None
    )
    expected = 1e-3 * squares
    rise = loss_checks.total_loss(regularised, [(x, y)]) - loss_checks.total_loss(plain, [(x, y)])
    assert rise == pytest.approx(expected, rel=1e-4) and rise > 0

    # what the stage freezes carries no penalty (a constant): the head alone
    apply_stage(regularised, 0, weights)
    assert [v.path for v in regularised.trainable_weights if v.regularizer is not None] == ["predictions/kernel"]
    assert len(regularised.losses) == 1


def test_the_sanity_check_counts_the_backbones_kernels():
    plain, weights = build_model(mobilenet_card().model, 3)
    large, _ = build_model(mobilenet_card().model, 3, l2=loss_checks.L2_FACTOR)
    for model in (plain, large):
        apply_stage(model, "all", weights)
    large.set_weights(plain.get_weights())
    result = loss_checks.check_regularisation(plain, large, [batch()])
    assert result["status"] == "PASS" and len(result["numbers"]["regularised_weights"]) == 36
    assert "36 trainable kernels (35 of them in the backbone)" in result["advice"]


# ------------------------------------------------------------------ 3. per-part learning rates


def head_kernel(model):
    return keras.ops.convert_to_numpy(model.get_layer("predictions").kernel).copy()


def step_with(card, *, knobs=None, reset=None):
    """Build, compile for the card's stage and train one batch (Adam); with `knobs`, compile with
    multipliers 1/1 first and then set the stage's through set_knobs, as a reused tuner trial does.
    Returns (backbone weights changed per variable, head kernel's largest change, the model)."""
    model, weights = build_model(card.model, 3)
    apply_stage(model, "all", weights)
    stage = card.training.stages[0]
    if knobs is None:
        compile_model(model, card, LR, 10, 10, stage=stage)
    else:
        compiled = Stage.model_validate({**stage.model_dump(), "lr_multipliers": {"backbone": 1.0, "head": 1.0}})
        compile_model(model, card, LR, 10, 10, knobs=knobs, stage=compiled)
        set_knobs(model, knobs, card.training, LR, 10, 10, stage.lr_multipliers)
    before, head = values(backbone_of(model).trainable_weights), head_kernel(model)
    x, y = batch(card.model.input_size[0])
    model.train_on_batch(x, y)
    changed = [not np.array_equal(b, a) for b, a in zip(before, values(backbone_of(model).trainable_weights))]
    return changed, float(np.abs(head_kernel(model) - head).max()), model


def multiplied(backbone, head, **training):
    stages = [{"name": "fine", "epochs": 1, "lr_multipliers": {"backbone": backbone, "head": head}}]
    return {"optimizer": "adam", "learning_rate": LR, "stages": stages, **training}


SMALL = {"input_size": 8, "preprocessing": "rescale"}  # the tiny scratch CNN, no training statistics needed


def test_lr_multipliers_are_per_variable_learning_rates_under_adam():
    changed, head_step, model = step_with(mobilenet_card(training=multiplied(0.0, 0.1)))
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert not any(changed)  # backbone rate 0: untouched, BatchNormalization's gamma and beta included
    # Adam's first step moves every weight by its rate (m / sqrt(v) = sign(g)): the head's is 0.1 x LR;
    # scaling the gradient by 0.1 instead would still move it by LR
    assert head_step == pytest.approx(0.1 * LR, rel=1e-3)
    assert current_learning_rate(model.optimizer) == pytest.approx(LR)  # what the monitors read: the stage's rate


@pytest.mark.parametrize(
    "multipliers, backbone_moves, head_rate", [((1.0, 1.0), True, LR), ((0.5, 2.0), True, 2 * LR), (None, True, LR)]
)
def test_the_guards_other_factors_move_what_they_say(multipliers, backbone_moves, head_rate):
    """Guards for the test above: a backbone factor above 0 moves the backbone, the head's sets its step;
    without lr_multipliers one optimizer trains everything."""
    training = multiplied(*multipliers) if multipliers else {"learning_rate": LR}
    changed, head_step, model = step_with(paper(model=SMALL, training=training))
    assert all(changed) == backbone_moves and head_step == pytest.approx(head_rate, rel=1e-3)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer) == (multipliers is not None)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "plateau"])
def test_a_reused_tuner_model_takes_the_trials_multipliers(schedule):
    """The multipliers are Knobs: a model compiled for 1/1 trains at 0/0.1 once set_knobs says so."""
    card = paper(model=SMALL, training=multiplied(0.0, 0.1, schedule=schedule))
    changed, head_step, model = step_with(card, knobs=Knobs())
    assert not any(changed) and head_step == pytest.approx(0.1 * LR, rel=1e-3)
    assert current_learning_rate(model.optimizer) == pytest.approx(LR, rel=1e-3)


def test_the_update_ratio_is_judged_at_the_stages_rate():
    """The monitors divide each layer's ratio by its part's factor and leave a part at 0 out: a backbone
    that does not train on purpose does not drag the median to 0 (which would say "raise the rate")."""
    from project.train.monitors import UpdateRatio, leaf_layers, rate_factors

    card = paper(model=SMALL, training=multiplied(0.0, 0.5))
    model, weights = build_model(card.model, 3)
    apply_stage(model, "all", weights)
    compile_model(model, card, LR, 4, 1, stage=card.training.stages[0])
    trained = [layer for layer in leaf_layers(model) if layer.trainable_weights]
    assert [layer.name for layer in trained] == ["block1_conv1", "block1_norm1", "predictions"]
    assert rate_factors(model, trained).tolist() == [0.0, 0.0, 0.5]
    ratio = UpdateRatio(verbose=False, peak_lr=LR)
    model.fit(*batch(8, n=32), batch_size=8, epochs=1, callbacks=[ratio], verbose=0)
    [value] = ratio.epoch_values
    assert value > 0 and math.isfinite(value)  # the head's ratio at the stage's rate; unscaled the median is 0


def resume_card(tmp_path):
    return write_tiny_paper_card(
        tmp_path,
        **{
            "training.stages": [{"name": "fine", "epochs": 3, "lr_multipliers": {"backbone": 0.3, "head": 1.0}}],
            "runtime.backup_seconds": 0,
        },
    )


class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


def test_a_killed_run_with_multipliers_resumes_to_the_same_numbers(tmp_path):
    """BackupAndRestore keeps both parts' optimizer state (Adam's moments): a run killed before its third
    epoch and rerun ends with the history of an uninterrupted one; the model saves and loads safely."""
    dataset = str(write_card(tmp_path / "digits.yaml", DIGITS_DATASET))
    config = load_config(str(resume_card(tmp_path / "cards")), dataset)
    train_run(config, tmp_path / "straight", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "killed", verbose=0, extra_callbacks=[Kill()])
    assert len(pd.read_csv(tmp_path / "killed" / "baseline" / "logs" / "history_fine.csv")) == 2
    train_run(config, tmp_path / "killed", verbose=0)
    straight, resumed = ((tmp_path / run / "baseline" / "history.csv").read_text() for run in ("straight", "killed"))
    assert resumed == straight
    loaded = keras.saving.load_model(tmp_path / "killed" / "baseline" / "model.keras", compile=False, safe_mode=True)
    assert loaded.output_shape == (None, 10)
    metrics = json.loads((tmp_path / "killed" / "baseline" / "metrics.json").read_text())
    assert metrics["update_ratio"]["epochs"] == 3  # the monitors read the stage's rate from the two optimizers


def test_the_reuse_key_holds_what_changes_the_graph_and_not_the_factors():
    from project.tune.reuse import architecture_key

    base = paper(training=multiplied(0.1, 1.0))
    assert architecture_key(base) == architecture_key(with_stage(base, lr_multipliers={"backbone": 0.5, "head": 2}))
    assert architecture_key(base) != architecture_key(with_stage(base, lr_multipliers=None))
    assert architecture_key(base) != architecture_key(with_stage(base, train_batchnorm=True))
    assert architecture_key(base) != architecture_key(paper(model={"scratch": {"padding": "valid"}}))


def with_stage(card, **stage):
    data = card.model_dump(mode="json")
    data["training"]["stages"][0].update(stage)
    return Paper.model_validate(data)


@pytest.mark.slow
def test_a_reused_trial_with_another_backbone_multiplier_trains_as_in_a_fresh_process(tmp_path, project_env):
    from test_reuse import FIRST, SECOND, run_alone, run_trials

    first, second = {**FIRST, "backbone_lr_multiplier": 1.0}, {**SECOND, "backbone_lr_multiplier": 0.2}
    (first_reused, _), (second_reused, together) = run_trials(tmp_path / "together", [first, second])
    assert not first_reused and second_reused
    alone_reused, alone = run_alone(project_env, tmp_path / "alone", second)
    assert not alone_reused and together == alone


# ------------------------------------------------------------------ 4. the scratch CNN a paper proposes


@pytest.mark.parametrize(
    "scratch, size, pools, shape",
    [
        ({"padding": "same"}, 16, ["MaxPooling2D", "MaxPooling2D"], (4, 4)),
        ({"padding": "valid"}, 16, ["MaxPooling2D", "MaxPooling2D"], (1, 1)),  # 16-14-12-6-4-2-1
        ({"padding": "valid", "pooling": ["avg", "none"]}, 20, ["AveragePooling2D"], (4, 4)),  # 18-16-8-6-4
        ({"padding": "same", "strides": [2, 1], "pooling": "none"}, 16, [], (8, 8)),
        ({"padding": "valid", "strides": 2, "pooling": ["none", "max"]}, 32, ["MaxPooling2D"], (2, 2)),  # 15-13-6-4-2
    ],
)
def test_scratch_padding_strides_and_pooling_per_block(scratch, size, pools, shape):
    card = paper(model={"input_size": size, "scratch": {"blocks": [4, 6], "convs_per_block": 2, **scratch}})
    model, _ = build_model(card.model, 3, {"mean": [0.0] * 3, "variance": [1.0] * 3})
    backbone = backbone_of(model)
    assert backbone.output_shape == (None, *shape, 6)
    assert scratch_sizes(card.model.scratch, card.model.input_size)[-1][1:] == shape  # the validation's arithmetic
    assert [type(layer).__name__ for layer in backbone.layers if "pool" in layer.name] == pools
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.padding for layer in convs} == {card.model.scratch.padding}
    assert [layer.strides[0] for layer in convs] == [
        first for stride in card.model.scratch.per_block("strides") for first in (stride, 1)
    ]
    assert model.output_shape == (None, 3)


def test_rescale_preprocessing_maps_0_255_to_0_1():
    card = paper(model={"preprocessing": "rescale"})
    model, _ = build_model(card.model, 3)
    assert model.layers[1].name == "preprocess_rescale"
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    x[0, 0, 0] = [0.0, 127.5, 255.0]
    out = preprocessed(model, x)
    np.testing.assert_allclose(out, x / 255.0, rtol=1e-6)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert expected_mode(card.model) == "rescale"
    assert check_preprocessing(model, x, "rescale")["status"] == "PASS"
    # guard: raw 0-255 inputs where [0, 1] is expected are flagged
    raw, _ = build_model(paper(model={"preprocessing": "none"}).model, 3)
    assert check_preprocessing(raw, x, "rescale")["status"] == "WARN"


# ------------------------------------------------------------------ bad input: one error naming the key


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"model.scratch.padding": "valid", "model.scratch.blocks": [8, 8, 8]},
            "model: model.scratch (padding valid, strides 1, pooling max, kernel_size 3) shrinks the feature map "
            "to 0x0 at block3_conv1 for input_size [16, 16]: input 16x16 -> block1_conv1 14x14 -> block1_pool 7x7 "
            "-> block2_conv1 5x5 -> block2_pool 2x2 -> block3_conv1 0x0; use padding: same",
        ),
        (
            {"model.scratch.blocks": [8] * 5},
            "shrinks the feature map to 0x0 at block5_pool for input_size [16, 16]",
        ),
        ({"model.scratch.padding": "full"}, "model.scratch.padding: Input should be 'same' or 'valid' (got 'full')"),
        ({"model.scratch.strides": 0}, "model.scratch.strides: a stride is a whole number from 1 to 8"),
        ({"model.scratch.strides": [1, 2]}, "model.scratch: strides: 2 values for 1 blocks; give one value"),
        ({"model.scratch.pooling": "min"}, "model.scratch.pooling: pooling is one of max, avg, none"),
        ({"model.scratch.pooling": ["max", "avg"]}, "model.scratch: pooling: 2 values for 1 blocks"),
        ({"model.preprocessing": "scale"}, "model.preprocessing: Input should be 'backbone'"),
        ({"training.stages.0.train_batchnorm": "often"}, "training.stages.0.train_batchnorm: Input should be a valid"),
        (
            {"training.stages.0.lr_multipliers": {"backbone": -1}},
            "training.stages.0.lr_multipliers.backbone: Input should be greater than or equal to 0",
        ),
        (
            {"training.stages.0.lr_multipliers": {"backbone": 0, "head": 0}},
            "training.stages.0.lr_multipliers: backbone and head are both 0: nothing would train",
        ),
        (
            {"training.stages.0.unfreeze": 0, "training.stages.0.lr_multipliers": {"head": 0}},
            "training.stages.0: lr_multipliers.head is 0 and unfreeze is 0: nothing would train in this stage",
        ),
        (
            {"training.stages.0.lr_multipliers": {"backbon": 0.1}},
            "training.stages.0.lr_multipliers.backbon: unknown key; allowed here: backbone, head",
        ),
        (
            {"search": {"space": {"backbone_lr_multiplier": {"min": 0.0, "max": 200.0}}}},
            "search.space.backbone_lr_multiplier: 200.0 is not a valid training.stages.-1.lr_multipliers.backbone "
            "(accepted: 0 <= value <= 100)",
        ),
    ],
)
def test_a_bad_key_is_one_error_naming_it(tmp_path, capsys, overrides, expected):
    card = write_tiny_paper_card(tmp_path, **overrides)
    status = main(["validate", "--paper", str(card), "--dataset", str(write_card(tmp_path / "d.yaml", DIGITS_DATASET))])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and line.startswith(f"error: {card}: ") and expected in line, line


def test_the_keys_validate_without_tensorflow(project_env, tmp_path):
    card = write_tiny_paper_card(
        tmp_path,
        **{
            "model.scratch": {
                "blocks": [8, 8],
                "convs_per_block": 1,
                "padding": "valid",
                "strides": [1, 2],
                "pooling": ["avg", "none"],
            },
            "model.preprocessing": "rescale",
            "training.stages.0.train_batchnorm": True,
            "training.stages.0.lr_multipliers": {"backbone": 0.1},
        },
    )
    code = (
        "import sys\nfrom project.config.cards import load_config\n"
        f"config = load_config({str(card)!r}, 'digits')\n"
        "print('RESULT', config.paper.training.stages[0].lr_multipliers.head, 'tensorflow' in sys.modules)\n"
    )
    result = project_env.python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RESULT 1.0 False" in result.stdout


# ------------------------------------------------------------------ the report and the search see the keys


def test_the_hyperparameter_table_shows_the_keys_with_their_origin(tmp_path):
    from project.report.hyperparameters import card_keys, flatten, origin, searched_keys

    overrides = {
        "model.preprocessing": "rescale",
        "model.scratch.padding": "valid",
        "model.scratch.pooling": "avg",
        "training.stages.0.train_batchnorm": True,
        "training.stages.0.lr_multipliers": {"backbone": 0.1},
        "search": {"space": {"backbone_lr_multiplier": {"min": 0.01, "max": 1.0, "sampling": "log"}}},
    }
    card = write_tiny_paper_card(tmp_path, **overrides)
    config = load_config(str(card), str(write_card(tmp_path / "d.yaml", DIGITS_DATASET)))
    resolved = config.paper.model_dump(mode="json")
    flat = flatten(resolved)
    shown = {
        "model.preprocessing": "rescale",
        "model.scratch.padding": "valid",
        "model.scratch.strides": 1,
        "model.scratch.pooling": "avg",
        "training.stages.0.train_batchnorm": True,
        "training.stages.0.lr_multipliers.backbone": 0.1,
        "training.stages.0.lr_multipliers.head": 1.0,
    }
    assert {key: flat[key] for key in shown} == shown
    in_card = card_keys(str(card))
    assert origin("model.scratch.padding", [], in_card, set()) == "paper"
    assert origin("model.scratch.strides", [], in_card, set()) == "template default"
    assert origin("training.stages.0.lr_multipliers.head", [], in_card, set()) == "template default"
    assert searched_keys(resolved) == {"training.stages.0.lr_multipliers.backbone": "backbone_lr_multiplier"}


def test_a_trial_sets_the_backbone_multiplier_of_a_stage_that_had_none(tmp_path):
    config = load_config(str(write_tiny_paper_card(tmp_path)), str(write_card(tmp_path / "d.yaml", DIGITS_DATASET)))
    assert config.paper.training.stages[-1].lr_multipliers is None
    trial = with_values(config, {"training.stages.-1.lr_multipliers.backbone": 0.05})
    multipliers = trial.paper.training.stages[-1].lr_multipliers
    assert (multipliers.backbone, multipliers.head) == (0.05, 1.0)
