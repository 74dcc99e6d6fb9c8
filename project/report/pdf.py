"""report.pdf: the HTML printed by headless Chromium (the browser's own print-to-PDF, so figures,
tables and the print stylesheet's page breaks come out as a reader's browser would print them).

Chromium stamps the print time into the PDF's CreationDate and ModDate; they are set to the
report's own date (the completion time of the newest run), so the same runs give the same bytes.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from project.artifacts import atomic_write
from project.errors import UserError

HOW_TO_GET = (
    "apt-get install chromium (Debian/Ubuntu), or set CHROMIUM=/path/to/chrome; or print report.html from a browser"
)
_STAMP = re.compile(rb"/(CreationDate|ModDate) \(D:\d{14}[^)]*\)")


def find_chromium():
    """CHROMIUM from the environment, else chromium, chromium-browser or google-chrome on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if shutil.which(named) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def pdf_date(generated_at):
    """'2026-12-01T15:29:56+0000' (the COMPLETE marker's format) as a PDF date of the same length as Chromium's."""
    moment = time.strptime(generated_at[:19], "%Y-%m-%dT%H:%M:%S")
    offset = generated_at[19:24] if re.fullmatch(r"[+-]\d{4}", generated_at[19:24]) else "+0000"
    return (time.strftime("D:%Y%m%d%H%M%S", moment) + f"{offset[:3]}'{offset[3:]}'").encode()


def write_pdf(html, pdf, generated_at, chromium=None, timeout=180):
    """Print `html` to `pdf` (atomically); returns the path, or None when no Chromium is found."""
    exe = chromium or find_chromium()
    if exe is None:
        return None
    with tempfile.TemporaryDirectory(prefix="report-pdf-") as tmp:
        out = Path(tmp) / "report.pdf"
        command = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={out}",
            Path(html).resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise UserError(f"cannot print {html} to PDF with {exe}: {error}") from None
        if done.returncode or not out.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"{exe} could not print {html} to PDF (exit {done.returncode}): {last}")
        stamp = pdf_date(generated_at)
        data = _STAMP.sub(lambda m: b"/" + m.group(1) + b" (" + stamp + b")", out.read_bytes())
    atomic_write(pdf, data)
    return Path(pdf)
