"""Backbones: a registry over `keras.applications` plus a configurable from-scratch CNN.

The table of names, input sizes and preprocessing modes is plain data in
project.config.backbone_table, so that card validation needs no TensorFlow; Keras is imported
only when a backbone is built.

Every model takes raw 0-255 RGB images: each backbone's own preprocessing is placed inside
the model as standard Keras layers (so a saved `.keras` file loads with `safe_mode=True`).
"""

import os
import re
from dataclasses import dataclass
from typing import Literal

from project.config.backbone_table import WIDTH_MULTIPLIER
from project.data.network import download_timeout
from project.errors import UserError

_IMAGENET_MEAN_RGB = [123.68, 116.779, 103.939]  # caffe mode
# torch mode: (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], i.e. in 0-255 units
_TORCH_MEAN_RGB = [123.675, 116.28, 103.53]
_IMAGENET_STD_RGB = [58.395, 57.12, 57.375]

WeightsKind = Literal["imagenet", "file", "random", "random_fallback"]


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's initial weights came from. `kind` decides what training does with them
    (pretrained weights, imagenet or a file, keep BatchNormalization frozen when a stage unfreezes
    it); `text` only displays them (metrics.json and sanity.json record it as `weights_used`)."""

    kind: WeightsKind
    detail: str = ""  # random: why ("from scratch"); random_fallback: what was missing; file: its path

    @property
    def pretrained(self):
        return self.kind in ("imagenet", "file")

    @property
    def text(self):
        if self.kind == "file":
            return f"file: {self.detail}"
        if self.kind == "random_fallback":
            return f"random (fallback: {self.detail})"
        return self.kind + (f" ({self.detail})" if self.detail else "")

    def __str__(self):
        return self.text


def preprocessing_layers(mode, mean=None, variance=None):
    """Standard Keras layers that map raw 0-255 RGB to what the backbone expects."""
    import keras

    if mode in ("builtin", "none"):
        return []
    if mode == "rescale":  # x / 255, as most Keras papers of 2018-2022 feed their own networks
        return [keras.layers.Rescaling(1 / 255, name="preprocess_rescale")]
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "torch":
        variance = [s * s for s in _IMAGENET_STD_RGB]
        return [keras.layers.Normalization(mean=_TORCH_MEAN_RGB, variance=variance, name="preprocess_torch")]
    if mode == "caffe":
        # caffe weights expect BGR minus the mean: subtract in RGB order, then swap channels
        # with a fixed 1x1 convolution (a standard layer, unlike a Lambda).
        swap = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        swap.build((None, None, None, 3))
        kernel = [[[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]]
        swap.set_weights([keras.ops.convert_to_numpy(keras.ops.array(kernel))])
        return [keras.layers.Normalization(mean=_IMAGENET_MEAN_RGB, variance=[1.0] * 3, name="preprocess_caffe"), swap]
    if mode in ("per_channel_mean", "mean_image"):
        axis = -1 if mode == "per_channel_mean" else (1, 2, 3)
        return [keras.layers.Normalization(axis=axis, mean=mean, variance=variance, name=f"preprocess_{mode}")]
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def weights_cache_dir():
    """Where keras.utils.get_file caches application weights (honours KERAS_HOME)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models")


def build_application(name, input_shape, weights, width=1.0):
    """A keras.applications backbone without its top, weights 'imagenet', None or a file path."""
    import keras

    kwargs = {"include_top": False, "input_shape": tuple(input_shape), "pooling": None}
    if name in WIDTH_MULTIPLIER:
        kwargs["alpha"] = width
    file = None
    if weights not in (None, "imagenet"):  # a file: project.config.cards.load_config made its path absolute
        file, weights = os.path.abspath(weights), None
        if not os.path.isfile(file):
            raise UserError(f"model.weights: weights file {file} does not exist (accepted: imagenet, none, or a path)")
    constructor = getattr(keras.applications, name)
    try:
        with download_timeout():
            model = constructor(weights=weights, **kwargs)
    except Exception as error:  # a failed download surfaces as a bare Exception from keras.utils.get_file
        if weights != "imagenet" or not ("URL fetch failure" in str(error) or isinstance(error, OSError)):
            raise  # OSError: a download that timed out
        url = re.search(r"URL fetch failure on (\S+?):? ", str(error) + " ")
        fname = os.path.basename(url.group(1)) if url else "(see the URL above)"
        raise UserError(
            f"ImageNet weights for {name} are not in the Keras cache and cannot be downloaded: "
            f"expected file {fname} in {weights_cache_dir()}. "
            f"On a machine with network run `make weights PAPER=...`, copy the file there, "
            f"or set model.weights_fallback: random"
        ) from None
    if file:
        try:
            model.load_weights(file)
        except (ValueError, OSError) as error:  # another format, or another architecture's weights
            raise UserError(
                f"model.weights: {file} cannot be loaded into {name} without its top "
                f"({' '.join(str(error).split())[:240] or type(error).__name__}); "
                f"save it with model.save_weights from the same backbone, width and input size"
            ) from None
    return model


