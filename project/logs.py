"""The project's logger, and TensorFlow's and Keras' known start-up noise kept off the console.

Modules log with `log = logs.get(__name__)` (a child of the `project` logger; importing this module
installs its handler, so a function called from a notebook logs too). Messages go to stdout and
warnings to stderr, each as the bare message, at INFO by default (`--quiet`: WARNING, `-v`: DEBUG). A notebook or a test calls
`silence()` to keep only warnings and errors.

TensorFlow's C++ code writes its log lines straight to file descriptor 2, where no Python filter
sees them, and TF_CPP_MIN_LOG_LEVEL=3 would hide its real errors too. `filtered_stderr()` points
fd 2 at a small filter process that drops the lines of NOISE and passes every other byte through.
"""

import logging
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager

LOGGER = logging.getLogger("project")

# Known lines a CPU machine prints on every run that say nothing about the run: text -> where from
NOISE = {
    "All log messages before absl::InitializeLog() is called are written to STDERR": "absl, before the first TF log",
    "failed call to cuInit": "TF's CUDA platform at ERROR level, on a machine without a GPU",
    "Could not find cuda drivers": "TF's cudart stub, on a machine without a GPU",
    "oneDNN custom operations are on": "TF's oneDNN notice",
    "NodeDef mentions attribute use_unbounded_threadpool": "TF's graph of a parallel tf.data map, newer than its ops",
}
# Python warnings that say nothing about the run: message start -> where from
PYTHON_NOISE = {
    "Your input ran out of data": "Keras, at the end of a finite dataset when steps_per_epoch is given",
}

# Runs in the filter process: stdin (the pipe behind fd 2) -> stdout (the real stderr), one line at a
# time; a line ends at \n or \r (progress bars), a trailing part is passed on at the end.
_FILTER = r"""
import os, re, sys
noise = [text.encode() for text in sys.argv[1:]]
pending = b""
def emit(data):
    while data:
        data = data[os.write(1, data):]
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
    emit(b"".join(line for line in lines if not any(text in line for text in noise)))
if not any(text in pending for text in noise):
    emit(pending)
"""


def get(name):
    """The logger of module `name` (project.x.y), under the project logger."""
    return logging.getLogger(name)


class _Console(logging.StreamHandler):
    """Messages to whatever sys.stdout is when a record arrives (pytest's capture, a notebook's
    cell); warnings and errors to sys.stderr, as a command line's warnings go."""

    _warning = False

    @property
    def stream(self):
        return sys.stderr if self._warning else sys.stdout

    @stream.setter
    def stream(self, value):
        pass

    def emit(self, record):
        self._warning = record.levelno >= logging.WARNING
        super().emit(record)


def _install():
    if not any(isinstance(h, _Console) for h in LOGGER.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # a notebook's root handler would print every message twice


@contextmanager
def at_level(quiet=False, verbose=False):
    """The command line's --quiet (warnings and errors only) and -v/--verbose (debug messages too),
    for the time of one command (the level before comes back: main() may run in a notebook or a test)."""
    previous = LOGGER.level
    LOGGER.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        LOGGER.setLevel(previous)


def silence():
    """Only warnings and errors from now on (notebooks, tests)."""
    LOGGER.setLevel(logging.WARNING)


def ignore_python_noise():
    for text in PYTHON_NOISE:
        warnings.filterwarnings("ignore", message=text)


@contextmanager
def filtered_stderr(noise=NOISE):
    """Inside, fd 2 (C++ and Python alike) passes through a filter process that drops lines
    containing any text of `noise`. The filter lives in its own session, so Ctrl-C reaches only
    us, and it drains whatever a crash leaves in the pipe. On exit fd 2 is restored once the
    filter has written everything, so what follows comes after it."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    sys.stderr.flush()
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, *noise],
            stdin=subprocess.PIPE,
            stdout=saved,
            stderr=saved,
            start_new_session=True,
        )
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # our last write end of the pipe closes: the filter sees the end
        os.close(saved)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a process we started still holds the pipe: it drains later
            pass


_install()
