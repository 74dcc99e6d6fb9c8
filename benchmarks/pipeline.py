"""`make bench-data`: every input-pipeline contender on the generated JPEGs, the one-core probe
and the pipeline's figures.

Throughput is measured on a generated folder of 256x256 JPEGs, for decode + resize to 224 +
RandomResizedCrop + HorizontalFlip + ColorJitter (one albumentations Compose everywhere), in
rounds that alternate the contenders; a figure is the median of its rounds. "One core" figures
come from a subprocess pinned to one CPU with sched_setaffinity: TensorFlow's threads, OpenCV
and any worker process all inherit it, so one core is one core, whatever the design inside
(where affinity is unavailable: tf.data's threading options at 1 and in-process augmentation).
"""

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.images import generate_images
from benchmarks.measure import augment_workers, determinism, epoch, one_worker, run_probe, timed
from benchmarks.settings import CLASSES, DATA_FIGURES, TARGETS, augmentation
from benchmarks.table import figure


def decoded(path, size):
    """OpenCV decode + the template's resize done by OpenCV (bilinear, area from 2x shrinking on)."""
    import cv2

    cv2.setNumThreads(0)
    image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if image.shape[:2] == tuple(size):
        return image
    shrink = min(image.shape[0] / size[0], image.shape[1] / size[1])
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)


def bare_loop(files, compose, size):
    """The per-core limit: one Python loop, decode + resize + the Compose."""
    for path in files:
        compose(image=decoded(path, size))["image"]
    return len(files)


def thread_scaling(compose, images, threads, repeat=2):
    """The Compose alone in 1 thread, then in `threads` threads (one Compose each): images/s of each."""
    import pickle

    def run(count):
        composes = [pickle.loads(pickle.dumps(compose)) for _ in range(count)]
        workers = [threading.Thread(target=lambda c=c: [c(image=image) for image in images * repeat]) for c in composes]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return count * len(images) * repeat / (time.perf_counter() - start)

    return {"one_thread": run(1), "threads": run(threads)}


def keras_io_dataset(folder, size, batch_size, seed=0):
    """The keras.io recipe: image_dataset_from_directory + Keras random preprocessing layers
    mapped in tf.data; RandomZoom (zoom in up to 70% per axis) stands for RandomResizedCrop."""
    import keras
    import tensorflow as tf

    data = keras.utils.image_dataset_from_directory(
        folder, label_mode="categorical", image_size=size, batch_size=batch_size, shuffle=True, seed=seed, verbose=False
    )
    augment = keras.Sequential(
        [
            keras.layers.RandomZoom((-0.7, 0.0), (-0.7, 0.0), seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.2,
                contrast_factor=0.2,
                saturation_factor=(0.4, 0.6),
                hue_factor=0.1,
                seed=seed,
            ),
        ]
    )
    return data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def per_image_dataset(files, labels, size, batch_size, compose):
    """The first design: one tf.numpy_function call per image, in tf.data's threads."""
    import tensorflow as tf

    from project.data.pipeline import AUTOTUNE, decoded_dataset

    def apply(image):
        return compose(image=image)["image"]

    def augment(image, label):
        return tf.ensure_shape(tf.numpy_function(apply, [image], tf.uint8, stateful=True), [*size, 3]), label

    data = decoded_dataset(files, labels, "files", size, shuffle_seed=0)
    data = data.map(augment, num_parallel_calls=AUTOTUNE, deterministic=False).batch(batch_size)
    data = data.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, CLASSES)), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False  # as the template's pipeline: the comparison is of the design
    return data.prefetch(AUTOTUNE).with_options(options)


def template_dataset(files, labels, size, batch_size, compose, cache="none"):
    """The template's pipeline; a training one (shuffled, augmented) when there is a Compose."""
    from project.data.pipeline import make_dataset

    return make_dataset(
        files,
        labels,
        "files",
        size=size,
        num_classes=CLASSES,
        batch_size=batch_size,
        training=compose is not None,
        augmentation=compose,
        cache=cache,
    )


def cache_epochs(files, labels, size, batch_size, compose=None):
    """Epoch 1 and epoch 2 of a fresh pipeline with the memory cache."""
    data = template_dataset(files, labels, size, batch_size, compose, cache="memory")
    first = timed(lambda: epoch(data))
    return {"first": first, "second": timed(lambda: epoch(data))}


