"""The generated dataset the pipeline figures are measured on: smooth random colour fields as JPEGs."""

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.settings import CLASSES


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
