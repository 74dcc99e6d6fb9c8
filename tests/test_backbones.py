"""Backbones and the classifier: every family builds, takes raw 0-255 images, loads weights from a file
or the Keras cache (no network), and the fine-tuning stages freeze exactly what they should."""

import json

import keras
import numpy as np
import pytest
from conftest import OFFLINE, TINY_PAPER, ProjectEnv, _merge

from project.config.backbone_table import BACKBONES
from project.config.schema import Paper
from project.errors import UserError
from project.model.backbones import WeightsSource, preprocessing_layers
from project.model.classifier import apply_stage, backbone_of, build_model, count_params


def paper(**overrides):
    return Paper.model_validate(_merge(TINY_PAPER, overrides))


def application(name, size, **model):
    return paper(model={"backbone": name, "input_size": size, "weights": "none", "width": 1.0, **model})


# ------------------------------------------------------------------ preprocessing inside the model

# keras.applications module whose preprocess_input each backbone uses
MODULES = {
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "ResNet50": "resnet50",
    "ResNet101": "resnet",
    "ResNet152": "resnet",
    "ResNet50V2": "resnet_v2",
    "ResNet101V2": "resnet_v2",
    "ResNet152V2": "resnet_v2",
    "InceptionV3": "inception_v3",
    "Xception": "xception",
    "InceptionResNetV2": "inception_resnet_v2",
    "MobileNet": "mobilenet",
    "MobileNetV2": "mobilenet_v2",
    "MobileNetV3Small": "mobilenet_v3",
    "MobileNetV3Large": "mobilenet_v3",
    "DenseNet121": "densenet",
    "DenseNet169": "densenet",
    "DenseNet201": "densenet",
    "NASNetMobile": "nasnet",
    "ConvNeXtTiny": "convnext",
    "ConvNeXtSmall": "convnext",
    **{f"EfficientNetB{i}": "efficientnet" for i in range(8)},
    **{f"EfficientNetV2{v}": "efficientnet_v2" for v in ("B0", "B1", "B2", "B3", "S")},
}


def test_every_application_has_its_preprocess_module():
    assert set(MODULES) == set(BACKBONES) - {"scratch"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_preprocessing_layers_match_keras_preprocess_input(name):
    image = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    expected = getattr(keras.applications, MODULES[name]).preprocess_input(image.copy())
    x = keras.ops.convert_to_tensor(image)
    for layer in preprocessing_layers(BACKBONES[name]["preprocess"]):
        x = layer(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x), expected, rtol=1e-5, atol=1e-4)


def test_the_three_modes_differ():
    """Guard for the test above: the modes are not all the same mapping."""
    image = np.full((1, 1, 1, 3), 200.0, np.float32)
    outputs = []
    for mode in ("caffe", "tf", "torch"):
        x = image
        for layer in preprocessing_layers(mode):
            x = layer(x)
        outputs.append(keras.ops.convert_to_numpy(x).ravel().round(3).tolist())
    assert outputs[0] != outputs[1] != outputs[2] != outputs[0]