def build_scratch(input_shape, s, l2):
    """The card's scratch CNN (`s`: schema.Scratch) for papers that propose their own network: conv
    blocks, the first convolution of each with the block's stride, each block ending in its 2x2
    pooling (max, avg or none); `padding` for every convolution. Card validation has checked that the
    feature map never shrinks to 0 (schema.scratch_sizes)."""
    import keras

    init = keras.initializers.RandomNormal(stddev=0.01) if s.initializer == "normal_0.01" else s.initializer
    reg = keras.regularizers.L2(l2) if l2 else None
    pools = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}  # 2x2, stride 2
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for b, (filters, stride, pooling) in enumerate(zip(s.blocks, s.per_block("strides"), s.per_block("pooling"))):
        for c in range(s.convs_per_block):
            x = keras.layers.Conv2D(
                filters,
                s.kernel_size,
                strides=stride if c == 0 else 1,
                padding=s.padding,
                kernel_initializer=init,
                kernel_regularizer=reg,
                use_bias=s.normalization == "none",
                name=f"block{b + 1}_conv{c + 1}",
            )(x)
            x = normalization_layer(s.normalization, filters, f"block{b + 1}_norm{c + 1}")(x)
            x = activation_layer(s.activation, f"block{b + 1}_act{c + 1}", conv=True)(x)
        if pooling != "none":
            x = pools[pooling](2, name=f"block{b + 1}_pool")(x)
    return keras.Model(inputs, x, name="scratch_cnn")


def regularize_kernels(model, l2):
    """Add an L2 penalty `l2` (training.l2) to the kernel of every Conv and Dense layer of a built
    model, nested models included, as building it with kernel_regularizer would: the layers that have
    a `kernel`, not depthwise or separable convolutions (their kernels are depthwise_kernel and
    pointwise_kernel), biases or BatchNormalization (so TF-slim's MobileNet training scope too). Keras 3 computes Layer.losses from each trainable variable's own
    `regularizer` at every call, so setting it on the built variable is enough: no re-creation from
    config, the weights stay; the layer's kernel_regularizer is set too, so the saved config says so.
    Returns the number of kernels regularised."""
    import keras

    count = 0
    for layer in _leaf_layers(model):
        if hasattr(layer, "kernel_regularizer") and isinstance(getattr(layer, "kernel", None), keras.Variable):
            layer.kernel_regularizer = keras.regularizers.L2(l2)
            layer.kernel.regularizer = layer.kernel_regularizer
            count += 1
    return count


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (a functional block inside an application)
            yield from _leaf_layers(layer)
        else:
            yield layer


def normalization_layer(kind, channels, name):
    """batch / layer / group (up to 8 groups that divide the channels) / none."""
    import keras

    if kind == "batch":
        return keras.layers.BatchNormalization(momentum=0.9, name=name)  # short runs: statistics must settle fast
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    if kind == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return keras.layers.GroupNormalization(groups=groups, name=name)
    return keras.layers.Identity(name=name)


def activation_layer(name, layer_name=None, conv=False):
    """relu / leaky_relu / prelu / elu / tanh / sigmoid as a layer (prelu: one slope per channel)."""
    import keras

    if name == "prelu":
        return keras.layers.PReLU(shared_axes=[1, 2] if conv else None, name=layer_name)
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.01, name=layer_name)
    return keras.layers.Activation(name, name=layer_name)
