"""Measuring tools: wall and CPU time, resident memory, op determinism and augmentation workers
switched for a block, and probes run in a fresh interpreter."""

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from project.paths import REPO_ROOT


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


def run_probe(function, arguments, timeout=3600):
    """function(arguments) in a fresh interpreter (its own peak RSS, its own CPU affinity): `function`
    is a module-level function of benchmarks/, imported there by its module and name; arguments and
    result travel as JSON on stdin and the last line of stdout."""
    code = (
        f"import json, sys; from {function.__module__} import {function.__name__} as probe; "
        "print(json.dumps(probe(json.load(sys.stdin))))"
    )
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
        raise RuntimeError(f"{function.__name__} exited with {done.returncode}: {tail}")
    return json.loads(lines[-1])
