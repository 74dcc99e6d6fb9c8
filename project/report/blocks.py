"""The report's building blocks: fixed number formats and the block types the templates render
(paragraph, list, table, figure, code, warning, sub-heading)."""

import json

import numpy as np

from project.train.metrics import wilson_interval

MISSING = "missing"


# ------------------------------------------------------------------ formatting


def f4(value):
    return MISSING if value is None else f"{value:.4f}"


def signed(value):
    return "" if value is None else f"{value:+.4f}"


def plain(value):
    """A hyperparameter value in one fixed, short form."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def py(value):
    """numpy / pandas scalars as plain Python values for formatting."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def describe(value):
    """A nested value in one line: 'key: value; ...'."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "; ".join(f"{k}: {describe(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return "; ".join(describe(v) for v in value)
    return plain(value)


def span(low, high):
    low, high = int(low), int(high)
    return str(low) if low == high else f"{low}–{high}"


def mean_std(values):
    values = np.asarray(values, dtype=float)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def accuracy_ci(metrics):
    """The 95% Wilson interval of a run's test accuracy (a records.Metrics)."""
    count = metrics.test.count
    return wilson_interval(int(round(metrics.test_accuracy * count)), count)


def p4(p_value):
    return f"{p_value:.4f}" if p_value >= 1e-4 else f"{p_value:.1e}"


def ci_text(interval):
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


# ------------------------------------------------------------------ blocks


def table(head, rows, marks=None):
    return {
        "type": "table",
        "head": list(head),
        "rows": [[str(c) for c in row] for row in rows],
        "marks": list(marks) if marks is not None else [False] * len(rows),
    }


def p(text):
    return {"type": "p", "text": text}


def ul(items):
    return {"type": "ul", "items": list(items)}


def warning(text):
    return {"type": "warning", "text": text}


def h3(text):
    return {"type": "h3", "text": text}


def figure(name, alt):
    return {"type": "figure", "name": name, "alt": alt}


def code(lines):
    return {"type": "code", "lines": list(lines)}
