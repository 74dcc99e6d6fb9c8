"""Named kill points, for fault-injection tests: kill -9 at an exact place, rerun, compare.

`checkpoint(name)` marks a place where a SIGKILL must leave a run that the same command resumes to
the same numbers. With the environment variable

    PROJECT_KILL_AT=name[:n][,name[:n]...]

the process sends itself SIGKILL the n-th time (default 1) it reaches `name`; `*:n` is the n-th
point of any name. Unset, a checkpoint costs one truth test of an empty dict.
`PROJECT_KILL_TRACE=file` appends each point reached to `file`, one name a line (what a test
draws random kill moments from).

The points (tests/test_kill.py kills at each):
    fit.batch            a training batch of a run ended (baseline, finalists, tuned): inside an epoch
    trial.batch          a training batch of a tuner trial ended
    checkpoint.weights   a stage's best-on-val weights (at its end) in a temporary file, not yet renamed
    resume.weights       the resume state's weights written to a temporary file, not yet renamed
    resume.best          the resume state's best weights so far written to a temporary file, not yet renamed
    trial.end            between two tuner trials: one ended and was recorded, the next not begun
    write.<file name>    inside project.artifacts.atomic_write, between the temporary file and the
                         rename (write.training_metadata.json: the resume state's commit;
                         write.oracle.json, write.trial.json: Keras Tuner's state; write.report.md,
                         write.metrics.json, write.COMPLETE, ...)
"""

import os
import signal
import sys


def _parse(text):
    points = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, count = part.rpartition(":")
        if name and count.isdigit() and int(count) > 0:
            points[name] = int(count)
        else:
            points[part] = 1
    return points


_POINTS = _parse(os.environ.get("PROJECT_KILL_AT"))
_TRACE = os.environ.get("PROJECT_KILL_TRACE")
_hits = {}


def checkpoint(name):
    """A named kill point: SIGKILL here when PROJECT_KILL_AT names it (see the module's docstring)."""
    if _POINTS or _TRACE:
        _reached(name)


def armed(name):
    """Whether PROJECT_KILL_AT or PROJECT_KILL_TRACE may act at `name`: a caller adds a per-batch
    hook only then."""
    return bool(_TRACE) or name in _POINTS or "*" in _POINTS


def _reached(name):
    if _TRACE:
        with open(_TRACE, "a", encoding="utf-8") as trace:
            trace.write(name + "\n")
    for key in (name, "*"):
        if key in _POINTS:
            _hits[key] = _hits.get(key, 0) + 1
            if _hits[key] == _POINTS[key]:
                sys.stderr.write(f"PROJECT_KILL_AT: SIGKILL at {name} (hit {_hits[key]} of {key})\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