def one_core_probe(arguments):
    """The one-core contenders, in a process pinned to one CPU (run_probe starts it)."""
    method = "sched_setaffinity"
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except AttributeError:  # not Linux
        method = "tf.data threading options"
    from project.data.augment import build_augmentation
    from project.train.runtime import set_determinism

    files, size, batch = arguments["files"], tuple(arguments["size"]), arguments["batch_size"]
    labels = np.arange(len(files)) % CLASSES
    compose = build_augmentation(augmentation(size), seed=0, source="the bench's augmentation")
    with augment_workers(1):
        template = template_dataset(files, labels, size, batch, compose)
    per_image = per_image_dataset(files, labels, size, batch, compose)
    if method != "sched_setaffinity":
        template, per_image = one_worker(template), one_worker(per_image)
    for data in (template, per_image):
        for _ in data.take(2):
            pass
    set_determinism(True)  # the template's default, as in every pipeline row
    return {
        "method": method,
        "bare_loop": timed(lambda: bare_loop(files, compose, size)),
        "template_one_core": timed(lambda: epoch(template)),
        "per_image_one_core": timed(lambda: epoch(per_image)),
    }


def _median(samples, key="images_per_second"):
    values = [s[key] for s in samples if isinstance(s, dict)]
    return statistics.median(values) if values else None


def augment_workers_default():
    from project.data.augment_pool import workers

    return workers()


