"""Artifacts in `runs/`: the layout, atomic writes and the completion marker.

runs/<paper>__<dataset>/
    split.csv, split.json        the one split, reused by every stage
    baseline/  tuned/            a trained model each: model.keras, history.csv, metrics.json, ...
    tuning/                      Keras Tuner state and trials.csv
A run folder is complete only when it holds COMPLETE, written last.
"""

import errno
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from project import faults
from project.errors import UserError

RUNS_DIR = Path(os.environ.get("PROJECT_RUNS", "runs"))
COMPLETE = "COMPLETE"
_UMASK = os.umask(0)
os.umask(_UMASK)


def run_root(config, runs_dir=None):
    return Path(runs_dir or RUNS_DIR) / config.run_name


def atomic_write(path, data, point=None):
    """Write text or bytes to a temporary file beside `path`, then rename: never a partial file.
    `point`: a project.faults kill point of its own between the write and the rename."""
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
        if point:
            faults.checkpoint(point)
        os.replace(tmp, path)
    except BaseException as error:  # an interrupt too: never leave the temporary file behind
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise UserError(cannot_write(path, error.strerror or str(error), error.errno)) from None
        raise


# ------------------------------------------------------------------ full disks and read-only folders

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, a quota, a file-size limit (ulimit -f)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_REASONS = {os.strerror(code): code for code in FULL + READ_ONLY}
_TEXT = re.compile(r"(?:(\S+); )?(" + "|".join(map(re.escape, _REASONS)) + ")")
_H5_FILE = re.compile(r"filename = '([^']+)'")  # h5py's RuntimeError: "file write failed: ..., filename = '...'"


def cannot_write(path, reason, code=None):
    """The one line a failed write becomes: the path, the system's reason, and what to do."""
    if code in FULL:
        advice = "the disk is full or a size limit was reached: free some space, then rerun the same command to resume"
    elif code in READ_ONLY:
        advice = "the folder is read-only or not yours: make it writable, or choose another --runs-dir / --reports-dir"
    else:
        advice = "is the folder writable, is the disk full?"
    return f"cannot write {path}: {reason} ({advice})"


def disk_problem(error):
    """(path or None, reason, errno) when `error`, or one it was raised from, is a full disk or a
    read-only folder; else None. Writers outside our atomic_write say it their own way: an OSError
    without a file name (Keras' CSVLogger), shutil.copytree's list of failed copies, h5py's
    RuntimeError naming the file, or a TensorFlow error whose message is "<path>; No space left on
    device" (TensorBoard's event files, tf.io.gfile in Keras Tuner)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _REASONS.values():
            return error.filename, error.strerror, error.errno
        if isinstance(error, shutil.Error):  # copytree: [(source, destination, reason), ...]
            for _, target, why in (e for e in error.args[0] if len(e) == 3):
                if found := _TEXT.search(str(why)):
                    return target, found.group(2), _REASONS[found.group(2)]
        found = _TEXT.search(str(error))
        if found and not isinstance(error, OSError):
            named = found.group(1) or (_H5_FILE.search(str(error)) or [None, None])[1]
            return named, found.group(2), _REASONS[found.group(2)]
        error = error.__cause__ or error.__context__
    return None


class _Named(io.BytesIO):
    """An in-memory file that Keras takes for `name` (the extension picks the format)."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def __str__(self):
        return self.name


def save_keras(path, save, point=None):
    """`save(file)` (a model's save or save_weights) into memory, then atomic_write to `path`: never a
    partial file, and a full disk is one UserError naming `path`. Written straight to a full disk,
    h5py (under save_weights) crashes the process with a segmentation fault instead of raising."""
    buffer = _Named(str(path))
    save(buffer)
    atomic_write(path, buffer.getvalue(), point)


def save_arrays(path, arrays, point=None):
    """A list of NumPy arrays (a model's get_weights()) as an .npz, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    atomic_write(path, buffer.getvalue(), point)


def load_arrays(path):
    """The list save_arrays wrote, in its order."""
    with np.load(path, allow_pickle=False) as stored:
        return [stored[f"arr_{k}"] for k in range(len(stored.files))]


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
