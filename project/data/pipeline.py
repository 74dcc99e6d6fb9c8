"""Input pipeline: tf.data from sources to batches of raw 0-255 RGB images and one-hot labels.

[train: shuffle the sources] -> decode (files or encoded bytes; grey and RGBA become RGB)
-> resize to the model's input size -> cache as uint8 -> [train: shuffle] -> batch
-> [train: albumentations on the batch] -> float32 + one-hot -> [train: mixup / CutMix] -> prefetch.
Each image travels with its index (its position in the subset), so that evaluation ties every
prediction to its image even when a file that no longer decodes is skipped.

Deterministic by construction: a training dataset spans a range of epochs, and each epoch's
shuffle and each image's augmentation are seeded from (seed, epoch, batch index, position), never
from the order in which tf.data's threads or the worker processes finish. No function in it is
stateful, so TensorFlow's op determinism (runtime.deterministic) keeps every map parallel.

Why it is built this way (`make bench-data` measures it, see reports/bench/bench_data.json):
- Decoding and resizing are TensorFlow ops (parallel, no GIL); the resize is bilinear, area
  averaging from 2x shrinking on (TensorFlow's antialiased bilinear costs 4x more CPU).
- Augmentation calls the card's albumentations Compose on a whole batch per numpy_function call
  (one call per batch, not per image).
- albumentations' Python code holds the GIL, so tf.data's threads give augmentation one core at
  most: from 3 usable CPUs on it runs in worker processes (project.data.augment_pool).
- tf.data's autotuner is off (see make_dataset).
- Images are cached after resizing and before augmentation, so epoch 2 on skips decoding. Without
  a memory cache, training shuffles the sources (file names) before decoding, so memory holds the
  index, not a buffer of decoded images.
"""

import os
import re
from pathlib import Path

import numpy as np

from project import locks, logs
from project.data import cachekey
from project.data.augment_pool import batch_function
from project.data.mixing import mix_batch_fn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

log = logs.get(__name__)

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BYTES = 256 * 2**20  # shuffle buffer of decoded images behind a disk cache
EPOCH_STRIDE = 1_000_003  # the shuffle seed of an epoch: seed * EPOCH_STRIDE + epoch
CACHE_VERSION = 2  # what a disk cache holds: (uint8 image from decode + resize, label, index); raise on any change


def _to_rgb(image):
    channels = tf.shape(image)[-1]
    # grey (1) and grey + alpha (2) become grey RGB; RGBA loses its alpha
    image = tf.cond(channels < 3, lambda: tf.image.grayscale_to_rgb(image[..., :1]), lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3])


def decode(item, from_file=True):
    """An image file (or its encoded bytes) to uint8 RGB: jpg, png, bmp, gif (first frame), webp."""
    data = tf.io.read_file(item) if from_file else item
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    return tf.ensure_shape(image, [None, None, 3])


def resize(image, size):
    """An RGB image tensor to uint8 at `size`: bilinear, or pixel-area averaging (antialiased)
    when shrinking by 2x or more, where bilinear sampling would alias; untouched at the size."""
    height, width = size
    if image.dtype != tf.uint8:
        image = tf.saturate_cast(tf.round(tf.cast(image, tf.float32)), tf.uint8)
    shape = tf.shape(image)

    def scaled():
        shrink = tf.minimum(shape[0] / height, shape[1] / width)
        out = tf.cond(
            shrink >= 2,
            lambda: tf.image.resize(image, size, method="area"),
            lambda: tf.image.resize(image, size, method="bilinear"),
        )
        return tf.saturate_cast(tf.round(out), tf.uint8)

    same = tf.reduce_all(shape[:2] == [height, width])
    out = tf.cond(same, lambda: image, scaled)
    return tf.ensure_shape(out, [height, width, 3])


def indexed(items, labels, kind, size, shuffle_seed=None, index=None):
    """(resized uint8 RGB image, label, index) per source, in order (or shuffled by `shuffle_seed`, a
    number or a tensor). `index`: each item's number (default: its position), carried with it so that a
    consumer knows which image it holds. A file that fails to decode (changed after the data check) is
    dropped (ignore_errors) without a word: the consumer counts (count_skipped) or looks up by index."""
    labels = np.asarray(labels, dtype=np.int32)
    index = np.arange(len(labels), dtype=np.int32) if index is None else np.asarray(index, dtype=np.int32)
    if kind == "array":
        data = tf.data.Dataset.from_tensor_slices((np.asarray(items), labels, index))
        data = _shuffled(data, len(labels), shuffle_seed)
        return data.map(lambda image, y, i: (resize(_to_rgb(image), size), y, i), num_parallel_calls=AUTOTUNE)
    data = tf.data.Dataset.from_tensor_slices((tf.constant(list(items), dtype=tf.string), labels, index))
    data = _shuffled(data, len(labels), shuffle_seed)
    data = data.map(lambda item, y, i: (resize(decode(item, kind == "files"), size), y, i), num_parallel_calls=AUTOTUNE)
    return data.ignore_errors()


