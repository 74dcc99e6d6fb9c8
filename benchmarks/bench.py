"""Benchmarks: `python -m project bench-data` (the input pipeline) and `python -m project bench`
(the pipeline, the template's overhead around model.fit, the tuner's overhead, scaling with the
dataset's size, the accelerator). Figures go to reports/bench/*.json (and bench.md), each with
its reference, ratio, target and met / not met. The bench never fails the build (a target not
met is a figure, not an error) and the tests never time anything.

Throughput is measured on a generated folder of 256x256 JPEGs, for decode + resize to 224 +
RandomResizedCrop + HorizontalFlip + ColorJitter (one albumentations Compose everywhere), in
rounds that alternate the contenders; a figure is the median of its rounds. "One core" figures
come from a subprocess pinned to one CPU with sched_setaffinity: TensorFlow's threads, OpenCV
and any worker process all inherit it, so one core is one core, whatever the design inside
(where affinity is unavailable: tf.data's threading options at 1 and in-process augmentation).
"""

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from project.artifacts import atomic_write, write_json
from project.errors import UserError
from project.paths import REPO_ROOT

CLASSES = 4
FULL = {
    "images": 1000,
    "image_size": 256,
    "input_size": 224,
    "batch_size": 32,
    "rounds": 5,
    "overhead_pairs": 3,
    "steady_epochs": 5,
    "steady_pairs": 2,
    "tuner_trials": [3, 20],
    "tuner_epochs": None,
    "scaling_sizes": [2000, 8000, 32000],
    "rank_trials": 6,
    "rank_epochs": None,
}
QUICK = {
    "images": 24,
    "image_size": 256,
    "input_size": 224,
    "batch_size": 8,
    "rounds": 1,
    "overhead_pairs": 1,
    "steady_epochs": 2,
    "steady_pairs": 1,
    "tuner_trials": [1, 3],
    "tuner_epochs": 1,
    "scaling_sizes": [24, 48, 96],
    "rank_trials": 3,
    "rank_epochs": [2, 4],
}
TARGETS = {
    "per_core": 0.70,
    "scaling_per_core": 0.8,
    "keras_io": 1.0,
    "cache": 3.0,
    "overhead": 1.10,
    "determinism": 0.95,
    "tuner_fixed": 0.15,
    "tuner_share": 0.05,
    "tuner_rss": 1.25,
    "size_rss": 1.10,
    "size_speed": 0.85,
    "accelerator": 0.9,
}
TUNER_LABELS = {
    "tuner_outside_fit_share": "tuner: time outside model.fit per trial",
    "tuner_peak_rss": "tuner: peak RSS",
    "tuner_fixed_share": "tuner: fixed cost of a trial that reuses a compiled model",
}
DATA_FIGURES = [
    "bare_loop",
    "template_one_core",
    "template_all_cores",
    "keras_io",
    "template_vs_keras_io",
    "cache_second_epoch",
    "cache_second_epoch_augmented",
    "albumentations_threads",
    "threads_all_cores",
    "processes_all_cores",
    "per_image_one_core",
    "per_image_all_cores",
    "determinism_off_all_cores",
    "determinism_pipeline",
]
BENCH_FIGURES = DATA_FIGURES + [
    "template_overhead",
    "template_overhead_one_epoch",
    "determinism_epoch",
    "tuner_outside_fit_share",
    "tuner_fixed_share",
    "rank_agreement",
    "tuner_peak_rss",
    "size_peak_rss",
    "size_images_per_second",
    "accelerator",
]


def augmentation(size):
    """The bench's augmentation as a card would write it (project.data.augment builds the Compose)."""
    return [
        {"name": "RandomResizedCrop", "size": list(size)},
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1, "p": 1.0},
    ]


# ------------------------------------------------------------------ generated images