def test_mean_preprocessing_from_training_statistics():
    stats = {
        "mean": [10.0, 20.0, 30.0],
        "variance": [4.0, 16.0, 64.0],
        "mean_image": np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3).tolist(),
    }
    x = np.full((1, 4, 4, 3), 50.0, np.float32)
    (channel,) = preprocessing_layers("per_channel_mean", stats["mean"], stats["variance"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(channel(x))[0, 0, 0], [20.0, 7.5, 2.5], rtol=1e-5)
    model, _ = build_model(
        paper(model={"preprocessing": "mean_image", "input_size": 8}).model,
        2,
        {**stats, "mean_image": np.full((8, 8, 3), 100.0).tolist()},
    )
    layer = model.get_layer("preprocess_mean_image")
    out = keras.Model(model.input, layer.output)(np.full((1, 8, 8, 3), 100.0, np.float32))
    assert np.allclose(keras.ops.convert_to_numpy(out), 0.0)


# ------------------------------------------------------------------ building


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 at its minimum size (32x32, width 0.35), random weights: the fast one."""
    model, used = build_model(application("MobileNetV2", 32, width=0.35, head={"dropout": 0.0}).model, 3)
    return model, used


def test_mobilenet_v2_builds_at_its_minimum_size(mobilenet):
    model, used = mobilenet
    assert used == WeightsSource("random") and used.text == "random"
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    assert [layer.name for layer in model.layers][:3] == ["image", "preprocess_tf", "backbone"]
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    probabilities = keras.ops.convert_to_numpy(model(np.full((2, 32, 32, 3), 255.0, np.float32), training=False))
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


SLOW = {name for name in BACKBONES if name not in ("MobileNetV2", "scratch")}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in sorted(SLOW)])
def test_every_backbone_builds_at_its_minimum_size(name):
    size = BACKBONES[name]["min_size"]
    model, used = build_model(application(name, size).model, 4)
    assert used.kind == "random" and model.output_shape == (None, 4)
    probabilities = keras.ops.convert_to_numpy(
        model(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), training=False)
    )
    assert np.all(np.isfinite(probabilities)) and np.isclose(probabilities.sum(), 1.0, atol=1e-4)
    backbone = backbone_of(model)
    if BACKBONES[name]["preprocess"] == "builtin":  # the application rescales 0-255 itself
        assert any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) for layer in backbone.layers)
    else:
        assert model.layers[1].name.startswith("preprocess_")


@pytest.mark.parametrize(
    "activation, normalization, initializer, layer_type",
    [
        ("relu", "batch", "he_normal", keras.layers.BatchNormalization),
        ("prelu", "group", "glorot_uniform", keras.layers.PReLU),
        ("leaky_relu", "layer", "normal_0.01", keras.layers.LeakyReLU),
        ("elu", "none", "he_uniform", keras.layers.Identity),
        ("tanh", "group", "glorot_normal", keras.layers.GroupNormalization),
        ("sigmoid", "layer", "he_normal", keras.layers.LayerNormalization),
    ],
)
def test_scratch_cnn_options(activation, normalization, initializer, layer_type):
    card = paper(
        model={
            "input_size": 8,
            "scratch": {
                "blocks": [4, 6],
                "convs_per_block": 2,
                "activation": activation,
                "normalization": normalization,
                "initializer": initializer,
            },
            "head": {"hidden": [5], "activation": activation, "dropout": 0.3, "normalization": "batch"},
        },
        training={"l2": 0.001},
    )
    model, used = build_model(
        card.model, 2, {"mean": [1.0] * 3, "variance": [1.0] * 3, "mean_image": None}, l2=card.training.l2
    )
    assert used.kind == "random" and used.text == "random (from scratch)"
    backbone = backbone_of(model)
    assert [layer.name for layer in backbone.layers if "conv" in layer.name] == [
        "block1_conv1",
        "block1_conv2",
        "block2_conv1",
        "block2_conv2",
    ]
    assert any(isinstance(layer, layer_type) for layer in backbone.layers)
    assert backbone.output_shape == (None, 2, 2, 6)
    assert len(model.losses) == 6  # L2 on 4 convolutions, the hidden layer and the output layer
    assert model.get_layer("head_dense1").units == 5 and model.get_layer("head_dropout1").rate == 0.3


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(UserError, match=f"weights file {tmp_path / 'nope.weights.h5'} does not exist"):
        build_model(application("MobileNetV2", 32, width=0.35, weights=str(tmp_path / "nope.weights.h5")).model, 2)


# ------------------------------------------------------------------ ImageNet weights from the Keras cache, offline


def test_imagenet_weights_come_from_the_keras_cache_without_network(offline_keras):
    out, home = offline_keras["out"], offline_keras["home"]
    # missing: one clear error naming the file, the cache folder and `make weights`, at once (no hang)
    message = out["weights_error"]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert str(home / "models") in message and "make weights" in message and "weights_fallback" in message
    assert out["weights_seconds"] < 60
    # weights_fallback: random goes on, loudly, and says what it used
    assert out["fallback"] == "random (fallback: imagenet weights unavailable)"
    assert "WARNING" in offline_keras["stderr"] and "RANDOM" in offline_keras["stderr"]  # a warning: on stderr
    # a file placed in $KERAS_HOME/models is what `imagenet` loads; a weights path loads that file
    assert out["imagenet"] == "imagenet" and out["imagenet_equal"] is True
    assert out["file"].startswith("file: ") and out["file_equal"] is True


# What a fine-tuning stage does to BatchNormalization, for each real WeightsSource: ImageNet weights missing
# offline (the fallback to random), then a file of the right name placed in KERAS_HOME, then a weights file.
WEIGHTS_SCRIPT = """
import json, os
import keras, numpy as np
from project.config.schema import Paper
from project.model.classifier import apply_stage, backbone_of, build_model

BASE = json.loads(os.environ["TINY_PAPER_JSON"])
FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"  # what keras.applications looks for


def card(**model):
    data = {**BASE, "model": {**BASE["model"], "backbone": "MobileNetV2", "width": 0.35, "input_size": 96, **model}}
    return Paper.model_validate(data).model


def fine_tuned(model, weights):
    # the stage fit_stages prepares when it unfreezes the whole backbone, then a training-mode forward pass
    apply_stage(model, "all", weights)
    layers = [l for l in backbone_of(model).layers if isinstance(l, keras.layers.BatchNormalization)]
    x = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype("float32")
    before = [keras.ops.convert_to_numpy(l.moving_mean).copy() for l in layers]
    training = keras.ops.convert_to_numpy(model(x, training=True))
    inference = keras.ops.convert_to_numpy(model(x, training=False))
    after = [keras.ops.convert_to_numpy(l.moving_mean) for l in layers]
    return {
        "kind": weights.kind,
        "text": weights.text,
        "trainable": sorted({l.trainable for l in layers}),
        "statistics_moved": any(not np.array_equal(b, a) for b, a in zip(before, after)),
        "inference_mode": bool(np.allclose(training, inference, rtol=1e-5, atol=1e-6)),
    }


out = {}
model, weights = build_model(card(weights="imagenet", weights_fallback="random"), 3)
out["fallback"] = fine_tuned(model, weights)
os.makedirs(os.path.join(os.environ["KERAS_HOME"], "models"), exist_ok=True)
backbone_of(model).save(os.path.join(os.environ["KERAS_HOME"], "models", FILE))  # the published files' HDF5 layout
model, weights = build_model(card(weights="imagenet"), 3)
out["imagenet"] = fine_tuned(model, weights)
mine = os.path.join(os.environ["KERAS_HOME"], "mine.weights.h5")
backbone_of(model).save_weights(mine)
model, weights = build_model(card(weights=mine), 3)
out["file"] = fine_tuned(model, weights)
print("RESULT " + json.dumps(out))
"""


def test_pretrained_weights_keep_batchnorm_frozen_and_a_fallback_trains_it_like_random_weights(tmp_path):
    env, home = ProjectEnv(tmp_path), tmp_path / "keras_home"
    home.mkdir()
    result = env.python(
        WEIGHTS_SCRIPT, env={"KERAS_HOME": str(home), "TINY_PAPER_JSON": json.dumps(TINY_PAPER), **OFFLINE}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["fallback"] == {
        "kind": "random_fallback",
        "text": "random (fallback: imagenet weights unavailable)",  # what metrics.json shows, as before
        "trainable": [True],
        "statistics_moved": True,
        "inference_mode": False,
    }
    for kind in ("imagenet", "file"):
        assert out[kind]["kind"] == kind and out[kind]["trainable"] == [False], out[kind]
        assert not out[kind]["statistics_moved"] and out[kind]["inference_mode"], out[kind]
    assert out["file"]["text"] == f"file: {home / 'mine.weights.h5'}"


# ------------------------------------------------------------------ fine-tuning stages

IMAGENET, RANDOM = WeightsSource("imagenet"), WeightsSource("random")


def trainable_layers(model):
    backbone = backbone_of(model)
    return [
        layer.name for layer in backbone.layers if layer.trainable and not isinstance(layer, keras.layers.InputLayer)
    ]


def backbone_layers(model):
    return [layer for layer in backbone_of(model).layers if not isinstance(layer, keras.layers.InputLayer)]


def test_unfreeze_zero_trains_the_head_only(mobilenet):
    model, _ = mobilenet
    assert apply_stage(model, 0, IMAGENET) == 0
    assert not backbone_of(model).trainable
    assert sorted(w.path for w in model.trainable_weights) == ["predictions/bias", "predictions/kernel"]
    params = count_params(model)
    assert params["trainable"] == 3 * (backbone_of(model).output_shape[-1] + 1)
    assert params["trainable"] + params["frozen"] == model.count_params()


def test_unfreeze_n_trains_the_top_n_layers(mobilenet):
    model, _ = mobilenet
    layers = backbone_layers(model)
    assert apply_stage(model, 12, RANDOM) == 12
    assert trainable_layers(model) == [layer.name for layer in layers[-12:]]
    expected = sum(int(np.prod(w.shape)) for layer in layers[-12:] for w in layer.trainable_weights)
    assert count_params(model)["trainable"] == expected + model.get_layer("predictions").count_params()
    # pretrained weights: BatchNormalization stays frozen inside the unfrozen top
    apply_stage(model, 12, IMAGENET)
    top = layers[-12:]
    assert trainable_layers(model) == [
        layer.name for layer in top if not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in top)


def test_unfreeze_from_a_named_layer(mobilenet):
    model, _ = mobilenet
    names = [layer.name for layer in backbone_layers(model)]
    count = apply_stage(model, "block_16_expand", RANDOM)
    assert count == len(names) - names.index("block_16_expand")
    assert trainable_layers(model) == names[names.index("block_16_expand") :]
    with pytest.raises(UserError, match="no layer 'block_99' in backbone"):
        apply_stage(model, "block_99", RANDOM)


def test_frozen_batchnorm_runs_in_inference_mode(mobilenet):
    model, _ = mobilenet
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    batchnorms = [layer for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    apply_stage(model, "all", IMAGENET)
    assert len(trainable_layers(model)) == len(backbone_layers(model)) - len(batchnorms)
    before = [keras.ops.convert_to_numpy(bn.moving_mean).copy() for bn in batchnorms]
    same = keras.ops.convert_to_numpy(model(x, training=True)), keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(*same, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(b, keras.ops.convert_to_numpy(bn.moving_mean)) for b, bn in zip(before, batchnorms))
    # guard: trainable BatchNormalization uses the batch's statistics in training mode
    apply_stage(model, "all", RANDOM)
    assert len(trainable_layers(model)) == len(backbone_layers(model))
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(trained, same[1], atol=1e-4)
