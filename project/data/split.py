"""The split: stratified train/val/test with a fixed seed, saved once as `split.csv` per
paper x dataset and reused by every later stage, so baseline and tuned models meet the same test set.
"""

import errno
import json
import warnings
from contextlib import ExitStack

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from project import locks, logs
from project.artifacts import atomic_write
from project.errors import UserError

log = logs.get(__name__)


def _carve(indices, labels, fraction, seed):
    """Split `fraction` of indices off, stratified when every class has at least 2 members."""
    stratify = labels[indices]
    counts = np.bincount(stratify)
    if counts[counts > 0].min() < 2 or round(fraction * len(indices)) < len(counts[counts > 0]):
        warnings.warn(
            "a class has too few images to stratify the split: falling back to a plain random split", stacklevel=2
        )
        stratify = None
    rest, part = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(part)


def make_split(labels, split, presplit=None):
    """Subset name per item. Pre-split data keeps its test (and val) subsets; val is carved from
    train when the data has none or the card asks for `val_from_train`."""
    labels = np.asarray(labels)
    subsets = np.empty(len(labels), dtype=object)
    everything = np.arange(len(labels))
    if split.provided and presplit is not None:
        subsets[:] = presplit
        if "test" not in set(presplit):
            raise UserError(
                "dataset card split: provided, but the data has no test subset (test/ folder or split column)"
            )
        if "val" not in set(presplit) or split.val_from_train:
            pool = everything[(presplit == "train") | (presplit == "val")]
            train, val = _carve(pool, labels, split.val, split.seed)
            subsets[train], subsets[val] = "train", "val"
        return subsets.astype(str)
    if presplit is not None:
        log.warning(
            "note: the data comes pre-split, but the dataset card's split is not `provided`: "
            "all subsets are pooled and split again (set split: {provided: true} to keep the given test subset)"
        )
    if split.provided:
        raise UserError(
            "dataset card split: provided, but the adapter returned no subsets; give val/test fractions instead"
        )
    rest, test = _carve(everything, labels, split.test, split.seed)
    train, val = _carve(rest, labels, split.val / (1.0 - split.test), split.seed + 1)
    subsets[train], subsets[val], subsets[test] = "train", "val", "test"
    return subsets.astype(str)


def split_settings(split):
    return split.model_dump(mode="json")


def load_or_make_split(path, sources, split):
    """Reuse `path` (split.csv) when it exists and matches this dataset and card; else write it.
    Under the run folder's `split` lock, waited for: processes that start together (a tuner chief and
    its workers) see either no split or both files, and only the first one writes them."""
    with ExitStack() as stack:
        try:
            stack.enter_context(locks.hold(path.parent, "split", "creating or reading the split", wait=True))
        except OSError as error:  # a read-only copy of runs/: nobody writes its split, read it as it is
            if not (path.exists() and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)):
                raise
        return _load_or_make(path, sources, split)


def _load_or_make(path, sources, split):
    meta_path = path.with_suffix(".json")
    names = np.array(sources.class_names)[sources.labels]
    if path.exists():
        saved = pd.read_csv(path, dtype=str, keep_default_na=False)
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if meta.get("split") != split_settings(split):
            raise UserError(
                f"{path} was made with split {meta.get('split')}, but the dataset card now says {split_settings(split)}. "
                f"Every stage must use the same split: restore the card's split, or move {path.parent} aside to start over"
            )
        if saved["source"].tolist() != list(sources.ids) or saved["label"].tolist() != names.tolist():
            raise UserError(
                f"{path} does not match the dataset any more (images or labels changed since it was written); "
                f"move {path.parent} aside to start over with a new split"
            )
        return saved["subset"].to_numpy()
    subsets = make_split(sources.labels, split, sources.subsets)
    table = pd.DataFrame({"source": sources.ids, "label": names, "subset": subsets})
    # split.json first: a kill between the two writes leaves no split.csv, so the next run writes both
    # again (never a split.csv without the settings it was made with)
    atomic_write(
        meta_path,
        json.dumps(
            {
                "split": split_settings(split),
                "counts": table.groupby(["subset", "label"]).size().unstack(fill_value=0).to_dict(),
            },
            indent=2,
            sort_keys=True,
        ),
    )
    atomic_write(path, table.to_csv(index=False))
    return subsets
