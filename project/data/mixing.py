"""Batch-level mixing of training images: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019),
with their alpha from the card (training.mixup, training.cutmix), on training batches only.

Every draw (which of the two, the mixing weight, the partner of each image, CutMix's box) comes from
a generator seeded by the batch's key [seed, epoch, batch index], the key augmentation uses, so
a run is deterministic whatever the order in which tf.data's threads finish. Keras' MixUp and CutMix
layers draw from stateful seeds instead. The draws are a few numbers per batch (`mix_plan`, NumPy);
the pixels are mixed by TensorFlow ops, outside the GIL that albumentations holds (a batch of 32
images at 224x224 took 25-40 ms on 2 busy cores, the same arithmetic in NumPy 35-60 ms).

Both follow the papers' reference code: one weight lambda ~ Beta(alpha, alpha) per batch, each image
mixed with the image at a random permutation of the batch; CutMix pastes a box of area (1 - lambda)
clipped at the borders, and lambda becomes the share of the image left. With both alphas each
batch takes one of the two at random (timm's switch probability 0.5).
"""

import numpy as np

STREAM = 0x6D6978  # "mix": keeps these draws apart from the augmentation's, which share the key


def mix_plan(key, count, height, width, mixup=None, cutmix=None):
    """The draws of one batch keyed [seed, epoch, batch index]: (weight of each image's own pixels and
    label, partner index of each image, CutMix box [top, bottom, left, right] or all zeros for mixup,
    cut: whether it is CutMix). A batch of one image is left as it is (weight 1, its own partner)."""
    if count < 2:
        return np.float32(1.0), np.arange(count, dtype=np.int32), np.zeros(4, np.int32), False
    rng = np.random.default_rng(np.random.SeedSequence([*(int(k) for k in key), STREAM]))
    cut = mixup is None or (cutmix is not None and rng.random() < 0.5)
    alpha = cutmix if cut else mixup
    weight = float(rng.beta(alpha, alpha))
    partner = rng.permutation(count).astype(np.int32)
    box = np.zeros(4, np.int32)
    if cut:  # Yun et al.'s rand_bbox: sides sqrt(1 - weight) of the image's, centred at random, clipped
        ratio = np.sqrt(1.0 - weight)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        box[:] = top, bottom, left, right
        weight = 1.0 - (bottom - top) * (right - left) / (height * width)  # the share of each image left
    return np.float32(weight), partner, box, cut


def mix_batch_fn(mixup=None, cutmix=None):
    """A tf.data map function (float images [n, h, w, c], one-hot labels, key) -> (images, soft labels)
    for the training pipeline, or None when the card mixes nothing. The draws go through a
    numpy_function that is a pure function of the key (stateful=False): op determinism keeps the map
    parallel."""
    if mixup is None and cutmix is None:
        return None
    import tensorflow as tf

    def map_fn(images, labels, key):
        height, width = images.shape[1], images.shape[2]
        count = tf.shape(images)[0]

        def plan(key, count):
            return mix_plan(key, int(count), height, width, mixup, cutmix)

        weight, partner, box, cut = tf.numpy_function(
            plan, [key, count], (tf.float32, tf.int32, tf.int32, tf.bool), stateful=False
        )
        weight = tf.ensure_shape(weight, [])

        def pasted():  # only the box is gathered from the partners: a third of mixup's cost
            top, bottom, left, right = tf.unstack(tf.ensure_shape(box, [4]))
            band = images[:, top:bottom]
            band = tf.concat(
                [band[:, :, :left], tf.gather(band[:, :, left:right], partner), band[:, :, right:]], axis=2
            )
            return tf.concat([images[:, :top], band, images[:, bottom:]], axis=1)

        def blended():
            return weight * images + (1.0 - weight) * tf.gather(images, partner)

        mixed = tf.cond(tf.ensure_shape(cut, []), pasted, blended)
        soft = weight * labels + (1.0 - weight) * tf.gather(labels, partner)
        return tf.ensure_shape(mixed, images.shape), tf.ensure_shape(soft, labels.shape)

    return map_fn
