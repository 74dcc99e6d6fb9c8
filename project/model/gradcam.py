"""Grad-CAM (Selvaraju et al. 2017): where a classifier looks. The gradient of a class's score
(before the softmax) with respect to a convolutional feature map, averaged over the map's positions,
weights its channels; their weighted sum, through a ReLU, is the class's heatmap.

The feature map is the backbone's last one with at least MIN_POSITIONS positions (its output on
ordinary input sizes; a 1x1 map, as small inputs give, cannot say where), unless a layer of the
backbone is named (the paper card's report.gradcam_layer). The classifier is a chain
(preprocessing -> backbone -> head, see classifier.py), so it is run layer by layer here, with the
backbone returning the named map too; under mixed precision the map and its gradient are cast to
float32.
"""

import keras
import numpy as np
import tensorflow as tf

from project.errors import UserError

MIN_POSITIONS = 16


def feature_layers(backbone):
    """Names of the backbone's layers with a 4-D output (candidate feature maps), input to output."""
    return [layer.name for layer in backbone.layers if len(getattr(layer.output, "shape", ())) == 4]


def default_layer(backbone):
    """The last feature map with at least MIN_POSITIONS positions, else the backbone's output."""
    for layer in reversed(backbone.layers):
        shape = getattr(layer.output, "shape", ())
        if len(shape) == 4 and shape[1] and shape[2] and shape[1] * shape[2] >= MIN_POSITIONS:
            return layer.name
    return backbone.layers[-1].name


def _inner(backbone, layer):
    names = feature_layers(backbone)
    if layer not in names:
        raise UserError(
            f"report.gradcam_layer: {layer!r} is not a feature map of the backbone; accepted (last 8): "
            + ", ".join(names[-8:])
        )
    return keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.output])


def gradcam(model, images, classes, layer=None):
    """Heatmaps in [0, 1], one per image (N, h, w at the feature map's resolution), of `classes[i]`
    for `images[i]` (raw 0-255 RGB at the model's input size)."""
    backbone = model.get_layer("backbone")
    inner = _inner(backbone, layer or default_layer(backbone))
    head = model.layers[-1]  # the softmax Dense: its logits are the class scores
    x = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    with tf.GradientTape() as tape:
        h, features = x, None
        for current in model.layers:
            if isinstance(current, keras.layers.InputLayer):
                continue
            if current is backbone:
                features, h = inner(h, training=False)
            elif current is head:
                h = tf.matmul(tf.cast(h, tf.float32), tf.cast(head.kernel, tf.float32)) + tf.cast(head.bias, tf.float32)
            else:
                h = current(h, training=False)
        scores = tf.gather(h, tf.constant(np.asarray(classes), tf.int32), batch_dims=1)
    grads = tf.cast(tape.gradient(scores, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def upsampled(heatmaps, size):
    """Heatmaps resized (bilinear) to the image size (height, width)."""
    return tf.image.resize(np.asarray(heatmaps)[..., None], size, method="bilinear").numpy()[..., 0]
