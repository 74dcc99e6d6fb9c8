"""One writer per stage of a run folder: an OS lock per stage, and a note of who holds it.

runs/<paper>__<dataset>/locks/
    <name>.lock     the file the operating system locks (fcntl.flock): the lock goes with the process,
                    so a killed command (kill -9, a lost cluster job) leaves nothing held
    <name>.json     who holds it: pid, host, start time, command (for the refusal message only)

`hold(folder, name, command)` refuses at once with one line naming the holder when another process
holds `name`; `hold(..., wait=True)` waits instead (for short sections every process goes through,
such as creating the split). A holder note whose process is gone is taken over with a warning: when
the OS lock is free the holder ended without releasing it (killed); when it is still held by a
process whose noted pid is dead on this host, a child that outlived it holds the file, and the file
is replaced. Every decision is taken under locks/.guard, held for microseconds, so two processes
never take the same lock over at once. On a shared filesystem (NFS) flock works across machines,
but the pid of another machine's holder cannot be checked: that lock is cleared by hand.
Without flock (Windows) commands run unlocked.
"""

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from project import logs
from project.artifacts import write_json
from project.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock, commands run unlocked there
    fcntl = None

log = logs.get(__name__)

LOCKS = "locks"
_HELD = set()  # file descriptors of the locks this process holds: a forked child closes its copies


def _close_in_child():
    """A forked child (a multiprocessing worker) must not keep its parent's locks alive after the parent dies."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _start_ticks(pid):
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(holder):
    """Whether the holder noted on this host still runs (the same pid, started at the same time)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    ticks = _start_ticks(pid)
    return holder.get("start_ticks") is None or ticks is None or ticks == holder["start_ticks"]


def describe(holder):
    if not holder:
        return "another process (no holder noted)"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} (`{holder.get('command')}`)"


def _read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _open(path):
    """Opened for writing: NFS turns flock into fcntl locks, whose exclusive kind needs it. Another
    user's lock file (a shared runs/ whose files are not group-writable) is locked read-only."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


@contextmanager
def _guard(folder):
    fd = _open(folder / ".guard")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock(path, blocking):
    """An open descriptor of `path` locked exclusively, or None when another process holds it.
    A lock on a file that was replaced meanwhile (a stale takeover) is a lock on nothing: try again."""
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _me(name, command):
    return {
        "lock": name,
        "pid": os.getpid(),
        "start_ticks": _start_ticks(os.getpid()),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }


def _acquire(folder, name, command, wait):
    """Take the lock (or take it over from a dead holder) and note ourselves as its holder, under the guard."""
    lock, note = folder / f"{name}.lock", folder / f"{name}.json"
    while True:
        with _guard(folder):
            fd = _lock(lock, blocking=False)
            holder = _read(note)
            if fd is None and holder and holder.get("host") == socket.gethostname() and not alive(holder):
                log.warning(
                    f"taking over the lock {lock} from {describe(holder)}, which is no longer running "
                    f"(a process it started still held the file)"
                )
                os.unlink(lock)
                fd = _lock(lock, blocking=False)
            elif fd is not None and holder and holder.get("pid") != os.getpid():
                log.warning(f"taking over the lock {lock} left by {describe(holder)}, which ended without releasing it")
            if fd is not None:
                try:
                    write_json(note, _me(name, command))
                except BaseException:  # a full disk: the lock is not taken
                    os.close(fd)
                    raise
                _HELD.add(fd)
                return fd
        if not wait:
            raise UserError(
                f"{folder.parent} is in use: its {name} lock is held by {describe(holder)}. Wait for that "
                f"command to end; if it is no longer running (its machine went down), delete {lock} and rerun"
            )
        if holder is not None:
            log.debug(f"waiting for {describe(holder)} to release {lock}")
        fd = _lock(lock, blocking=True)  # outside the guard: the holder must be able to release meanwhile
        os.close(fd)  # and try again under the guard, which writes the note


def _release(folder, name, fd):
    with _guard(folder):
        note = folder / f"{name}.json"
        if (_read(note) or {}).get("pid") == os.getpid():
            note.unlink(missing_ok=True)
        _HELD.discard(fd)
        os.close(fd)


@contextmanager
def hold(folder, name, command="", wait=False):
    """Hold the lock `name` of the run folder `folder` (runs/<paper>__<dataset>) for the block.
    Another holder: a UserError naming it and how to clear a stale lock, or with wait=True, wait."""
    if fcntl is None:
        yield
        return
    locks = Path(folder) / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    fd = _acquire(locks, name, command, wait)
    try:
        yield
    finally:
        _release(locks, name, fd)


@contextmanager
def hold_all(folder, names, command=""):
    """Several locks, all or none: a refused one releases those already taken."""
    if not names:
        yield
        return
    with hold(folder, names[0], command), hold_all(folder, names[1:], command):
        yield
