"""Batch-level mixing of training images: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019),
with their alpha from the card (training.mixup, training.cutmix), on training batches only.

Every draw (which of the two, the mixing weight, the partner of each image, CutMix's box) comes from
a generator seeded by the batch's key [seed, epoch, batch index], the key augmentation uses, so
a run is deterministic whatever the order in which tf.data's threads finish. Keras' MixUp and CutMix
layers draw from stateful seeds instead.

Both follow the papers' reference code: one weight lambda ~ Beta(alpha, alpha) per batch, each image
mixed with the image at a random permutation of the batch; CutMix pastes a box of area (1 - lambda)
clipped at the borders, and lambda becomes the share of the image left. With both alphas each
batch takes one of the two at random (timm's switch probability 0.5).
"""

import numpy as np

STREAM = 0x6D6978  # "mix": keeps these draws apart from the augmentation's, which share the key


def mix_batch(images, labels, key, mixup=None, cutmix=None):
    """(images, labels) of one batch (float images [n, h, w, c], one-hot labels [n, classes]) mixed as
    the card says, seeded by `key`; a batch of one image comes back as it is."""
    count = len(images)
    if count < 2 or (mixup is None and cutmix is None):
        return images, labels
    rng = np.random.default_rng(np.random.SeedSequence([*(int(k) for k in key), STREAM]))
    use_cutmix = mixup is None or (cutmix is not None and rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    weight = float(rng.beta(alpha, alpha))
    partner = rng.permutation(count)
    if use_cutmix:
        images, weight = _cut_and_paste(images, partner, weight, rng)
    else:
        images = weight * images + (1.0 - weight) * images[partner]
    labels = weight * labels + (1.0 - weight) * labels[partner]
    return images.astype(np.float32), labels.astype(np.float32)


def _cut_and_paste(images, partner, weight, rng):
    """CutMix's box (Yun et al.'s rand_bbox): sides sqrt(1 - weight) of the image's, centred at random,
    clipped at the borders; returns the pasted images and the share of each image left."""
    height, width = images.shape[1:3]
    ratio = np.sqrt(1.0 - weight)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    images = np.array(images, copy=True)
    images[:, top:bottom, left:right] = images[partner, top:bottom, left:right]
    return images, 1.0 - (bottom - top) * (right - left) / (height * width)


def mix_batch_fn(mixup=None, cutmix=None):
    """A tf.data map function (images, one-hot labels, key) -> (images, labels) for the training
    pipeline, or None when the card mixes nothing. A pure function of its inputs (stateful=False):
    op determinism keeps the map parallel."""
    if mixup is None and cutmix is None:
        return None
    import tensorflow as tf

    def apply(images, labels, key):
        return mix_batch(images, labels, key, mixup, cutmix)

    def map_fn(images, labels, key):
        mixed, soft = tf.numpy_function(apply, [images, labels, key], (tf.float32, tf.float32), stateful=False)
        return tf.ensure_shape(mixed, images.shape), tf.ensure_shape(soft, labels.shape)

    return map_fn
