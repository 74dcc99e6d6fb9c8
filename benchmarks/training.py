"""Around model.fit: the template's overhead, the pipeline across dataset sizes, and the accelerator
fed by the pipeline."""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.images import generate_images
from benchmarks.measure import PeakRSS, determinism, epoch, run_probe, timed
from benchmarks.pipeline import template_dataset
from benchmarks.settings import CLASSES, TARGETS, augmentation
from benchmarks.table import figure, not_measured


def measure_overhead(config, settings, log=print):
    """fit_stages (callbacks, monitors, checkpoints, logs) against a bare model.fit of the same
    model on the same datasets, alternating. The target is on an epoch in steady state: per pair,
    the mean epoch of epochs 2..n (resume-state writes included) of the template over the bare
    run's; then the geometric mean over an even number of pairs whose order alternates, since the
    run measured second in a pair is the slower one whichever it is (0.88 vs 1.22 in one bench).
    Each run compiles, so its first epoch traces for ~20 s here and swings by +-2 s, more than the
    callbacks cost: one-epoch runs, tracing included, are shown without a target."""
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
                    apply_stage(model, stage.unfreeze, source, stage.train_batchnorm)
                    compile_model(model, paper, stage.learning_rate or t.learning_rate, steps, epochs, jit, stage=stage)
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
    n = settings["steady_epochs"]
    later = {name: [run["epochs"][1:] for run in runs] for name, runs in steady.items()}
    per_pair = [statistics.fmean(t) / statistics.fmean(b) for t, b in zip(later["template"], later["bare"])]
    ratio = statistics.geometric_mean(per_pair)
    bare_epoch = statistics.fmean(s for run in later["bare"] for s in run)
    once = {name: [run["seconds"] for run in runs] for name, runs in one.items()}

    def spread(values):
        return f"{min(values):.2f}-{max(values):.2f} s"

    rows = {
        "template_overhead": figure(
            "template overhead: an epoch in steady state via fit_stages",
            ratio * bare_epoch,
            "s",
            "bare model.fit, no callbacks",
            bare_epoch,
            ("<=", TARGETS["overhead"]),
            f"geometric mean over {len(per_pair)} order-alternating pairs of {n}-epoch runs of the ratio of mean "
            f"epochs 2-{n}, resume-state writes included (per pair {', '.join(f'{r:.2f}' for r in per_pair)}); "
            f"value = ratio x the bare mean epoch",
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
            statistics.fmean(s for run in later["template"] for s in run),
            "s",
            "determinism off",
            statistics.fmean(nondeterministic[1:]),
            note=f"mean of epochs 2-{n}; runtime.deterministic: false for the reference (the card's default is on)",
        ),
    }
    return rows, {"one_epoch": one, "steady": steady, "nondeterministic": nondeterministic}


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
    """Each size in its own process, in rounds that go through every size (a run swings with the
    machine's load by more than the target's 15%): per size the median images/s and the highest
    peak RSS over the rounds."""
    sizes, rounds = settings["scaling_sizes"], settings["scaling_rounds"]
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        files, _ = generate_images(Path(tmp) / "images", sizes[-1], settings["input_size"])
        runs = {str(n): [] for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                arguments = {
                    "files": files,
                    "size": n,
                    "input_size": settings["input_size"],
                    "batch_size": settings["batch_size"],
                }
                runs[str(n)].append(run_probe(scaling_probe, arguments))
    result = {
        n: {
            "images_per_second": statistics.median(run["images_per_second"] for run in samples),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in samples),
            "rounds": samples,
        }
        for n, samples in runs.items()
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
            f"within +-15%; median of {rounds} interleaved rounds per size",
        ),
    }
    return rows, result


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
