"""The dataset card's `label_map`: the adapter's raw labels -> the classes the model learns.

Applied to what the adapter returned, before the data check and the split, so every stage sees
the same classes. A mapping renames (NORMAL: normal), merges (BACTERIA: pneumonia, VIRUS: pneumonia)
or leaves labels out (unsure: _drop); a list of bins grades numbers ([{max: 0.5, name: benign},
{max: 1, name: malignant}]: a value goes to the first bin whose max it does not exceed).
Every raw label must be accounted for and every key must exist, so a typo is an error, not a
silently lost class.
"""

from dataclasses import replace

import numpy as np

from project import logs
from project.config.layouts import DROP
from project.errors import UserError

log = logs.get(__name__)


def apply_label_map(sources, label_map, classes=None):
    """Sources with labels mapped: class names in the card's `classes` order, else in the map's
    order; the items of dropped labels left out, each listed as a `dropped_label` issue."""
    raw = list(sources.class_names)
    target = _bins(raw, label_map) if isinstance(label_map, list) else _mapping(raw, label_map)
    names = list(classes) if classes else _order(label_map)
    index = {name: i for i, name in enumerate(names)}
    per_raw = np.array([index.get(target[name], -1) for name in raw], dtype=np.int64)
    labels = per_raw[sources.labels]
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    empty = [name for name, count in zip(names, counts) if not count]
    if empty:
        raise UserError(
            f"dataset card label_map: class {', '.join(map(repr, empty))} gets no images "
            f"(the raw labels with images: {_listing(_present(sources))}); map a raw label to it, or remove it"
        )
    keep = np.flatnonzero(labels >= 0)
    dropped = [
        (sources.ids[i], "dropped_label", f"raw label {raw[sources.labels[i]]!r} is mapped to {DROP} by label_map")
        for i in np.flatnonzero(labels < 0)
    ]
    if dropped:
        left_out = sorted({raw[sources.labels[i]] for i in np.flatnonzero(labels < 0)})
        log.info(f"label_map: {len(dropped)} image(s) of raw label {', '.join(left_out)} left out ({DROP})")
    items = sources.items[keep] if isinstance(sources.items, np.ndarray) else [sources.items[i] for i in keep]
    return replace(
        sources,
        items=items,
        labels=labels[keep],
        class_names=names,
        ids=[sources.ids[i] for i in keep],
        subsets=None if sources.subsets is None else np.asarray(sources.subsets)[keep],
        issues=list(sources.issues) + dropped,
        columns={name: [values[i] for i in keep] for name, values in sources.columns.items()},
    )


def _mapping(raw, label_map):
    """raw label -> class name (or DROP); every raw label mapped, every key a raw label."""
    unknown = [key for key in label_map if key not in raw]
    if unknown:
        raise UserError(
            f"dataset card label_map: raw label {', '.join(map(repr, unknown))} is not in the data; "
            f"the adapter's raw labels: {_listing(raw)}"
        )
    missing = [name for name in raw if name not in label_map]
    if missing:
        raise UserError(
            f"dataset card label_map: raw label {', '.join(map(repr, missing[:10]))} has no entry; "
            f"map each raw label to a class, or to {DROP} to leave its images out"
        )
    return dict(label_map)


def _bins(raw, bins):
    """raw label (a number) -> the name of the first bin whose max it does not exceed."""
    target = {}
    for name in raw:
        try:
            value = float(name)
        except ValueError:
            raise UserError(
                f"dataset card label_map: bins grade numeric labels, but raw label {name!r} is not a number; "
                f"give a mapping (raw label: class) instead"
            ) from None
        chosen = next((b.name for b in bins if value <= b.max), None)
        if chosen is None:
            raise UserError(
                f"dataset card label_map: raw label {name} is above the last bin's max ({bins[-1].max:g}); "
                f"raise that max or add a bin"
            )
        target[name] = chosen
    return target


def _order(label_map):
    """The classes in the order the map first names them (the bins' order for grades)."""
    names = [b.name for b in label_map] if isinstance(label_map, list) else list(label_map.values())
    return [name for name in dict.fromkeys(names) if name != DROP]


def _present(sources):
    counts = np.bincount(sources.labels, minlength=len(sources.class_names))
    return [name for name, count in zip(sources.class_names, counts) if count]


def _listing(names, limit=20):
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")
