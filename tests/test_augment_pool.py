"""Augmentation in worker processes: the same results as the Compose in this process, the
fallbacks, and no process left behind when the caller is killed."""

import os
import signal
import subprocess
import sys
import time

import albumentations as A
import numpy as np
import pytest
from conftest import ROOT

from project.data import augment_pool
from project.data.augment import build_augmentation

KEY = [0, 0, 0]  # [seed, epoch, batch index]


def batch(count=5, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_the_number_of_workers(monkeypatch):
    cpus = augment_pool.usable_cpus()
    default = cpus if cpus >= 3 else 1
    for value, expected in (("3", 3), ("0", 1), ("1", 1), ("many", default), ("", default)):
        monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", value)
        assert augment_pool.workers() == expected, value


def test_worker_processes_apply_the_compose(monkeypatch):
    monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", "2")
    images = batch()
    flip = augment_pool.batch_function(build_augmentation([{"name": "HorizontalFlip", "p": 1.0}], seed=0))
    assert np.array_equal(flip(images, KEY), images[:, :, ::-1])
    assert augment_pool._pool is not None and augment_pool._pool.count == 2
    assert (
        len(augment_pool._pool.executor._processes) == 2 and os.getpid() not in augment_pool._pool.executor._processes
    )
    crop = augment_pool.batch_function(build_augmentation([{"name": "RandomResizedCrop", "size": [8, 8]}], seed=0))
    first, second = crop(images, KEY), crop(images, [0, 0, 1])
    assert first.shape == (5, 12, 12, 3) and first.dtype == np.uint8  # resized back to the batch's size
    assert not np.array_equal(first, second)  # every batch draws new parameters
    assert np.array_equal(first, crop(images, KEY))  # from its key alone
    assert np.array_equal(images, batch())  # the input is not touched


def test_one_worker_or_a_compose_that_does_not_pickle_stays_in_this_process(monkeypatch):
    images = batch()
    before = augment_pool._pool
    monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", "1")
    flip = augment_pool.batch_function(build_augmentation([{"name": "VerticalFlip", "p": 1.0}], seed=0))
    assert np.array_equal(flip(images, KEY), images[:, ::-1])
    monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", "2")
    with pytest.warns(UserWarning, match="lambda"):  # albumentations knows it too
        invert = augment_pool.batch_function(A.Compose([A.Lambda(image=lambda image, **kwargs: 255 - image)]))
    assert np.array_equal(invert(images, KEY), 255 - images)
    assert augment_pool._pool is before  # no pool was started or replaced for these


def test_workers_exit_when_their_caller_is_killed():
    code = (
        "import os, time, numpy as np\n"
        "from project.data import augment_pool\n"
        "from project.data.augment import build_augmentation\n"
        "if __name__ == '__main__':\n"
        "    os.environ['PROJECT_AUGMENT_WORKERS'] = '2'\n"
        "    apply = augment_pool.batch_function(build_augmentation([{'name': 'HorizontalFlip'}], seed=0))\n"
        "    apply(np.zeros((4, 8, 8, 3), np.uint8), [0, 0, 0])\n"
        "    print(*augment_pool._pool.executor._processes, flush=True)\n"
        "    time.sleep(120)\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    workers = [int(pid) for pid in caller.stdout.readline().split()]
    assert len(workers) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in workers)
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
