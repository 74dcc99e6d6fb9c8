"""Figure rows and their verdicts, the text and Markdown tables, and the JSON report."""

import os
import platform
import time

import numpy as np

from benchmarks.settings import TARGETS

# ------------------------------------------------------------------ figures


def figure(label, value, unit="", reference=None, reference_value=None, target=None, note=""):
    """One row of the table. `target` is (">=" or "<=", number), checked on the ratio value /
    reference_value, or on the value itself when there is no reference."""
    measured = _number(value)
    ratio = value / reference_value if measured and _number(reference_value) and reference_value else None
    checked = ratio if reference is not None else (value if measured else None)
    if not measured:
        met = "not measured"
    elif target is None:
        met = "-"
    elif checked is None:
        met = "not measured"
    else:
        met = "met" if (checked >= target[1] if target[0] == ">=" else checked <= target[1]) else "not met"
    if not measured and not (isinstance(value, str) and value.startswith("not measured")):
        value = not_measured(f"no value ({value})")
    return {
        "figure": label,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
        "target": f"{target[0]} {target[1]:g}" if target else None,
        "met": met,
        "note": note,
    }


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def not_measured(reason):
    return f"not measured: {reason}"


# ------------------------------------------------------------------ reports


def machine(load_before):
    import cv2
    import PIL

    from project.train.training import device, versions

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "device": device(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {**versions(), "opencv": cv2.__version__, "pillow": PIL.__version__},
    }


def _fmt(value, unit=""):
    if not _number(value):
        return "" if value is None else str(value)
    if unit == "of search time":
        return f"{value:.1%}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def table(figures):
    """Rows of (figure, value, reference, ratio, target, met)."""
    rows = []
    for row in figures.values():
        reference = f"{row['reference']}: {_fmt(row['reference_value'], row['unit'])}" if row["reference"] else ""
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else ""
        rows.append((row["figure"], _fmt(row["value"], row["unit"]), reference, ratio, row["target"] or "", row["met"]))
    return rows


HEADER = ("figure", "value", "reference", "ratio", "target", "met")


def text_table(figures):
    rows = [HEADER, *table(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def markdown(report):
    m = report["machine"]
    lines = [
        f"# Benchmarks ({report['command']}{', quick' if report['quick'] else ''})",
        "",
        f"{m['cpu_count']} CPU cores, {m['device']['type']} ({m['device']['name']}); load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after; {m['platform']}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table(report["figures"])),
        "",
        "Notes:",
        "",
        *(f"- {row['figure']}: {row['note']}" for row in report["figures"].values() if row["note"]),
        "",
    ]
    return "\n".join(lines)


def report(command, quick, settings, figures, details, load_before):
    return {
        "command": command,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_before),
        "settings": settings,
        "targets": TARGETS,
        "figures": figures,
        "details": details,
    }
