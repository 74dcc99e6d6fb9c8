"""Artifacts in `runs/`: the layout, atomic writes and the completion marker.

runs/<paper>__<dataset>/
    split.csv, split.json        the one split, reused by every stage
    baseline/  tuned/            a trained model each: model.keras, history.csv, metrics.json, ...
    tuning/                      Keras Tuner state and trials.csv
A run folder is complete only when it holds COMPLETE, written last.
"""

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from project import faults
from project.errors import UserError

RUNS_DIR = Path(os.environ.get("PROJECT_RUNS", "runs"))
COMPLETE = "COMPLETE"
_UMASK = os.umask(0)
os.umask(_UMASK)


def run_root(config, runs_dir=None):
    return Path(runs_dir or RUNS_DIR) / config.run_name


def atomic_write(path, data):
    """Write text or bytes to a temporary file beside `path`, then rename: never a partial file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; outputs are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        faults.checkpoint(f"write.{path.name}")
        os.replace(tmp, path)
    except BaseException as error:  # an interrupt too: never leave the temporary file behind
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise UserError(
                f"cannot write {path}: {error.strerror or error} (is the folder writable, is the disk full?)"
            ) from None
        raise


@contextmanager
def atomic_path(path, point=None):
    """A temporary path beside `path`, with its name's suffixes (Keras wants .weights.h5, .keras), for a
    library that writes files itself (model.save_weights, model.save): renamed onto `path` once
    written, so `path` is the old file or the new one, never a part. `point`: a project.faults kill
    point between the write and the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        if point:
            faults.checkpoint(point)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, data):
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    """numpy scalars and arrays in JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def mark_complete(folder):
    atomic_write(Path(folder) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def is_complete(folder):
    return (Path(folder) / COMPLETE).exists()


def require_complete(folder, command):
    """Refuse a missing or interrupted run, naming the command that makes it."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"no run at {folder}: create it with `{command}`")
    if not is_complete(folder):
        raise UserError(
            f"{folder} is an interrupted or unfinished run (no {COMPLETE} marker): rerun `{command}` to finish it"
        )
    return folder


def archive(folder):
    """Move a previous run aside (never delete): <root>/archive/<timestamp>-<name>/."""
    folder = Path(folder)
    if not folder.exists():
        return None
    target = folder.parent / "archive" / f"{time.strftime('%Y%m%d-%H%M%S')}-{folder.name}"
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name}.{suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(target))
    return target