def decoded_dataset(items, labels, kind, size, shuffle_seed=None):
    """(resized uint8 RGB image, label) per source, in order (or shuffled by `shuffle_seed`);
    unreadable files are skipped (ignore_errors, counted) rather than ending the run."""
    data = indexed(items, labels, kind, size, shuffle_seed)
    if kind == "array":  # arrays decode nothing: nothing to skip
        return data.map(lambda image, y, i: (image, y))
    return count_skipped(data, len(labels), size, keep_index=False)


def _warn_skipped(missing, expected):
    log.warning(
        f"warning: {missing} of {expected} images could not be decoded and were skipped (damaged or changed "
        "after the data check?); run `make check-data` to list them"
    )
    return np.int64(missing)


def count_skipped(data, expected, size, keep_index=True):
    """ignore_errors drops an undecodable image without a word: append an end marker (label -1)
    and, when it arrives, say how many images never came through; then drop the marker (and the
    index unless `keep_index`). The warning is a Python call TensorFlow sees as stateless: a stateful
    op (tf.print) anywhere in the pipeline makes op determinism run every parallel map of it serially."""
    end = tf.data.Dataset.from_tensors(
        (tf.zeros([*size, 3], tf.uint8), tf.constant(-1, tf.int32), tf.constant(-1, tf.int32))
    )

    zero = tf.constant(0, tf.int64)

    def step(count, element):
        missing = tf.where(element[1] < 0, expected - count, zero)
        warned = tf.cond(
            missing > 0,
            lambda: tf.numpy_function(_warn_skipped, [missing, expected], tf.int64, stateful=False),
            lambda: zero,
        )
        # uses the call's result (== missing), or TensorFlow prunes it
        return count + 1 + warned - missing, element if keep_index else element[:2]

    return data.concatenate(end).scan(tf.constant(0, tf.int64), step).filter(lambda image, y, *i: y >= 0)


def _shuffled(data, count, seed, buffer=None):
    if seed is None:
        return data
    return data.shuffle(max(1, min(count, buffer or count)), seed=seed, reshuffle_each_iteration=False)


def augment_batch_fn(compose, size):
    """A tf.data map function applying an albumentations Compose to each image of a uint8 batch,
    seeded by the batch's key [seed, epoch, batch index] (in worker processes from 3 usable CPUs
    on: see project.data.augment_pool). A pure function of its inputs: op determinism keeps it parallel."""
    height, width = size
    apply = batch_function(compose)

    def map_fn(images, key):
        out = tf.numpy_function(apply, [images, key], tf.uint8, stateful=False)
        return tf.ensure_shape(out, [None, height, width, 3])

    return map_fn