def _write_images(folder, indices, size):
    """Smooth random colour fields plus noise, as JPEG (about 25 KB at 256x256)."""
    from PIL import Image

    for i in indices:
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pixels = np.asarray(small, np.int16) + rng.integers(-20, 21, (size, size, 3))
        path = Path(folder) / f"class{i % CLASSES}" / f"img{i:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate_images(folder, count, size):
    """`count` JPEGs of size x size in folder/class<k>/ (k = index mod 4); returns (files, labels)
    in index order, so that the first n files are a dataset of n images."""
    folder = Path(folder)
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(os.cpu_count() or 1, count // 200))
    chunks = [range(start, count, workers) for start in range(workers)]
    if workers == 1:
        _write_images(folder, chunks[0], size)
    else:  # spawn: this process may already run TensorFlow's threads
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_images, [folder] * workers, chunks, [size] * workers))
    files = [str(folder / f"class{i % CLASSES}" / f"img{i:06d}.jpg") for i in range(count)]
    return files, np.arange(count) % CLASSES


# ------------------------------------------------------------------ measuring


def rss_mb():
    """Resident memory of this process now (Linux /proc), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class PeakRSS:
    """Samples the resident memory every 20 ms while the block runs: `.peak` in MB."""

    def __enter__(self):
        self.peak, self.running = rss_mb(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mb())


@contextlib.contextmanager
def determinism(on):
    """TensorFlow's op determinism on or off inside (the template's runs have it on by default)."""
    from tensorflow.python.framework import config

    from project.train.runtime import set_determinism

    before = config.is_op_determinism_enabled()
    set_determinism(on)
    try:
        yield
    finally:
        set_determinism(before)


def timed(work):
    """(images, wall seconds, CPU seconds of every thread of the process) of work() -> images."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_second": images / wall, "cpu_per_wall": cpu / wall, "seconds": wall}


def epoch(dataset):
    """Iterate one epoch; returns the number of images."""
    return sum(int(x.shape[0]) for x, _ in dataset)


