"""One command per stage of a run folder at a time (project.locks), and a race-free first start.

Holders are real processes holding a real OS lock; the refused commands are real `python -m project`
processes (refused before TensorFlow is imported, so these tests take seconds)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from project import locks
from project.errors import UserError

REPO = Path(__file__).resolve().parent.parent

# Holds lock argv[2] of run folder argv[1] until a line arrives on stdin (or it is killed). With
# argv[3] == "child" it first starts a process that inherits the locked file: it outlives a kill of
# the holder, as a worker process a command started could.
HOLDER = """
import subprocess, sys
from project import locks
root, name, child = sys.argv[1], sys.argv[2], sys.argv[3] == "child"
with locks.hold(root, name, "python -m project " + name + " --paper tiny (a test's holder)"):
    pid = 0
    if child:
        fd = next(iter(locks._HELD))
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        pid = subprocess.Popen(sleeper, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).pid
    print("held", pid, flush=True)
    sys.stdin.readline()
"""


class Holder:
    """A process holding lock `name` of `root` (and the pid of the child it started, if any)."""

    def __init__(self, root, name, child=False):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root), name, "child" if child else "-"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        word, child_pid = self.process.stdout.readline().split()
        assert word == "held"
        self.pid, self.child = self.process.pid, int(child_pid)

    def release(self):
        self.process.communicate("\n", timeout=30)

    def kill(self):
        self.process.kill()
        self.process.communicate(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            self.kill()
        if self.child:
            os.kill(self.child, signal.SIGKILL)


@pytest.fixture
def holders():
    started = []
    yield lambda *args, **kwargs: started.append(Holder(*args, **kwargs)) or started[-1]
    for holder in started:
        holder.stop()


@pytest.fixture
def cards(tmp_path, tiny_paper_card, digits_card):
    return ["--paper", str(tiny_paper_card(tmp_path / "cards")), "--dataset", str(digits_card)]


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_second_command_on_the_same_stage_is_refused_naming_the_holder(project_env, cards, holders):
    root = project_env.runs / "tiny__digits"
    holder = holders(root, "train")
    note = json.loads((root / "locks" / "train.json").read_text())
    result = project_env.run("train", *cards, timeout=120)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [
        f"error: {root} is in use: its train lock is held by pid {holder.pid} on {socket.gethostname()} "
        f"since {note['started']} (`python -m project train --paper tiny (a test's holder)`). Wait for that "
        f"command to end; if it is no longer running (its machine went down), delete {root}/locks/train.lock and rerun"
    ]
    assert not (root / "baseline").exists(), "the refused command wrote nothing"

    with locks.hold(root, "sanity"), locks.hold(root, "report"):  # the other stages are free
        pass
    holder.release()
    assert not (root / "locks" / "train.json").exists(), "a released lock leaves no holder"
    with locks.hold(root, "train"):  # and the stage is free again
        pass


def test_make_all_is_refused_at_once_when_any_of_its_stages_is_held(project_env, cards, holders):
    root = project_env.runs / "tiny__digits"
    holder = holders(root, "report")
    start = time.monotonic()
    result = project_env.run("all", *cards, timeout=120)
    assert result.returncode == 2
    assert f"its report lock is held by pid {holder.pid}" in result.stderr
    assert not (root / "sanity.json").exists() and not (root / "baseline").exists()
    assert time.monotonic() - start < 60, "refused before any stage ran"
    for stage in ("sanity", "train", "tune"):  # what it had taken is released
        with locks.hold(root, stage):
            pass


def test_a_lock_left_by_a_killed_command_is_taken_over_with_a_warning(project_env, cards, holders):
    root = project_env.runs / "tiny__digits"
    holder = holders(root, "report")
    holder.kill()  # kill -9: the OS lock goes with the process, the holder's note stays
    assert json.loads((root / "locks" / "report.json").read_text())["pid"] == holder.pid
    result = project_env.run("report", *cards, "--reports-dir", project_env.reports, timeout=120)
    assert (
        f"taking over the lock {root}/locks/report.lock left by pid {holder.pid} on {socket.gethostname()}"
        in result.stderr
    )
    assert "which ended without releasing it" in result.stderr
    assert "is in use" not in result.stderr
    assert "error: no baseline run at" in result.stderr, "the report then ran (and found nothing to report)"
    assert not (root / "locks" / "report.json").exists()


def test_a_lock_still_held_by_a_child_of_a_dead_command_is_taken_over(project_env, cards, holders):
    """The holder is dead but a process it started keeps the locked file open: on the same host the
    dead pid is seen, and the file is replaced (the child keeps a lock on nothing)."""
    root = project_env.runs / "tiny__digits"
    holder = holders(root, "report", child=True)
    holder.kill()
    os.kill(holder.child, 0)  # the child still runs and holds the file
    result = project_env.run("report", *cards, "--reports-dir", project_env.reports, timeout=120)
    assert f"taking over the lock {root}/locks/report.lock from pid {holder.pid}" in result.stderr
    assert "a process it started still held the file" in result.stderr
    assert "is in use" not in result.stderr and "error: no baseline run at" in result.stderr


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    """multiprocessing's fork start method copies the locked file into every worker: when the
    command is killed, its workers must not keep the stage locked (os.register_at_fork closes it)."""
    script = (
        "import os, sys, time\nfrom project import locks\n"
        "with locks.hold(sys.argv[1], 'train'):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n        time.sleep(600)\n        os._exit(0)\n"
        "    print(child, flush=True)\n    time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    child = int(process.stdout.readline())
    try:
        process.kill()
        process.wait()
        os.kill(child, 0)  # the forked child runs on
        with locks.hold(tmp_path, "train"):  # but closed its copy of the lock
            pass
    finally:
        process.kill()
        os.kill(child, signal.SIGKILL)


def test_a_holder_on_another_machine_is_cleared_by_hand_as_the_message_says(tmp_path, holders):
    holder = holders(tmp_path, "tune")
    note = tmp_path / "locks" / "tune.json"
    note.write_text(json.dumps({**json.loads(note.read_text()), "host": "node17", "pid": 4242}))
    with pytest.raises(UserError) as refused:  # another host's pid cannot be checked: never taken over
        with locks.hold(tmp_path, "tune"):
            pass
    assert "held by pid 4242 on node17" in str(refused.value)
    (tmp_path / "locks" / "tune.lock").unlink()  # "delete .../locks/tune.lock and rerun"
    with locks.hold(tmp_path, "tune"):
        assert json.loads(note.read_text())["pid"] == os.getpid()
    holder.release()


def test_a_distributed_search_chief_and_workers_lock_apart(project_env, cards, holders, monkeypatch):
    from project.commands.cli import stage_locks

    root = project_env.runs / "tiny__digits"
    distributed = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    for name, value in distributed.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert stage_locks("tune") == ("tune",)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner 1/a")
    assert stage_locks("tune") == ("tune-tuner_1_a",)
    monkeypatch.delenv("KERASTUNER_ORACLE_IP")
    assert stage_locks("tune") == ("tune",)  # no distributed search: a local one

    chief = holders(root, "tune")
    with locks.hold(root, "tune-tuner1"), locks.hold(root, "tune-tuner2"):  # workers run beside the chief
        pass
    second_chief = project_env.run("tune", *cards, env={**distributed, "KERASTUNER_TUNER_ID": "chief"}, timeout=120)
    assert second_chief.returncode == 2 and f"its tune lock is held by pid {chief.pid}" in second_chief.stderr
    worker = holders(root, "tune-tuner1")
    same_id = project_env.run("tune", *cards, env={**distributed, "KERASTUNER_TUNER_ID": "tuner1"}, timeout=120)
    assert same_id.returncode == 2 and f"its tune-tuner1 lock is held by pid {worker.pid}" in same_id.stderr


# Creates the split of run folder <argv[1]>/<round> for each of argv[2] rounds, every round starting
# at the same moment in every process (the time in the file argv[3], plus 0.3 s per round).
SPLITTER = """
import hashlib, sys, time
from pathlib import Path
from project.config.cards import load_config
from project.data.adapters import load_sources
from project.data.split import load_or_make_split
from project.errors import UserError
root, rounds, go, paper, dataset = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
config = load_config(paper, dataset)
sources = load_sources("digits", {}, None)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
start = float(go.read_text())
for k in range(rounds):
    time.sleep(max(0.0, start + 0.3 * k - time.time()))
    try:
        subsets = load_or_make_split(root / str(k) / "split.csv", sources, config.dataset.split)
        print(k, hashlib.sha256(" ".join(subsets).encode()).hexdigest(), flush=True)
    except UserError as error:
        print(k, "refused:", error, flush=True)
