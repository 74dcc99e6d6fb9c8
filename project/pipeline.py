"""Input pipeline: tf.data from sources to batches of raw 0-255 RGB images and one-hot labels.

decode (files or encoded bytes; grey and RGBA become RGB) -> resize to the model's input size
-> cache as uint8 -> [train only: shuffle, albumentations] -> batch -> prefetch.

Decoding and resizing are TensorFlow ops (parallel, no GIL). Augmentation runs the card's
albumentations Compose through `tf.numpy_function` on a parallel map: OpenCV releases the GIL
inside its kernels, which is what lets it scale across cores (`make bench-data` measures it).
Images are cached after resizing and before augmentation, so epoch 2 on skips decoding.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE


def _to_rgb(image):
    channels = tf.shape(image)[-1]
    image = tf.cond(channels == 1, lambda: tf.image.grayscale_to_rgb(image[..., :1]), lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3])


def decode(item, from_file=True):
    """An image file (or its encoded bytes) to uint8 RGB: jpg, png, bmp, gif (first frame), webp."""
    data = tf.io.read_file(item) if from_file else item
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    return tf.ensure_shape(image, [None, None, 3])


def resize(image, size):
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def decoded_dataset(items, labels, kind, size):
    """(resized uint8 RGB image, label) per source, in order; unreadable files are skipped
    (ignore_errors, counted) rather than ending the run."""
    labels = np.asarray(labels, dtype=np.int32)
    if kind == "array":
        data = tf.data.Dataset.from_tensor_slices((np.asarray(items), labels))
        return data.map(lambda image, y: (resize(_to_rgb(image), size), y), num_parallel_calls=AUTOTUNE)
    data = tf.data.Dataset.from_tensor_slices((tf.constant(list(items), dtype=tf.string), labels))
    data = data.map(lambda item, y: (resize(decode(item, kind == "files"), size), y), num_parallel_calls=AUTOTUNE)
    return count_skipped(data.ignore_errors(), len(labels), size)


def count_skipped(data, expected, size):
    """ignore_errors drops an undecodable image without a word: append an end marker (label -1)
    and, when it arrives, print how many images never came through; then drop the marker."""
    end = tf.data.Dataset.from_tensors((tf.zeros([*size, 3], tf.uint8), tf.constant(-1, tf.int32)))

    def step(count, element):
        if element[1] < 0 and count < expected:
            tf.print("warning:", expected - count, "of", expected, "images could not be decoded and were skipped "
                     "(damaged or changed after the data check?); run `make check-data` to list them", output_stream=sys.stderr)
        return count + 1, element

    return data.concatenate(end).scan(tf.constant(0, tf.int64), step).filter(lambda image, y: y >= 0)


def augment_fn(compose, size):
    """A tf.data map function applying an albumentations Compose to one uint8 image."""
    height, width = size

    def apply(image):
        out = compose(image=image)["image"]
        if out.shape[:2] != (height, width):
            import cv2

            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out, dtype=np.uint8)

    def map_fn(image, label):
        out = tf.numpy_function(apply, [image], tf.uint8, stateful=True)
        return tf.ensure_shape(out, [height, width, 3]), label

    return map_fn


def make_dataset(
    items, labels, kind, *, size, num_classes, batch_size, training=False,
    augmentation=None, cache="memory", seed=0,
):
    """A batched tf.data.Dataset of (float32 images 0-255, one-hot labels).

    cache: "memory", "none", or a file path prefix for an on-disk cache (data larger than memory).
    """
    size = tuple(int(s) for s in size)
    data = decoded_dataset(items, labels, kind, size)
    if cache == "memory":
        data = data.cache()
    elif cache not in ("none", None):
        data = data.cache(str(cache))
    if training:
        data = data.shuffle(min(len(labels), 20000), seed=seed, reshuffle_each_iteration=True)
        if augmentation is not None:
            data = data.map(augment_fn(augmentation, size), num_parallel_calls=AUTOTUNE, deterministic=False)
    data = data.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)), num_parallel_calls=AUTOTUNE)
    return data.batch(batch_size).prefetch(AUTOTUNE)


def channel_stats(items, kind, size, limit=5000):
    """Per-channel mean/variance and the mean image of (up to `limit`) training images, 0-255."""
    total, total_sq, count, mean_image = 0.0, 0.0, 0, None
    items = items[:limit]
    for batch, _ in decoded_dataset(items, np.zeros(len(items)), kind, size).batch(256):
        x = tf.cast(batch, tf.float64).numpy()
        total = total + x.sum(axis=(0, 1, 2))
        total_sq = total_sq + (x * x).sum(axis=(0, 1, 2))
        mean_image = x.sum(axis=0) if mean_image is None else mean_image + x.sum(axis=0)
        count += x.shape[0]
    pixels = count * size[0] * size[1]
    mean = total / pixels
    variance = np.maximum(total_sq / pixels - mean * mean, 1e-6)
    return {"mean": mean.tolist(), "variance": variance.tolist(), "mean_image": (mean_image / count).tolist()}