def one_worker(dataset):
    """tf.data's own knobs at one thread (the fallback where CPU affinity is unavailable)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


@contextlib.contextmanager
def augment_workers(count):
    """Datasets built inside augment with `count` processes (1: in the calling process)."""
    before = os.environ.get("PROJECT_AUGMENT_WORKERS")
    os.environ["PROJECT_AUGMENT_WORKERS"] = str(count)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PROJECT_AUGMENT_WORKERS")
        else:
            os.environ["PROJECT_AUGMENT_WORKERS"] = before


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


def template_dataset(files, labels, size, batch_size, compose):
    from project.data.pipeline import make_dataset

    return make_dataset(
        files,
        labels,
        "files",
        size=size,
        num_classes=CLASSES,
        batch_size=batch_size,
        training=True,
        augmentation=compose,
        cache="none",
    )


def cache_epochs(files, labels, size, batch_size, compose=None):
    """Epoch 1 and epoch 2 of a fresh pipeline with the memory cache."""
    from project.data.pipeline import make_dataset

    data = make_dataset(
        files,
        labels,
        "files",
        size=size,
        num_classes=CLASSES,
        batch_size=batch_size,
        training=compose is not None,
        augmentation=compose,
        cache="memory",
    )
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


# ------------------------------------------------------------------ figures


def figure(label, value, unit="", reference=None, reference_value=None, target=None, note=""):
    """One row of the table. `target` is (">=" or "<=", number), checked on the ratio value /
    reference_value, or on the value itself when there is no reference."""
    measured = _number(value)
    ratio = value / reference_value if measured and _number(reference_value) and reference_value else None
    checked = ratio if reference is not None else (value if measured else None)
    if not measured:
        met = "not measured"
    elif target is None:
        met = "-"
    elif checked is None:
        met = "not measured"
    else:
        met = "met" if (checked >= target[1] if target[0] == ">=" else checked <= target[1]) else "not met"
    if not measured and not (isinstance(value, str) and value.startswith("not measured")):
        value = not_measured(f"no value ({value})")
    return {
        "figure": label,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
        "target": f"{target[0]} {target[1]:g}" if target else None,
        "met": met,
        "note": note,
    }


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def not_measured(reason):
    return f"not measured: {reason}"


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
    rows["threads_all_cores"] = figure(
        f"design: augmentation in tf.data's threads, all {cores} cores",
        rate["threads_all_cores"],
        "images/s",
        "template, 1 core",
        rate["template_one_core"],
        note=f"numpy_function per batch; the template's choice here: {chosen}",
    )
    rows["processes_all_cores"] = figure(
        f"design: augmentation in {cores} worker processes, all {cores} cores",
        rate["processes_all_cores"],
        "images/s",
        "template, 1 core",
        rate["template_one_core"],
        note=f"shared-memory batches; the template's choice here: {chosen}",
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
            pinned = run_probe("one_core_probe", {"files": files, "size": size, "batch_size": batch})
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


# ------------------------------------------------------------------ template overhead


def measure_overhead(config, settings, log=print):
    """fit_stages (callbacks, monitors, checkpoints, logs) against a bare model.fit of the same
    model on the same datasets, alternating. The target is on an epoch in steady state: the
    median of epochs 2..n over several alternating pairs of n-epoch runs (each run compiles, so
    its first epoch traces for ~20 s here and swings by +-2 s, more than the callbacks cost).
    One-epoch runs, tracing included, are shown too."""
    import keras

    from project.data.prepare import prepare
    from project.model.classifier import apply_stage, build_model
    from project.train import runtime
    from project.train.metrics import class_weights
    from project.train.training import compile_model, feed_of, fit_stages, training_stats

    class EpochTimes(keras.callbacks.Callback):  # epoch hooks only: the training loop stays asynchronous
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    paper = config.paper
    t = paper.training
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        keras.utils.set_random_seed(paper.seed)
        data = prepare(config, Path(tmp) / "run")
        stats = training_stats(data, paper)
        r = paper.runtime
        run_settings, scope = runtime.apply(r.mixed_precision, r.jit_compile, r.distribution, r.deterministic)
        with scope:
            model, source = build_model(paper.model, data.num_classes, stats, l2=t.l2)
        jit = run_settings["jit_compile"]
        steps = data.steps("train", t.batch_size)
        weights = class_weights(data.labels("train"), data.num_classes) if t.class_weight == "auto" else None
        runs = iter(range(10**6))

        def template(epochs):
            timer = EpochTimes()
            fit_stages(
                model,
                paper,
                data,
                Path(tmp) / f"template{next(runs)}",
                weights=source,
                epochs=epochs,
                verbose=0,
                jit_compile=jit,
                extra_callbacks=[timer],
            )
            return timer.seconds

        def bare(epochs):  # the datasets fit_stages builds, model.fit with no callback but the timer
            timer = EpochTimes()
            val = data.dataset("val", feed_of(paper))
            for stage in t.stages:
                if stage.epochs:
                    apply_stage(model, stage.unfreeze, source)
                    compile_model(model, paper, stage.learning_rate or t.learning_rate, steps, epochs, jit)
                    model.fit(
                        data.dataset("train", feed_of(paper), epochs=(0, epochs)),
                        validation_data=val,
                        epochs=epochs,
                        steps_per_epoch=steps,
                        class_weight=weights,
                        shuffle=False,
                        verbose=0,
                        callbacks=[timer],
                    )
            return timer.seconds

        def pairs(count, epochs):
            runs = {"template": [], "bare": []}
            for k in range(count):
                for name in ("template", "bare") if k % 2 == 0 else ("bare", "template"):
                    start = time.perf_counter()
                    epoch_seconds = (template if name == "template" else bare)(epochs)
                    runs[name].append({"seconds": time.perf_counter() - start, "epochs": epoch_seconds})
                log(
                    f"bench: overhead pair {k + 1}/{count} of {epochs}-epoch runs: template {runs['template'][-1]['seconds']:.2f}s, "
                    f"bare {runs['bare'][-1]['seconds']:.2f}s"
                )
            return runs

        one = pairs(settings["overhead_pairs"], 1)
        steady = pairs(settings["steady_pairs"], settings["steady_epochs"])
        with determinism(False):
            nondeterministic = template(settings["steady_epochs"])
    later = {name: [s for run in runs for s in run["epochs"][1:]] for name, runs in steady.items()}
    once = {name: [run["seconds"] for run in runs] for name, runs in one.items()}
    n = settings["steady_epochs"]

    def spread(values):
        return f"{min(values):.2f}-{max(values):.2f} s"

    rows = {
        "template_overhead": figure(
            "template overhead: an epoch in steady state via fit_stages",
            statistics.median(later["template"]),
            "s",
            "bare model.fit, no callbacks",
            statistics.median(later["bare"]),
            ("<=", TARGETS["overhead"]),
            f"median of epochs 2-{n} of {settings['steady_pairs']} alternating pairs of {n}-epoch runs "
            f"(template {spread(later['template'])}, bare {spread(later['bare'])})",
        ),
        "template_overhead_one_epoch": figure(
            f"template overhead: a 1-epoch run of {config.run_name}, tracing included",
            statistics.median(once["template"]),
            "s",
            "bare model.fit, no callbacks",
            statistics.median(once["bare"]),
            note=f"median of {settings['overhead_pairs']} alternating pairs (template {spread(once['template'])}, "
            f"bare {spread(once['bare'])}); each run compiles, so traces: no target, the swing is the tracing's",
        ),
        "determinism_epoch": figure(
            "op determinism: a later epoch via fit_stages, on vs off",
            statistics.median(later["template"]),
            "s",
            "determinism off",
            statistics.median(nondeterministic[1:]),
            note=f"median of epochs 2-{n}; runtime.deterministic: false for the reference (the card's default is on)",
        ),
    }
    return rows, {"one_epoch": one, "steady": steady, "nondeterministic": nondeterministic}


# ------------------------------------------------------------------ subprocess probes


def run_probe(function, arguments, timeout=3600):
    """benchmarks.bench.<function>(arguments) in a fresh interpreter (its own peak RSS, its own CPU
    affinity); arguments and result travel as JSON on stdin and the last line of stdout."""
    code = f"import json, sys; from benchmarks import bench; print(json.dumps(bench.{function}(json.load(sys.stdin))))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(arguments),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{function} exited with {done.returncode}: {tail}")
    return json.loads(lines[-1])


def tuner_probe(arguments):
    """Keras Tuner search of `trials[0]` trials, resumed up to `trials[1]`: per trial, wall time and
    time inside model.fit (the tuner's meta.json); peak RSS after each search."""
    import io

    from project.config.cards import load_config
    from project.tune.trials import META
    from project.tune.tuning import tune

    config = load_config(arguments["paper"], arguments["dataset"], arguments["overrides"])
    root = Path(arguments["root"])
    result = {}
    start = time.perf_counter()
    for trials in arguments["trials"]:
        with contextlib.redirect_stdout(io.StringIO()):  # stdout carries the JSON result
            tune(config, root, trials=trials, epochs=arguments["epochs"], stage="coarse", verbose=0)
        metas = [json.loads(p.read_text()) for p in sorted((root / "tuning" / "coarse").glob(f"trial_*/{META}"))]
        result[str(trials)] = {
            "search_seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
            "trial_seconds": sum(m["wall_seconds"] for m in metas),
            "fit_seconds": sum(m["fit_seconds"] for m in metas),
            "trials": len(metas),
            "exploded": sum(m["status"] == "exploded" for m in metas),
            "reused_fixed_shares": [
                m["fixed_seconds"] / m["wall_seconds"] for m in metas if m["reused"] and m["status"] == "completed"
            ],
            "first_fixed_shares": [
                m["fixed_seconds"] / m["wall_seconds"] for m in metas if not m["reused"] and m["status"] == "completed"
            ],
        }
    return result


def measure_tuner(config, settings):
    try:
        import project.tune.tuning  # noqa: F401
    except ImportError as error:
        reason = not_measured(f"tuning not available ({error})")
        return {key: figure(label, reason) for key, label in TUNER_LABELS.items()}, {}
    first, last = settings["tuner_trials"]
    epochs = settings["tuner_epochs"] or config.paper.search.coarse.epochs
    with tempfile.TemporaryDirectory(prefix="bench-tuner-") as tmp:
        result = run_probe(
            "tuner_probe",
            {
                "paper": str(config.paper_file or config.paper_name),
                "dataset": str(config.dataset_file or config.dataset_name),
                "overrides": list(config.overrides or []),
                "root": tmp,
                "trials": [first, last],
                "epochs": epochs,
            },
        )
    end = result[str(last)]
    outside = end["trial_seconds"] - end["fit_seconds"]
    rows = {
        "tuner_outside_fit_share": figure(
            TUNER_LABELS["tuner_outside_fit_share"],
            outside / end["trial_seconds"],
            "of trial time",
            target=("<=", TARGETS["tuner_share"]),
            note=f"{end['trials']} trials of {epochs} epochs ({end['exploded']} exploded): "
            f"{end['trial_seconds']:.1f}s in trials, {end['fit_seconds']:.1f}s in model.fit, "
            f"{outside / end['trials']:.2f}s outside per trial; the whole search "
            f"(start-up and resume included) {end['search_seconds']:.1f}s",
        ),
        "tuner_fixed_share": figure(
            TUNER_LABELS["tuner_fixed_share"],
            statistics.median(end["reused_fixed_shares"])
            if end["reused_fixed_shares"]
            else not_measured("no trial reused a compiled model"),
            "of a coarse trial",
            target=("<=", TARGETS["tuner_fixed"]),
            note=f"median over {len(end['reused_fixed_shares'])} trials that reused a compiled model: wall time less epochs x "
            f"their steady epoch time; a trial that builds and traces: "
            + (f"{statistics.median(end['first_fixed_shares']):.2f}" if end["first_fixed_shares"] else "none"),
        ),
        "tuner_peak_rss": figure(
            f"{TUNER_LABELS['tuner_peak_rss']} after {last} trials",
            end["peak_rss_mb"],
            "MB",
            f"after {first} trials",
            result[str(first)]["peak_rss_mb"],
            ("<=", TARGETS["tuner_rss"]),
        ),
    }
    return rows, result


def scaling_probe(arguments):
    """The template's training pipeline (no cache) on the first n of the generated images: images/s
    and peak RSS of one epoch, in a fresh process per n (so one size's leftovers do not count for the next)."""
    from project.data.augment import build_augmentation

    n, size = arguments["size"], (arguments["input_size"],) * 2
    compose = build_augmentation(augmentation(size), seed=0, source="the bench's augmentation")
    data = template_dataset(arguments["files"][:n], np.arange(n) % CLASSES, size, arguments["batch_size"], compose)
    for _ in data.take(2):  # warm up
        pass
    with PeakRSS() as peak:
        run = timed(lambda: epoch(data))
    return {**run, "peak_rss_mb": peak.peak}


def measure_sizes(settings):
    sizes = settings["scaling_sizes"]
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        files, _ = generate_images(Path(tmp) / "images", sizes[-1], settings["input_size"])
        result = {
            str(n): run_probe(
                "scaling_probe",
                {"files": files, "size": n, "input_size": settings["input_size"], "batch_size": settings["batch_size"]},
            )
            for n in sizes
        }
    rates = [result[str(n)]["images_per_second"] for n in sizes]
    details = "; ".join(
        f"{n:,}: {result[str(n)]['images_per_second']:.0f} images/s, {result[str(n)]['peak_rss_mb']:.0f} MB"
        for n in sizes
    )
    rows = {
        "size_peak_rss": figure(
            f"dataset size: peak RSS at {sizes[-1]:,} images",
            result[str(sizes[-1])]["peak_rss_mb"],
            "MB",
            f"at {sizes[0]:,} images",
            result[str(sizes[0])]["peak_rss_mb"],
            ("<=", TARGETS["size_rss"]),
            f"{settings['input_size']}px JPEGs, no cache; {details}",
        ),
        "size_images_per_second": figure(
            "dataset size: slowest images/s across sizes",
            min(rates),
            "images/s",
            "fastest",
            max(rates),
            (">=", TARGETS["size_speed"]),
            "within +-15%",
        ),
    }
    return rows, result


# ------------------------------------------------------------------ rank agreement


def rank_probe(arguments):
    """The same configurations (one search seed) as trials of the coarse length and of the card's full
    length: each trial's best objective at both lengths."""
    import io

    import pandas as pd

    from project.config.cards import load_config
    from project.tune.tuning import tune

    config = load_config(arguments["paper"], arguments["dataset"], arguments["overrides"])
    scores = {}
    for length, epochs in arguments["epochs"].items():
        root = Path(arguments["root"]) / length
        with contextlib.redirect_stdout(io.StringIO()):
            tune(config, root, trials=arguments["trials"], epochs=epochs, stage="coarse", verbose=0)
        table = pd.read_csv(root / "tuning" / "trials.csv")
        scores[length] = table[f"best_{config.paper.search.objective}"].tolist()
    return scores


def measure_rank_agreement(config, settings):
    """Spearman's rank correlation between short-trial and full-length scores of the same configurations:
    how far a coarse trial's ranking can be trusted, which sizes the card's coarse epochs."""
    from scipy.stats import spearmanr

    search = config.paper.search
    short, full = settings["rank_epochs"] or (search.coarse.epochs, sum(s.epochs for s in config.paper.training.stages))
    epochs = {"coarse": short, "full": full}
    with tempfile.TemporaryDirectory(prefix="bench-rank-") as tmp:
        scores = run_probe(
            "rank_probe",
            {
                "paper": str(config.paper_file or config.paper_name),
                "dataset": str(config.dataset_file or config.dataset_name),
                "overrides": list(config.overrides or []),
                "root": tmp,
                "trials": settings["rank_trials"],
                "epochs": epochs,
            },
        )
    pairs = [
        (a, b)
        for a, b in zip(scores["coarse"], scores["full"])
        if a == a and b == b and a is not None and b is not None
    ]
    rho = spearmanr(*zip(*pairs)).statistic if len(pairs) >= 2 else None
    row = figure(
        f"search: rank agreement, {epochs['coarse']}-epoch vs {epochs['full']}-epoch trials",
        rho if rho == rho else not_measured("constant scores"),
        "Spearman rho",
        note=f"{len(pairs)} configurations of the card's space (search seed {search.seed}), {search.objective}; "
        f"coarse {[round(a, 3) for a, _ in pairs]}, full {[round(b, 3) for _, b in pairs]}",
    )
    return {"rank_agreement": row}, {
        **scores,
        "paper": config.paper_name,
        "dataset": config.dataset_name,
        "epochs": epochs,
        "configurations": len(pairs),
        "rho": rho if rho == rho else None,
    }


# ------------------------------------------------------------------ accelerator


def measure_accelerator(config, settings):
    """Training images/s with the real pipeline against the same model fed one in-memory batch."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return figure("accelerator: pipeline-fed vs in-memory training", not_measured("no accelerator")), {}
    from project.data.prepare import prepare
    from project.model.classifier import build_model
    from project.train import runtime
    from project.train.training import compile_model, feed_of

    paper = config.paper
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        data = prepare(config, Path(tmp) / "run")
        r = paper.runtime
        run_settings, scope = runtime.apply(r.mixed_precision, r.jit_compile, r.distribution, r.deterministic)
        with scope:
            model, _ = build_model(paper.model, data.num_classes, None, l2=paper.training.l2)
            train = data.dataset("train", feed_of(paper))
            steps = int(np.ceil(len(data.indices("train")) / paper.training.batch_size))
            compile_model(model, paper, paper.training.learning_rate, steps, 2, run_settings["jit_compile"])
            batch = next(iter(train))
            memory = tf.data.Dataset.from_tensors(batch).repeat(steps)
            model.fit(train, epochs=1, verbose=0)  # warm up: trace, fill the cache
            fed = timed(lambda: model.fit(train, epochs=1, verbose=0) and steps * paper.training.batch_size)
            own = timed(lambda: model.fit(memory, epochs=1, verbose=0) and steps * paper.training.batch_size)
    return figure(
        f"accelerator: {paper.model.backbone} training fed by the pipeline",
        fed["images_per_second"],
        "images/s",
        "same model, in-memory batch",
        own["images_per_second"],
        (">=", TARGETS["accelerator"]),
    ), {"fed": fed, "memory": own}


# ------------------------------------------------------------------ reports


def machine(load_before):
    import cv2
    import PIL

    from project.train.training import device, versions

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "device": device(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {**versions(), "opencv": cv2.__version__, "pillow": PIL.__version__},
    }


def _fmt(value, unit=""):
    if not _number(value):
        return "" if value is None else str(value)
    if unit == "of search time":
        return f"{value:.1%}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def table(figures):
    """Rows of (figure, value, reference, ratio, target, met)."""
    rows = []
    for row in figures.values():
        reference = f"{row['reference']}: {_fmt(row['reference_value'], row['unit'])}" if row["reference"] else ""
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else ""
        rows.append((row["figure"], _fmt(row["value"], row["unit"]), reference, ratio, row["target"] or "", row["met"]))
    return rows


HEADER = ("figure", "value", "reference", "ratio", "target", "met")


def text_table(figures):
    rows = [HEADER, *table(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def markdown(report):
    m = report["machine"]
    lines = [
        f"# Benchmarks ({report['command']}{', quick' if report['quick'] else ''})",
        "",
        f"{m['cpu_count']} CPU cores, {m['device']['type']} ({m['device']['name']}); load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after; {m['platform']}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table(report["figures"])),
        "",
        "Notes:",
        "",
        *(f"- {row['figure']}: {row['note']}" for row in report["figures"].values() if row["note"]),
        "",
    ]
    return "\n".join(lines)


def attempt(name, work, labels, log=print):
    """work() -> (rows, details); on failure, every row of `labels` says why (the bench goes on).
    The details get the section's wall time."""
    start = time.perf_counter()
    try:
        rows, details = work()
    except Exception as error:  # a broken figure must not cost the others
        reason = not_measured(
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        )
        log(f"bench: {name}: {reason}")
        rows, details = {key: figure(label, reason) for key, label in labels.items()}, {"error": reason}
    return rows, {**details, "section_seconds": round(time.perf_counter() - start, 1)}


def output_folder(args):
    """--output (a folder), else <reports-dir>/bench; checked before minutes of measuring."""
    folder = Path(args.output) if args.output else Path(args.reports_dir) / "bench"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"--output {folder}: cannot create this folder for the bench reports ({error.strerror or error}); "
            f"give a writable folder"
        ) from None
    return folder