def make_dataset(
    items,
    labels,
    kind,
    *,
    size,
    num_classes,
    batch_size,
    training=False,
    augmentation=None,
    cache="memory",
    seed=0,
    epochs=(0, 1),
    mixup=None,
    cutmix=None,
    with_index=False,
):
    """A batched tf.data.Dataset of (float32 images 0-255, one-hot labels).

    cache: "memory", "none", or a file path prefix for an on-disk cache (data larger than memory),
    keyed to what it is built from (a manifest beside it: see _cache).
    Training: the epochs `range(*epochs)` one after the other (give model.fit steps_per_epoch); every
    random draw is a function of (seed, epoch, batch index), so a run's batches do not depend on the
    order in which threads or processes finish, and a resumed run can start at any epoch. An epoch
    short of an image (a file that no longer decodes: counted in a warning) is topped up with its own
    first images, so that it still has steps_per_epoch batches and epochs never run into each other.
    mixup, cutmix: their alpha (project.data.mixing), training only; the labels become soft.
    with_index (evaluation, not training): (images, one-hot labels, index) batches, index = each
    image's position in `items`: a skipped file leaves a gap in the index, never a shifted row.
    """
    size = tuple(int(s) for s in size)
    count = len(labels)
    cached = cache not in ("none", None)
    order = None
    if training and cached and cache != "memory":
        # a disk cache is read back in the order it was written, and only a bounded buffer of
        # decoded images can be reshuffled: write it in a seeded random order
        order = np.random.default_rng(seed).permutation(count)
        items = items[order] if isinstance(items, np.ndarray) else [items[i] for i in order]
        labels = np.asarray(labels)[order]

    def decoded(shuffle_seed=None):
        data = indexed(items, labels, kind, size, shuffle_seed, order)
        return data if kind == "array" or with_index else count_skipped(data, count, size)

    def built_from():
        keys = range(count) if order is None else order
        settings = {"kind": kind, "size": list(size), "pipeline": CACHE_VERSION}
        return cachekey.manifest(settings, items, kind, labels, keys)

    source = _cache(decoded(), cache, built_from) if cached or not training else None
    if training:
        # behind a memory cache the buffer holds references to the cached images: a full shuffle
        buffer = None if cache in ("memory", "none", None) else SHUFFLE_BYTES // (size[0] * size[1] * 3)

        def one_epoch(epoch):
            shuffle_seed = seed * EPOCH_STRIDE + epoch
            data = decoded(shuffle_seed) if source is None else _shuffled(source, count, shuffle_seed, buffer)
            if kind != "array":  # a skipped file: top the epoch up (repeat) to exactly `count` images
                data = data.repeat().take(count)
            return (
                data.batch(batch_size)
                .enumerate()
                .map(lambda i, batch: (*batch, tf.stack([tf.constant(seed, tf.int64), epoch, i])))
            )

        data = tf.data.Dataset.range(*epochs).flat_map(one_epoch)
    else:
        data = source.batch(batch_size)
    augment = augment_batch_fn(augmentation, size) if training and augmentation is not None else None
    mix = mix_batch_fn(mixup, cutmix) if training else None

    def finish(images, y, index, key=None):
        if augment is not None:
            images = augment(images, key)
        images, labels = tf.cast(images, tf.float32), tf.one_hot(y, num_classes)
        if with_index:
            return images, labels, index
        return (images, labels) if mix is None else mix(images, labels, key)

    data = data.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    # tf.data's autotuner at times drops the maps to one call at a time and the pipeline runs
    # serially (measured: ~385 instead of ~650 images/s on 2 cores, epoch to epoch at random);
    # without it, AUTOTUNE means one call per core, steadily
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.prefetch(AUTOTUNE).with_options(options)


def _cache(data, cache, built_from):
    """A memory cache, none, or a disk cache at the prefix `cache`: its manifest (prefix.manifest.json,
    project.data.cachekey) records what it was built from (the items in the order written, their
    labels, sizes and modification times or content hashes, the image size, the kind, CACHE_VERSION);
    a cache built from anything else is removed first, with one line saying why, and built again."""
    if cache == "memory":
        return data.cache()
    if cache in ("none", None):
        return data
    return _disk_cache(data, Path(cache), built_from)


def _disk_cache(data, prefix, built_from):
    """tf.data writes a disk cache during the first pass that reads it, and refuses a second writer
    (a tuner's chief and workers starting together: "concurrent caching iterator running") and any
    writer after a killed one (its lockfile stays). So the cache is written here in full, once, under
    a lock the other processes wait for; from then on every process only reads it. Its manifest is
    written last: a cache without one, or with another, is removed (saying why) and written again."""
    record = prefix.with_name(f"{prefix.name}.manifest.json")
    with locks.hold(prefix.parent, f"cache-{prefix.name}", "writing the disk cache", wait=True):
        wanted = built_from()
        reasons = cachekey.differences(cachekey.read(record), wanted)
        if reasons:
            built = [p for p in prefix.parent.glob(f"{prefix.name}.*") if p != record]
            if built:
                log.info(f"cache for {prefix.name} rebuilt: {'; '.join(reasons)}")
            for file in built:
                file.unlink(missing_ok=True)
        if not Path(f"{prefix}.index").exists():
            for leftover in prefix.parent.iterdir():  # what a killed writer left: lockfile, partial shards
                if re.fullmatch(rf"{re.escape(prefix.name)}_\d+\.(lockfile|data-.*)", leftover.name):
                    leftover.unlink()
            for _ in data.cache(str(prefix)).batch(256):
                pass
        if reasons:
            cachekey.write(record, wanted)
    return data.cache(str(prefix))


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
