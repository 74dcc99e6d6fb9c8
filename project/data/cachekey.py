"""What a cache was built from, so that it is used only for the data it holds.

Three caches use it: the tf.data disk cache (runtime.cache: disk, project.data.pipeline), the data
check's scan (data_scan.csv, project.data.datacheck) and its converted copies (converted/). Each
keeps a small manifest beside it (written with atomic_write) holding its settings (image size, kind,
the code's version of what it computes) and, item by item, what it was built from: a file's size and
modification time, or a hash of an image held in memory. A cache whose manifest differs in anything
is rebuilt, and one log line says why:

    cache for val_16x16 rebuilt: 1 image changed (data/cat/cat_3.png)

Sizes and modification times, not content hashes, for files: a stat per file costs microseconds,
hashing a dataset costs a full read; an edited file gets a new modification time.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from project.artifacts import atomic_write

FORMAT = 1
EXAMPLES = 3  # items named in a log line


def stat(path):
    """[size, mtime_ns] of a file, None when it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def digest(data):
    """A short content hash of bytes or a contiguous buffer."""
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def signature(item, kind):
    """What a cache entry of one item depends on: a file's [size, mtime_ns], else a hash of the image."""
    if kind == "files":
        return stat(item)
    return digest(np.ascontiguousarray(item).data if kind == "array" else item)


def manifest(settings, items=None, kind="files", labels=None, keys=None):
    """A cache's manifest: its settings and, in the order the cache holds them, [key, label, signature]
    per item; the key names the item in a log line: a file's path, else `keys` (positions by default)."""
    entries = None
    if items is not None:
        if kind == "files":
            keys = [str(path) for path in items]
        else:
            keys = [str(k) for k in (range(len(items)) if keys is None else keys)]
        labels = [None] * len(keys) if labels is None else [int(label) for label in labels]
        entries = [[key, label, signature(item, kind)] for key, label, item in zip(keys, labels, items)]
    return {"format": FORMAT, "settings": settings, "items": entries}


def _listed(keys, noun, how):
    count = len(keys)
    if not count:
        return []
    shown = ", ".join(keys[:EXAMPLES]) + (", ..." if count > EXAMPLES else "")
    return [f"{count} {noun}{'s' if count > 1 else ''} {how} ({shown})"]


def item_changes(old, new, noun="image"):
    """Phrases for what differs between two {key: signature} maps: changed, added, gone."""
    changed = [k for k in new if k in old and old[k] != new[k]]
    return (
        _listed(changed, noun, "changed")
        + _listed([k for k in new if k not in old], noun, "added")
        + _listed([k for k in old if k not in new], noun, "gone")
    )


def differences(old, new):
    """Why a cache built as `old` (a manifest, or None) does not hold what `new` describes; [] when it does."""
    if not old:
        return ["no record of what it was built from"]
    if old.get("format") != new["format"]:
        return [f"manifest format {old.get('format')} -> {new['format']}"]
    reasons = [
        f"{key} {old['settings'].get(key)} -> {value}"
        for key, value in new["settings"].items()
        if old["settings"].get(key) != value
    ]
    reasons += [f"{key} {value} -> none" for key, value in old["settings"].items() if key not in new["settings"]]
    if new["items"] is None:
        return reasons
    if old.get("items") is None:
        return [*reasons, "no record of its images"]
    before = {key: sign for key, _, sign in old["items"]}
    after = {key: sign for key, _, sign in new["items"]}
    reasons += item_changes(before, after)
    labels = {key: label for key, label, _ in old["items"]}
    relabelled = [key for key, label, _ in new["items"] if key in labels and labels[key] != label]
    reasons += _listed(relabelled, "label", "changed")
    if not reasons and [e[0] for e in old["items"]] != [e[0] for e in new["items"]]:
        reasons.append("written in another order (another seed)")
    return reasons


def read(path):
    """The manifest at `path`, None when missing or unreadable (a cache without one is rebuilt)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write(path, data):
    atomic_write(path, json.dumps(data, separators=(",", ":")) + "\n")