def _spread(samples, references):
    """min-max of the per-round ratio of two paired lists of timed() samples."""
    ratios = [a["images_per_second"] / b["images_per_second"] for a, b in zip(samples, references)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def data_figures(samples, cores):
    """The pipeline's figures from the samples of every round."""
    rate = {
        name: _median(runs)
        for name, runs in samples.items()
        if name not in ("method", "cache", "cache_augmented", "threads")
    }
    scaling = round(TARGETS["scaling_per_core"] * cores, 2)
    pinned = f"one core ({samples['method'][0]})"
    rows = {
        "bare_loop": figure(
            "bare loop, 1 process (per-core limit)",
            rate["bare_loop"],
            "images/s",
            note=f"cv2.imread + the template's resize + the Compose; {pinned}",
        ),
        "template_one_core": figure(
            "template pipeline, 1 core",
            rate["template_one_core"],
            "images/s",
            "bare loop",
            rate["bare_loop"],
            (">=", TARGETS["per_core"]),
            f"{pinned}: augmentation in the calling process; median of {len(samples['bare_loop'])} interleaved "
            f"rounds, per-round ratio {_spread(samples['template_one_core'], samples['bare_loop'])}",
        ),
        "template_all_cores": figure(
            f"template pipeline, all {cores} cores",
            rate["template_all_cores"],
            "images/s",
            "template, 1 core",
            rate["template_one_core"],
            (">=", scaling),
            f"target 0.8 x {cores} cores; augmentation in "
            + (
                f"{augment_workers_default()} worker processes"
                if augment_workers_default() > 1
                else "tf.data's threads"
            ),
        ),
        "keras_io": figure(
            "keras.io: image_dataset_from_directory + Keras layers",
            rate["keras_io"],
            "images/s",
            note="RandomZoom + RandomFlip + RandomColorJitter mapped in tf.data, all cores",
        ),
        "template_vs_keras_io": figure(
            "template, all cores vs keras.io",
            rate["template_all_cores"],
            "images/s",
            "keras.io",
            rate["keras_io"],
            (">=", TARGETS["keras_io"]),
        ),
    }
    for key, name, note in (
        ("cache_second_epoch", "cache", "no augmentation: what the cache removes (decode + resize)"),
        (
            "cache_second_epoch_augmented",
            "cache_augmented",
            "training pipeline: augmentation still runs every epoch, by design",
        ),
    ):
        first, second = _median([s["first"] for s in samples[name]]), _median([s["second"] for s in samples[name]])
        target = (">=", TARGETS["cache"]) if name == "cache" else None
        rows[key] = figure(
            f"memory cache, epoch 2 ({name.replace('_', ', ')})", second, "images/s", "epoch 1", first, target, note
        )
    threads = {k: statistics.median(s[k] for s in samples["threads"]) for k in ("one_thread", "threads")}
    rows["albumentations_threads"] = figure(
        f"the GIL: the Compose alone in {cores} threads",
        threads["threads"],
        "images/s",
        "1 thread",
        threads["one_thread"],
        note="albumentations' Python code holds the GIL: threads do not add up",
    )
    chosen = "processes" if augment_workers_default() > 1 else "threads"
    for key, where, how in (
        ("threads_all_cores", "tf.data's threads", "numpy_function per batch"),
        ("processes_all_cores", f"{cores} worker processes", "shared-memory batches"),
    ):
        rows[key] = figure(
            f"design: augmentation in {where}, all {cores} cores",
            rate[key],
            "images/s",
            "template, 1 core",
            rate["template_one_core"],
            note=f"{how}; the template's choice here: {chosen}",
        )
    rows["determinism_off_all_cores"] = figure(
        f"template pipeline, all {cores} cores, op determinism off",
        rate["determinism_off_all_cores"],
        "images/s",
        note="runtime.deterministic: false; every other pipeline row has it on, the template's default",
    )
    rows["determinism_pipeline"] = figure(
        "op determinism: the pipeline with it on vs off",
        rate["template_all_cores"],
        "images/s",
        "determinism off",
        rate["determinism_off_all_cores"],
        (">=", TARGETS["determinism"]),
        "all cores, alternating rounds",
    )
    rows["per_image_one_core"] = figure(
        "alternative: numpy_function per image, 1 core",
        rate["per_image_one_core"],
        "images/s",
        "template, 1 core",
        rate["template_one_core"],
        note="the first design: one numpy_function call per image",
    )
    rows["per_image_all_cores"] = figure(
        f"alternative: numpy_function per image, all {cores} cores",
        rate["per_image_all_cores"],
        "images/s",
        "per image, 1 core",
        rate["per_image_one_core"],
        note="the first design, not kept",
    )
    return rows


def measure_data(settings, log=print):
    """Throughput of every contender on generated JPEGs: {figure key: row}, {contender: samples}."""
    from project.data.augment import build_augmentation
    from project.data.augment_pool import usable_cpus

    size = (settings["input_size"],) * 2
    batch = settings["batch_size"]
    cores = usable_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        folder = Path(tmp) / "images"
        files, labels = generate_images(folder, settings["images"], settings["image_size"])
        compose = build_augmentation(augmentation(size), seed=0, source="the bench's augmentation")
        with augment_workers(1):
            threads = template_dataset(files, labels, size, batch, compose)
        with augment_workers(cores):
            processes = template_dataset(files, labels, size, batch, compose)
        datasets = {
            "template_all_cores": template_dataset(files, labels, size, batch, compose),
            "threads_all_cores": threads,
            "processes_all_cores": processes,
            "per_image_all_cores": per_image_dataset(files, labels, size, batch, compose),
            "keras_io": keras_io_dataset(folder, size, batch),
        }
        for data in datasets.values():  # trace the functions, start the thread pools and the workers
            for _ in data.take(2):
                pass
        resized = [decoded(path, size) for path in files[:16]]
        samples = {name: [] for name in ["method", *DATA_FIGURES, "cache", "cache_augmented", "threads"]}
        for round_ in range(settings["rounds"]):
            pinned = run_probe(one_core_probe, {"files": files, "size": size, "batch_size": batch})
            for name in ("method", "bare_loop", "template_one_core", "per_image_one_core"):
                samples[name].append(pinned[name])
            # the template with op determinism off, before the others on even rounds and after them on odd
            # ones: a contender measured always second profits from what the first one warmed up
            runs = [(name, data, True) for name, data in datasets.items()]  # on: the template's default
            off = [("determinism_off_all_cores", datasets["template_all_cores"], False)]
            for name, data, on in off + runs if round_ % 2 == 0 else runs + off:
                with determinism(on):
                    samples[name].append(timed(lambda data=data: epoch(data)))
            samples["cache"].append(cache_epochs(files, labels, size, batch))
            samples["cache_augmented"].append(cache_epochs(files, labels, size, batch, compose))
            samples["threads"].append(thread_scaling(compose, resized, cores))
            log(f"bench-data: round {round_ + 1}/{settings['rounds']} done")
    samples = {name: runs for name, runs in samples.items() if runs}
    return data_figures(samples, cores), samples
