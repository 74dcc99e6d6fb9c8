"""Durations as cards and the command line write them ('20m', '1h30m') and as the search prints them."""

import re

UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text):
    """'20m', '1h30m', '90s', '1.5h' -> seconds (a bare number is minutes)."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"{text!r} is not a duration: write e.g. 20m, 1h30m, 90s")
    return sum(float(n) * UNITS[u] for n, u in parts)


def duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