def report(command, quick, settings, figures, details, load_before):
    return {
        "command": command,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_before),
        "settings": settings,
        "targets": TARGETS,
        "figures": figures,
        "details": details,
    }


def _data_section(settings):
    return attempt(
        "input pipeline", lambda: measure_data(settings), {key: key.replace("_", " ") for key in DATA_FIGURES}
    )


def _print(result):
    m = result["machine"]
    print(
        f"\n{m['cpu_count']} CPU cores, {m['device']['type']}; load average {m['load_average_before']} before, "
        f"{m['load_average_after']} after"
    )
    print(", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    print(text_table(result["figures"]))


def data_cli(args):
    """`python -m project bench-data`: the input pipeline's figures -> <output>/bench_data.json."""
    load_before, path = os.getloadavg(), output_folder(args) / "bench_data.json"
    settings = {**(QUICK if args.quick else FULL), "augmentation": augmentation((224, 224))}
    figures, samples = _data_section(settings)
    result = report("bench-data", args.quick, settings, figures, {"samples": samples}, load_before)
    write_json(path, result)
    _print(result)
    print(f"-> {path}")
    return 0


def cli(config, args):
    """`python -m project bench`: bench-data's figures plus overhead, tuner, dataset size and
    accelerator -> <output>/bench.json and bench.md."""
    load_before, folder = os.getloadavg(), output_folder(args)
    settings = {**(QUICK if args.quick else FULL), "augmentation": augmentation((224, 224)), "config": config.run_name}
    figures, samples = _data_section(settings)
    details = {"samples": samples}
    sections = (
        (
            "overhead",
            lambda: measure_overhead(config, settings),
            {
                "template_overhead": "template overhead",
                "template_overhead_one_epoch": "template overhead, one epoch",
                "determinism_epoch": "op determinism, a later epoch",
            },
        ),
        ("tuner", lambda: measure_tuner(config, settings), TUNER_LABELS),
        (
            "rank agreement",
            lambda: measure_rank_agreement(config, settings),
            {"rank_agreement": "search: rank agreement"},
        ),
        (
            "dataset size",
            lambda: measure_sizes(settings),
            {"size_peak_rss": "dataset size: peak RSS", "size_images_per_second": "dataset size: images/s"},
        ),
        (
            "accelerator",
            lambda: _single("accelerator", measure_accelerator(config, settings)),
            {"accelerator": "accelerator"},
        ),
    )
    for name, work, labels in sections:
        rows, found = attempt(name, work, labels)
        figures.update(rows)
        details[name] = found
    result = report("bench", args.quick, settings, figures, details, load_before)
    write_json(folder / "bench.json", result)
    atomic_write(folder / "bench.md", markdown(result))
    _print(result)
    print(f"-> {folder / 'bench.json'}, {folder / 'bench.md'}")
    return 0


def _single(key, pair):
    row, found = pair
    return {key: row}, found