"""


def started_together(commands, go, **popen):
    """Start each command (a script that prints "ready", then waits for the file `go` and the time in
    it), wait until all are ready, and release them half a second later, together."""
    processes = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, text=True, **popen) for c in commands]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    go.write_text(str(time.time() + 0.5))
    return processes


def test_processes_starting_together_make_one_split_and_agree(tmp_path, tiny_paper_card, digits_card):
    rounds, go = 15, tmp_path / "go"
    paper = tiny_paper_card(tmp_path / "cards")
    command = [
        sys.executable,
        "-c",
        SPLITTER,
        str(tmp_path / "runs"),
        str(rounds),
        str(go),
        str(paper),
        str(digits_card),
    ]
    processes = started_together([command] * 3, go)
    outputs = [[line for line in p.communicate(timeout=120)[0].splitlines() if line[0].isdigit()] for p in processes]
    assert [process.returncode for process in processes] == [0, 0, 0]
    assert not [line for output in outputs for line in output if "refused" in line], outputs
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == rounds
    assert len({line.split()[1] for line in outputs[0]}) == 1, "every round made the same split"
    for k in range(rounds):
        folder = tmp_path / "runs" / str(k)
        assert json.loads((folder / "split.json").read_text())["split"]["seed"] == 0
        assert sorted(p.name for p in folder.iterdir()) == ["locks", "split.csv", "split.json"], "no temporary file"


# Reads every training batch of digits through a disk cache at argv[1], starting at the time in the
# file argv[2]; prints a digest of the batches.
CACHER = """
import hashlib, sys, time
from pathlib import Path
from project.data.adapters import load_sources
from project.data.pipeline import make_dataset
sources = load_sources("digits", {}, None)
data = make_dataset(sources.items, sources.labels, sources.kind, size=(16, 16), num_classes=10, batch_size=64,
                    training=True, cache=sys.argv[1], seed=5)
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
time.sleep(max(0.0, float(go.read_text()) - time.time()))
digest = hashlib.sha256()
for images, labels in data:
    digest.update(images.numpy().tobytes() + labels.numpy().tobytes())
print(digest.hexdigest(), flush=True)
"""


@pytest.mark.slow
def test_processes_starting_together_share_one_disk_cache(tmp_path):
    """tf.data refuses a second process writing the same disk cache, and any writer after a killed one
    (its lockfile stays behind): two processes start together on a cache a killed run left."""
    folder, go = tmp_path / "cache", tmp_path / "go"
    folder.mkdir()
    (folder / "train_16x16_0.lockfile").write_text("")  # what a writer killed with kill -9 leaves
    command = [sys.executable, "-c", CACHER, str(folder / "train_16x16"), str(go)]
    processes = started_together([command] * 2, go, stderr=subprocess.PIPE)
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in results]
    digests = [out.split()[-1] for out, _ in results]
    assert len(set(digests)) == 1, "every process read the same batches"
    assert sorted(p.name for p in folder.iterdir()) == [
        "locks",
        "train_16x16.data-00000-of-00001",
        "train_16x16.index",
        "train_16x16.manifest.json",  # what it was built from (project.data.cachekey)
    ]
