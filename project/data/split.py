"""The split: stratified train/val/test with a fixed seed, saved once as `split.csv` per
paper x dataset and reused by every later stage, so baseline and tuned models meet the same test set.

With `split.folds: k` the data outside the test subset is cut into k stratified folds
(scikit-learn's StratifiedKFold); run k trains on the other folds and validates on fold k
(`fold_view`). With `split.group_by` every group (a patient, a leaf) stays within one subset and one
fold (StratifiedGroupKFold): the test and val subsets are then one of round(1 / fraction) group folds,
so their fractions are met to the nearest 1/n. split.csv records each item's subset, its fold and
its group.
"""

import errno
import json
import re
import warnings
from contextlib import ExitStack

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold, train_test_split

from project import locks, logs
from project.artifacts import atomic_write
from project.errors import UserError

log = logs.get(__name__)


def _carve(indices, labels, fraction, seed, groups=None, key="split.test"):
    """Split `fraction` of indices off, stratified when every class has at least 2 members; by
    whole groups when `groups` are given (`key` names the card value in errors)."""
    if groups is not None:
        return _carve_groups(indices, labels, fraction, seed, groups, key)
    stratify = labels[indices]
    counts = np.bincount(stratify)
    if counts[counts > 0].min() < 2 or round(fraction * len(indices)) < len(counts[counts > 0]):
        warnings.warn(
            "a class has too few images to stratify the split: falling back to a plain random split", stacklevel=2
        )
        stratify = None
    rest, part = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(part)


def _carve_groups(indices, labels, fraction, seed, groups, key):
    """One of round(1 / fraction) stratified group folds: whole groups, classes balanced as far as they allow."""
    parts = max(2, round(1 / fraction))
    _check_groups(groups[indices], parts, f"the {key.split('.')[-1]} subset ({key})", f"raise {key}")
    return _group_folds(indices, labels, groups, parts, seed)[0]


def _check_groups(groups, parts, what, advice):
    """Enough groups for `parts` held-out parts, and no group larger than one part should hold."""
    names, sizes = np.unique(groups, return_counts=True)
    if len(names) < parts:
        raise UserError(
            f"dataset card split.group_by: {len(names)} groups cannot fill {parts} held-out parts for {what}; "
            f"each part needs at least one whole group: use a finer group_by, or {advice}"
        )
    target = len(groups) / parts
    if sizes.max() > target:
        big = str(names[sizes.argmax()])
        raise UserError(
            f"dataset card split.group_by: group {big!r} holds {sizes.max()} of {len(groups)} images, more than "
            f"{what} should hold ({target:.0f}, one {parts}th): a group must fit in the part it lands in. "
            f"Use a finer group_by, or {advice}"
        )


