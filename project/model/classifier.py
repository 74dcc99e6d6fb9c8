"""The classifier: preprocessing layers -> backbone -> head, and the fine-tuning stages.

The backbone is one nested layer named "backbone" so that a stage can freeze or unfreeze it.
"""

import keras
import numpy as np

from project import logs
from project.config.backbone_table import BACKBONES
from project.errors import UserError
from project.model.backbones import (
    WeightsSource,
    activation_layer,
    build_application,
    build_scratch,
    preprocessing_layers,
    regularize_kernels,
)

log = logs.get(__name__)


def build_model(m, num_classes, stats=None, *, l2=0.0):
    """The paper card's model section `m` as a keras.Model taking raw 0-255 RGB, with an L2 penalty
    `l2` (training.l2) on every Conv and Dense kernel, the backbone's included; `stats`: training-set
    statistics for mean preprocessing. Returns (model, WeightsSource)."""
    shape = (*m.input_size, 3)
    backbone, weights = _backbone(m, shape, l2)
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for layer in _preprocessing(m, stats):
        x = layer(x)
    x = backbone(x)
    x = _pooling(m.head.pooling)(x)
    reg = keras.regularizers.L2(l2) if l2 else None
    for i, units in enumerate(m.head.hidden):
        x = keras.layers.Dense(
            units, kernel_regularizer=reg, kernel_initializer="he_normal", name=f"head_dense{i + 1}"
        )(x)
        if m.head.normalization == "batch":
            x = keras.layers.BatchNormalization(name=f"head_norm{i + 1}")(x)
        x = activation_layer(m.head.activation, f"head_act{i + 1}")(x)
        if m.head.dropout:
            x = HeadDropout(m.head.dropout, name=f"head_dropout{i + 1}")(x)
    if m.head.dropout and not m.head.hidden:
        x = HeadDropout(m.head.dropout, name="head_dropout")(x)
    # float32 keeps softmax stable under mixed precision; small weights make the initial loss ln(C)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_regularizer=reg,
        dtype="float32",
        name="predictions",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )(x)
    return keras.Model(inputs, outputs, name=f"{m.backbone}_classifier"), weights


@keras.saving.register_keras_serializable(package="project")
class HeadDropout(keras.layers.Layer):
    """Dropout whose rate is a variable of the layer, not a constant of the traced graph: a tuner
    trial with another rate reuses the compiled model (project.tune.reuse) and sets it with the weights."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_rate = float(rate)
        self.rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_rate), trainable=False, name="rate"
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        rate = keras.ops.cast(self.rate, inputs.dtype)
        kept = keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype) >= rate
        return keras.ops.where(kept, inputs / (1.0 - rate), keras.ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.initial_rate}


def _preprocessing(m, stats):
    mode = BACKBONES[m.backbone]["preprocess"] if m.preprocessing == "backbone" else m.preprocessing
    if mode in ("per_channel_mean", "mean_image"):
        if stats is None:
            raise ValueError("per-channel or mean-image preprocessing needs training-set statistics")
        if mode == "per_channel_mean":
            return preprocessing_layers(mode, stats["mean"], stats["variance"])
        image = np.asarray(stats["mean_image"], dtype="float32")
        return preprocessing_layers(mode, image, np.full_like(image, float(np.mean(stats["variance"]))))
    return preprocessing_layers(mode)


def _pooling(kind):
    return {
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[kind](name=f"head_pool_{kind}")


def _backbone(m, shape, l2):
    if m.backbone == "scratch":
        return _named(build_scratch(shape, m.scratch, l2)), WeightsSource("random", "from scratch")
    weights = None if m.weights.lower() == "none" else m.weights
    try:
        model = build_application(m.backbone, shape, weights, m.width)
    except UserError as error:
        if m.weights_fallback != "random" or weights != "imagenet":
            raise
        log.warning(
            f"!!! WARNING: {error}\n!!! weights_fallback: random -> training {m.backbone} from RANDOM initialisation.\n"
        )
        source = WeightsSource("random_fallback", "imagenet weights unavailable")
        model = build_application(m.backbone, shape, None, m.width)
    else:
        source = _source(weights)
    if l2:
        regularize_kernels(model, l2)
    return _named(model, source), source


def _source(weights):
    """The WeightsSource of an application built with `weights`: None, 'imagenet' or a file path."""
    if weights is None:
        return WeightsSource("random")
    return WeightsSource("imagenet") if weights == "imagenet" else WeightsSource("file", weights)


def _named(model, weights=None):
    """Name the backbone; from random initialisation, let BatchNormalization statistics follow
    the data faster (momentum 0.9 instead of keras.applications' 0.999, which needs thousands of
    steps before inference-mode statistics are usable)."""
    model.name = "backbone"
    if weights is not None and not weights.pretrained:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = min(layer.momentum, 0.9)
    return model


def backbone_of(model):
    return model.get_layer("backbone")


def backbone_layers(model):
    return [layer for layer in backbone_of(model).layers if not isinstance(layer, keras.layers.InputLayer)]


def apply_stage(model, unfreeze, weights, train_batchnorm=False):
    """Make the top `unfreeze` backbone layers trainable (0, a count, 'all', or the name of the
    first trainable layer). With pretrained `weights` (a WeightsSource) BatchNormalization stays
    frozen, and frozen BatchNormalization layers run in inference mode (Keras 3), unless
    `train_batchnorm` (the stage's train_batchnorm): then the unfrozen ones train and update their
    moving statistics. From random initialisation they always train with their layer."""
    backbone = backbone_of(model)
    layers = backbone_layers(model)
    if unfreeze == "all":
        count = len(layers)
    elif isinstance(unfreeze, int):
        count = min(unfreeze, len(layers))
    else:
        names = [layer.name for layer in layers]
        if unfreeze not in names:
            raise UserError(
                f"training.stages.unfreeze: no layer {unfreeze!r} in {backbone.name}; e.g. {', '.join(names[-40::8])}"
            )
        count = len(layers) - names.index(unfreeze)
    backbone.trainable = count > 0
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - count
        if weights.pretrained and not train_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return count


def count_params(model):
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen}
