"""Augmentation in worker processes. albumentations' Python code holds the GIL: two threads run a
Compose no faster than one (`make bench-data` shows it), so tf.data's threads cannot scale it.
A batch goes to the workers through shared memory, each worker augments a slice of it in place,
the caller copies the result out. Below 3 usable CPUs it stays in the calling process.

No TensorFlow here: the workers import only this module (numpy, OpenCV, albumentations) and
start from a clean forkserver, never as forks of a process running TensorFlow's threads; they
exit when their parent goes. Shared-memory blocks belong to the parent, which unlinks them at
exit (its resource tracker does it if the parent is killed).
"""

import atexit
import copy
import itertools
import os
import pickle
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context, shared_memory

import numpy as np

from project import logs

log = logs.get(__name__)

KEEP = 8  # composes and shared-memory blocks a worker keeps open
MIN_CPUS = 3  # worker processes from this many usable CPUs on
SHM = "/dev/shm"
_lock = threading.Lock()
_pool = None
_tokens = itertools.count()
_unavailable = []  # why the workers cannot run in this process, once found


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def workers():
    """Augmentation processes: PROJECT_AUGMENT_WORKERS, else one per usable CPU from 3 CPUs on;
    1 = in the calling process. In-process augmentation gets one core at most (the GIL) while
    decoding runs in parallel; worker processes cost ~15% more CPU per image (copies, hand-offs).
    On 2 cores threads are ahead (measured), from 3 on the processes (one core of augmentation
    is then the limit)."""
    value = os.environ.get("PROJECT_AUGMENT_WORKERS", "").strip()
    if value.isdigit():
        return max(1, int(value))
    cpus = usable_cpus()
    return cpus if cpus >= MIN_CPUS else 1


def image_seeds(key, count):
    """One seed per image of the batch keyed [seed, epoch, batch index]: the same images get the
    same draws whichever process or thread augments them, and whatever the number of workers."""
    return np.random.SeedSequence([int(k) for k in key]).generate_state(count)


def augment_in_place(compose, images, start, stop, seeds):
    """images[start:stop] = compose(image) each, with images[i] seeded by seeds[i - start],
    resized back to the batch's size if needed."""
    import cv2

    height, width = images.shape[1:3]
    for i, seed in zip(range(start, stop), seeds):
        # one generator pair shared by the transforms: set_random_seed builds a pair per transform,
        # 80 us an image here, an eighth of the Compose's own time
        compose.set_random_state(np.random.default_rng(int(seed)), random.Random(int(seed)))
        out = compose(image=images[i])["image"]  # images[i] is ours to overwrite: no copy
        images[i] = (
            out
            if out.shape[:2] == (height, width)
            else cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        )


# ------------------------------------------------------------------ worker side

_composes, _blocks = OrderedDict(), OrderedDict()


def _alive(pid):
    if os.name != "posix":  # spawned directly by the caller
        return os.getppid() == pid
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _start_worker(caller):
    import cv2

    cv2.setNumThreads(0)

    def watch():  # the caller is gone (killed, say): nothing will come; the forkserver then exits too
        while _alive(caller):
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _cached(cache, key, make):
    if key not in cache:
        cache[key] = make()
        if len(cache) > KEEP:
            old = cache.popitem(last=False)[1]
            if hasattr(old, "close"):
                old.close()
    cache.move_to_end(key)
    return cache[key]


def _work(key, blob, name, shape, start, stop, seeds):
    compose = _cached(_composes, key, lambda: pickle.loads(blob))
    block = _cached(_blocks, name, lambda: shared_memory.SharedMemory(name=name))
    augment_in_place(compose, np.ndarray(shape, np.uint8, buffer=block.buf), start, stop, seeds)


# ------------------------------------------------------------------ parent side


class Pool:
    """Worker processes plus reusable shared-memory blocks, one block per batch in flight."""

    def __init__(self, count):
        context = get_context("forkserver" if os.name == "posix" else "spawn")
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload([__name__, "cv2", "albumentations"])
        self.count = count
        self.executor = ProcessPoolExecutor(
            count, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
        )
        self.free, self.every, self.lock = {}, [], threading.Lock()

    def _take(self, size):
        with self.lock:
            if self.free.get(size):
                return self.free[size].pop()
        if os.path.isdir(SHM) and os.statvfs(SHM).f_bavail * os.statvfs(SHM).f_frsize < 2 * size:
            raise OSError(f"{SHM} has less than {2 * size / 2**20:.0f} MB free")  # writing past it is a SIGBUS
        block = shared_memory.SharedMemory(create=True, size=size)
        with self.lock:
            self.every.append(block)
        return block

    def augment(self, key, blob, images, seeds):
        """A uint8 batch (N, H, W, 3) augmented by the workers (images[i] seeded by seeds[i]), as a new array."""
        block = self._take(images.nbytes)
        try:
            shared = np.ndarray(images.shape, np.uint8, buffer=block.buf)
            shared[...] = images
            bounds = np.linspace(0, len(images), min(self.count, len(images)) + 1).astype(int)
            futures = [
                self.executor.submit(_work, key, blob, block.name, images.shape, int(a), int(b), seeds[a:b])
                for a, b in zip(bounds[:-1], bounds[1:])
            ]
            for future in futures:
                future.result()
            return shared.copy()
        finally:
            with self.lock:
                self.free.setdefault(block.size, []).append(block)

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)
        for block in self.every:
            block.close()
            block.unlink()
        self.every, self.free = [], {}


def pool(count):
    global _pool
    with _lock:
        if _pool is None or _pool.count != count:
            if _pool is not None:
                _pool.close()
            _pool = Pool(count)
            atexit.register(_pool.close)
        return _pool


def batch_function(compose):
    """(numpy (N, H, W, 3) uint8, key [seed, epoch, batch index]) -> augmented copy: in worker
    processes when workers() gives more than one and the Compose pickles, else in this process;
    the same result either way. If the workers cannot run (no room in /dev/shm, a script without
    `if __name__ == "__main__":`), it says so once and stays here."""
    count, blob = workers(), None
    if count > 1 and not _unavailable:
        try:
            blob = pickle.dumps(compose)
        except Exception:  # e.g. A.Lambda with a local function
            blob = None
    token, local = f"{os.getpid()}-{next(_tokens)}", threading.local()

    def apply(images, key):
        seeds = image_seeds(key, len(images))
        if blob is not None and not _unavailable:
            try:
                return pool(count).augment(token, blob, images, seeds)
            except (BrokenProcessPool, OSError) as error:
                if not _unavailable:
                    _unavailable.append(f"{type(error).__name__}: {error}")
                    log.warning(
                        f"warning: augmentation worker processes unavailable ({_unavailable[0]}); augmenting in this "
                        "process, on one core (a script that trains needs `if __name__ == '__main__':`)"
                    )
        if not hasattr(local, "compose"):  # reseeded per image: one copy per tf.data thread
            local.compose = copy.deepcopy(compose)
        out = images.copy()
        augment_in_place(local.compose, out, 0, len(out), seeds)
        return out

    return apply