def _group_folds(indices, labels, groups, parts, seed):
    """StratifiedGroupKFold's folds of `indices` as [(rest, held out)], sorted indices (_check_groups first).
    When every class is smaller than `parts` (StratifiedGroupKFold refuses), plain GroupKFold, with a warning."""
    splitter = StratifiedGroupKFold(parts, shuffle=True, random_state=seed)
    if np.bincount(labels[indices]).max() < parts:
        warnings.warn(
            "a class has too few images to stratify the split: falling back to a plain group split", stacklevel=4
        )
        splitter = GroupKFold(parts, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class smaller than `parts` is stratified as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [
            (np.sort(indices[rest]), np.sort(indices[held]))
            for rest, held in splitter.split(indices, labels[indices], groups[indices])
        ]
    return folds


def _folds(indices, labels, split, groups, names):
    """Fold number 1..k of each of `indices` (the data outside the test subset)."""
    k = split.folds
    counts = np.bincount(labels[indices], minlength=len(names) if names else 0)
    smallest = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
    if k > counts[smallest]:
        name = names[smallest] if names else str(smallest)
        raise UserError(
            f"dataset card split.folds: {k} folds, but class {name!r} has only {counts[smallest]} images outside "
            f"the test subset: at most {counts[smallest]} folds (every fold's val set needs an image of each class)"
        )
    numbers = np.zeros(len(labels), dtype=np.int64)
    if groups is not None:
        _check_groups(groups[indices], k, f"one fold's val set (split.folds {k})", "use fewer folds")
        held_out = [held for _, held in _group_folds(indices, labels, groups, k, split.seed + 1)]
    else:
        splitter = StratifiedKFold(k, shuffle=True, random_state=split.seed + 1)
        held_out = [indices[held] for _, held in splitter.split(indices, labels[indices])]
    for number, held in enumerate(held_out, start=1):
        numbers[held] = number
    return numbers


def assign(labels, split, presplit=None, groups=None, names=None):
    """(subset per item, fold per item). Pre-split data keeps its test (and val) subsets; val is carved
    from train when the data has none or the card asks for `val_from_train`. With split.folds the
    non-test items are all 'train' with their fold 1..k (0: not in a fold), and fold_view makes each
    fold's subsets. `groups` (groups_of) keeps each group whole; `names` are the class names, for errors."""
    labels = np.asarray(labels)
    subsets = np.empty(len(labels), dtype=object)
    folds = np.zeros(len(labels), dtype=np.int64)
    everything = np.arange(len(labels))
    if split.provided and presplit is not None:
        subsets[:] = presplit
        if "test" not in set(presplit):
            raise UserError(
                "dataset card split: provided, but the data has no test subset (test/ folder or split column)"
            )
        pool = everything[(presplit == "train") | (presplit == "val")]
        if split.folds:
            subsets[pool] = "train"
            folds = _folds(pool, labels, split, groups, names)
        elif "val" not in set(presplit) or split.val_from_train:
            train, val = _carve(pool, labels, split.val, split.seed, groups, "split.val")
            subsets[train], subsets[val] = "train", "val"
        return subsets.astype(str), folds
    if presplit is not None:
        log.warning(
            "note: the data comes pre-split, but the dataset card's split is not `provided`: "
            "all subsets are pooled and split again (set split: {provided: true} to keep the given test subset)"
        )
    if split.provided:
        raise UserError(
            "dataset card split: provided, but the adapter returned no subsets; give val/test fractions instead"
        )
    rest, test = everything, everything[:0]
    if split.test > 0:
        rest, test = _carve(everything, labels, split.test, split.seed, groups, "split.test")
    subsets[test] = "test"
    if split.folds:
        subsets[rest] = "train"
        return subsets.astype(str), _folds(rest, labels, split, groups, names)
    train, val = _carve(rest, labels, split.val / (1.0 - split.test), split.seed + 1, groups, "split.val")
    subsets[train], subsets[val] = "train", "val"
    return subsets.astype(str), folds


def fold_view(subsets, folds, fold=None):
    """The subsets one run sees: fold k's items are its val set, the other folds train (fold None:
    the first). Without folds (all 0) the subsets themselves."""
    folds = np.asarray(folds)
    if not folds.any():
        return np.asarray(subsets)
    return np.where(folds == (fold or 1), "val", subsets).astype(str)


def parts(subsets, folds):
    """Where each item is held out: its subset, or 'fold<k>' for cross-validated items (the data check's
    view: a group in two of these is in two subsets of some run)."""
    return np.array([f"fold{f}" if f else s for s, f in zip(subsets, folds)], dtype=str)


def make_split(labels, split, presplit=None, groups=None, fold=None, names=None):
    """Subset name per item, as run `fold` sees it (assign, then fold_view)."""
    return fold_view(*assign(labels, split, presplit, groups, names), fold)


def groups_of(sources, group_by):
    """The group of each item (an array of str), or None without `group_by`. A regular expression is
    searched in each source id (as split.csv lists it): the group is its first capture group if it has
    one, else the whole match; `column:NAME` takes a column of the csv adapter's manifest. An item the
    pattern does not match, or with a blank column, is a group of its own (with a warning)."""
    if group_by is None:
        return None
    ids = [str(i) for i in sources.ids]
    if group_by.startswith("column:"):
        name = group_by.removeprefix("column:").strip()
        columns = getattr(sources, "columns", None) or {}
        if name not in columns:
            raise UserError(
                f"dataset card split.group_by: {group_by}: no manifest column {name!r}; "
                + (
                    f"columns: {', '.join(columns)}"
                    if columns
                    else "only the csv adapter reads a manifest: group by a regular expression on the file names instead"
                )
            )
        found = [str(v).strip() or None for v in columns[name]]
    else:
        pattern = re.compile(group_by)
        matches = [pattern.search(i) for i in ids]
        found = [None if m is None else (m.group(1) if pattern.groups and m.group(1) else m.group(0)) for m in matches]
        if ids and all(g is None for g in found):
            raise UserError(
                f"dataset card split.group_by: '{group_by}' matches no source id (e.g. {', '.join(ids[:3])}); "
                f"the pattern is searched in each path as split.csv lists it"
            )
    alone = [i for i, g in zip(ids, found) if g is None]
    if alone:
        log.warning(
            f"split.group_by '{group_by}': {len(alone)} of {len(ids)} images have no group (e.g. {alone[0]}); "
            f"each is a group of its own"
        )
    return np.array([g if g is not None else f"(own) {i}" for i, g in zip(ids, found)], dtype=object).astype(str)


def split_settings(split):
    """The card's split as split.json records it; keys left at None are left out, so a split.json
    written before a key existed still matches a card that does not use it."""
    return {k: v for k, v in split.model_dump(mode="json").items() if v is not None}


def load_or_make_assignment(path, sources, split):
    """(subsets, folds, groups): reuse `path` (split.csv) when it exists and matches this dataset and
    card; else write it (with split.json). Under the run folder's `split` lock, waited for: processes
    that start together (a tuner chief and its workers) see either no split or both files, and only
    the first one writes them."""
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
    groups = groups_of(sources, split.group_by)
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
        folds = saved["fold"].replace("", "0").astype(np.int64).to_numpy() if "fold" in saved else np.zeros(len(saved))
        return saved["subset"].to_numpy(), folds.astype(np.int64), groups
    subsets, folds = assign(sources.labels, split, sources.subsets, groups, list(sources.class_names))
    table = pd.DataFrame({"source": sources.ids, "label": names, "subset": subsets})
    if split.folds:
        table["fold"] = [str(f) if f else "" for f in folds]
    if groups is not None:
        table["group"] = groups
    record = {
        "split": split_settings(split),
        "counts": table.groupby(["subset", "label"]).size().unstack(fill_value=0).to_dict(),
    }
    if split.folds:
        held = table[folds > 0]
        record["fold_counts"] = held.groupby(["fold", "label"]).size().unstack(fill_value=0).to_dict()
    if groups is not None:
        record["groups"] = int(len(set(groups)))
    # split.json first: a process that finds split.csv (a tuner worker starting beside the chief)
    # then always finds the settings it was made with
    atomic_write(meta_path, json.dumps(record, indent=2, sort_keys=True))
    atomic_write(path, table.to_csv(index=False))
    return subsets, folds, groups


def load_or_make_split(path, sources, split, fold=None):
    """The subsets run `fold` sees (fold_view of load_or_make_assignment)."""
    subsets, folds, _ = load_or_make_assignment(path, sources, split)
    return fold_view(subsets, folds, fold)
