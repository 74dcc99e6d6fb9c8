"""The search space as plain data, and the coarse -> fine math (no TensorFlow, no Keras Tuner).

A space maps a hyperparameter name (schema.SEARCHABLE) to one entry:
    {"type": "float" | "int", "min", "max", "sampling": "linear" | "log", "step"}
    {"type": "choice", "choices": [...], "text": bool}   text: mixed types, kept as YAML strings
    {"type": "fixed", "value": v}                          a choice narrowed to one value
"""

import math

import yaml

from project.config.schema import SEARCHABLE
from project.errors import UserError

INTEGER = {"batch_size", "head_units", "unfreeze"}  # int ranges; the rest are floats
CATEGORICAL = {"optimizer", "head_activation"}  # choices only
EDGE = 0.1  # outer fraction of a range that counts as its edge
PAD = 0.1  # fine ranges: the top-k span widened by this fraction of the card's range, each side


def card_space(search):
    """The card's `search.space` (schema.Param models) as space entries."""
    return {name: _entry(name, param) for name, param in search.space.items()}


def _entry(name, param):
    key = f"search.space.{name}"
    if param.choices is not None:
        kinds = {type(c) for c in param.choices}
        if len(kinds) > 1:  # Keras Tuner's Choice holds one type: keep mixed values as YAML text
            return {
                "type": "choice",
                "choices": [yaml.safe_dump(c).removesuffix("\n...\n").strip() for c in param.choices],
                "text": True,
            }
        return {"type": "choice", "choices": list(param.choices), "text": False}
    if name in CATEGORICAL:
        raise UserError(f"{key}: {name} is categorical: give choices, e.g. {{choices: [adam, sgd]}}")
    if name in INTEGER:
        values = [param.min, param.max] + ([param.step] if param.step is not None else [])
        if any(v != int(v) for v in values):
            raise UserError(
                f"{key}: {name} takes whole numbers; got min {param.min:g}, max {param.max:g}"
                + (f", step {param.step:g}" if param.step is not None else "")
            )
        step = int(param.step) if param.step is not None else None
        return {"type": "int", "min": int(param.min), "max": int(param.max), "sampling": param.sampling, "step": step}
    return {
        "type": "float",
        "min": float(param.min),
        "max": float(param.max),
        "sampling": param.sampling,
        "step": param.step,
    }


def decode(entry, value):
    """A sampled value as the card wants it (text choices back to numbers where they were)."""
    if entry.get("text"):
        return yaml.safe_load(value)
    return value


def card_values(space, values, hidden_layers):
    """{hyperparameter: value} -> {card key: value}, for cards.with_values.

    head_units sets every hidden layer's width (one layer when the card has none)."""
    out = {}
    for name, value in values.items():
        if name not in space:
            continue
        value = decode(space[name], value)
        if name == "head_units":
            value = [int(value)] * max(1, hidden_layers)
        out[SEARCHABLE[name]] = value
    return out


# ------------------------------------------------------------------ numeric ranges


def _forward(entry, x):
    return math.log(x) if entry["sampling"] == "log" else float(x)


def _inverse(entry, t):
    return math.exp(t) if entry["sampling"] == "log" else t


def position(entry, value):
    """Where a value lies in its range, 0 (min) .. 1 (max), in log space for log sampling."""
    low, high = _forward(entry, entry["min"]), _forward(entry, entry["max"])
    return (_forward(entry, value) - low) / (high - low)


def narrow(space, top, pad=PAD):
    """The fine-stage space around the top-k coarse trials' values (`top`: one dict per trial).

    Numeric: from the smallest to the largest top-k value, widened on each side by `pad` of the
    card's range (in log space for log sampling), clipped to the card's range. Choices: those the
    top-k used, in the card's order; a single one left becomes fixed."""
    if not top:
        raise UserError(
            "no coarse trial completed, so there is nothing to narrow around: "
            "see tuning/trials.csv for why the trials failed, then fix the card's search ranges"
        )
    fine = {}
    for name, entry in space.items():
        values = [t[name] for t in top if name in t]
        if entry["type"] == "fixed" or not values:
            fine[name] = dict(entry)
        elif entry["type"] == "choice":
            kept = [c for c in entry["choices"] if c in values]
            fine[name] = (
                {"type": "fixed", "value": kept[0], "text": entry["text"]}
                if len(kept) == 1
                else {**entry, "choices": kept}
            )
        else:
            fine[name] = _narrow_range(entry, values, pad)
    return fine


def _narrow_range(entry, values, pad):
    low, high = _forward(entry, entry["min"]), _forward(entry, entry["max"])
    margin = pad * (high - low)
    ts = [_forward(entry, v) for v in values]
    new_min = _inverse(entry, max(low, min(ts) - margin))
    new_max = _inverse(entry, min(high, max(ts) + margin))
    new_min, new_max = max(entry["min"], new_min), min(entry["max"], new_max)  # exp/log round-off
    step = entry["step"]
    if step and entry["sampling"] == "linear":  # stay on the card's grid
        new_min = entry["min"] + math.floor(round((new_min - entry["min"]) / step, 9)) * step
        new_max = min(entry["max"], entry["min"] + math.ceil(round((new_max - entry["min"]) / step, 9)) * step)
    if entry["type"] == "int":
        new_min, new_max = math.floor(new_min), math.ceil(new_max)
        new_min, new_max = max(entry["min"], new_min), min(entry["max"], new_max)
    if new_min >= new_max:
        return {"type": "fixed", "value": values[0]}
    return {**entry, "min": new_min, "max": new_max}


def edge_warnings(space, best, edge=EDGE):
    """Warnings for numeric values of the best trial that lie in the outer `edge` of the card's range."""
    warnings = []
    for name, entry in space.items():
        if entry["type"] not in ("float", "int") or name not in best:
            continue
        where = position(entry, best[name])
        side = "lower" if where < edge else "upper" if where > 1 - edge else None
        if side:
            scale = " (log scale)" if entry["sampling"] == "log" else ""
            warnings.append(
                f"best {name} {best[name]:.3g} is at the {side} edge of [{entry['min']:g}, {entry['max']:g}]{scale}: "
                f"widen the range (search.space.{name})"
            )
    return warnings
