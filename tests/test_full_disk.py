"""A full disk or a read-only folder during training, tuning or report writing: one line naming the
path (exit 2, no traceback), nothing marked COMPLETE that is not, and the next run resumes.

Tests run as root here, and root ignores permission bits and has no disk to fill: a full disk is a
file-size limit (RLIMIT_FSIZE: past it write() fails with EFBIG, as it fails with ENOSPC on a full
disk) set while the command runs, and a read-only folder is a folder without write permission seen by
a process that has dropped root's capability to ignore it."""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import DIGITS_DATASET, TINY_SEARCH, ProjectEnv, write_dataset_card, write_tiny_paper_card

REPO = Path(__file__).resolve().parent.parent
FULL = "File too large (the disk is full or a size limit was reached: free some space, then rerun the same command to resume)"

# Runs `python -m project <argv[2:]>` in this process; once the file argv[1] exists, no file may grow
# past 1 byte any more: from then on the disk is full.
FILLS_UP = """
import resource, signal, sys, threading, time
from pathlib import Path
from project.commands.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG instead of a signal
trigger = Path(sys.argv[1])
def fill_up():
    while not trigger.exists():
        time.sleep(0.002)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))
threading.Thread(target=fill_up, daemon=True).start()
sys.exit(main(sys.argv[2:]))
"""


def permission_bits_apply():
    """A preexec_fn after which root obeys permission bits like any user: root ignores them through
    CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER, dropped from the bounding set before exec
    (prctl PR_CAPBSET_DROP = 24). Another user obeys them already."""
    if os.geteuid() != 0:
        return None

    def drop():
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2, 3):
            if libc.prctl(24, capability, 0, 0, 0):
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def project(env, *args, trigger=None, preexec_fn=None, timeout=600):
    """`python -m project ...`, with the disk filling up once `trigger` exists."""
    command = [sys.executable, "-c", FILLS_UP, str(trigger)] if trigger else [sys.executable, "-m", "project"]
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=REPO,
        env=env.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def the_error(result):
    """The command's one error line (and that it is the only line on stderr that says so)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def completed(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("COMPLETE"))


@pytest.fixture(scope="module")
def full_disk_training(tmp_path_factory):
    """Training whose disk fills up after its first resume state, then rerun with the space back."""
    base = tmp_path_factory.mktemp("full_disk")
    env = ProjectEnv(base)
    cards = [
        "--paper",
        write_tiny_paper_card(base / "cards", **{"training.stages.0.epochs": 4, "runtime.backup_seconds": 0}),
        "--dataset",
        write_dataset_card(base / "cards", "digits", **DIGITS_DATASET),
    ]
    root = env.runs / "tiny__digits"
    backup = root / "baseline" / "backup" / "train" / "training_metadata.json"
    full = project(env, "train", *cards, trigger=backup)
    after_full = {"complete": completed(env.runs), "backed_up": json.loads(backup.read_text())["epoch"]}
    rerun = project(env, "train", *cards)
    return {"env": env, "cards": cards, "root": root, "full": full, "after_full": after_full, "rerun": rerun}


def test_training_on_a_full_disk_is_one_line_naming_a_path_and_the_rerun_resumes(full_disk_training):
    run, root = full_disk_training, full_disk_training["root"]
    assert run["full"].returncode == 2
    error = the_error(run["full"])
    assert error.startswith(f"error: cannot write {root}") and error.endswith(FULL), error
    assert run["after_full"]["complete"] == [], "nothing is marked complete"
    assert 1 <= run["after_full"]["backed_up"] < 4, "the disk filled up in the middle of training"

    assert run["rerun"].returncode == 0, run["rerun"].stderr[-3000:]
    assert completed(root) == ["baseline/COMPLETE"]
    history = pd.read_csv(root / "baseline" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3], "resumed: every epoch once"
    assert not list(root.rglob(".*.tmp")), "no temporary file left behind"


def test_a_report_into_a_read_only_folder_is_one_line_naming_it(full_disk_training):
    env, cards = full_disk_training["env"], full_disk_training["cards"]
    reports = env.runs.parent / "read_only_reports"
    reports.mkdir()
    reports.chmod(0o555)
    try:
        result = project(env, "report", *cards, "--reports-dir", reports, preexec_fn=permission_bits_apply())
    finally:
        reports.chmod(0o755)
    assert result.returncode == 2
    error = the_error(result)
    assert error.startswith(f"error: cannot write {reports}/tiny__digits/"), error
    assert error.endswith(
        "Permission denied (the folder is read-only or not yours: make it writable, or choose another "
        "--runs-dir / --reports-dir)"
    )
    assert list(reports.iterdir()) == []


def test_a_read_only_runs_folder_is_one_line_naming_it(tmp_path, tiny_paper_card, digits_card):
    env = ProjectEnv(tmp_path)
    env.runs.mkdir()
    env.runs.chmod(0o555)
    cards = ["--paper", tiny_paper_card(tmp_path / "cards"), "--dataset", digits_card]
    result = project(env, "train", *cards, preexec_fn=permission_bits_apply(), timeout=120)
    env.runs.chmod(0o755)
    assert result.returncode == 2
    assert the_error(result) == (
        f"error: cannot use {env.runs}/tiny__digits: Permission denied "
        f"(check --runs-dir / --reports-dir: they must be folders you can write to)"
    )


@pytest.mark.slow
def test_a_search_on_a_full_disk_stops_at_once_and_the_rerun_loses_no_trial(tmp_path):
    """Keras Tuner marks a trial that raises as failed and goes on: a full disk would fail every
    trial after it. The search stops instead, and the rerun runs the interrupted trial again."""
    env = ProjectEnv(tmp_path)
    search = {**TINY_SEARCH, "space": {"learning_rate": {"min": 0.001, "max": 0.01, "sampling": "log"}}}
    cards = [
        "--paper",
        write_tiny_paper_card(tmp_path / "cards", search=search),
        "--dataset",
        write_dataset_card(tmp_path / "cards", "digits", **DIGITS_DATASET),
    ]
    tuning = env.runs / "tiny__digits" / "tuning"
    started = tuning / "coarse" / "trial_0" / "meta.json"  # the first trial has begun
    full = project(env, "tune", *cards, "--stage", "coarse", "--quiet", trigger=started)
    assert full.returncode == 2
    error = the_error(full)
    assert error.startswith(f"error: cannot write {tuning}/coarse/trial_0") and error.endswith(FULL), error
    assert not (tuning / "trials.csv").exists(), "no trial was recorded as failed"

    rerun = project(env, "tune", *cards, "--stage", "coarse", "--quiet")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = pd.read_csv(tuning / "trials.csv", dtype={"trial_id": str})
    assert trials.trial_id.tolist() == ["0"] and (trials.status == "completed").all()
    assert json.loads(started.read_text())["starts"] == 2, "the interrupted trial ran again"


WRITERS = """
import json, resource, shutil, signal, sys
from pathlib import Path
import keras, numpy as np, tensorflow as tf
from project.artifacts import disk_problem, save_keras
from project.errors import UserError
from project.train.callbacks import ThrottledBackup
folder = Path(sys.argv[1])
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
x, y = np.random.default_rng(0).random((64, 8), dtype=np.float32), np.arange(64) % 2
backup = folder / "backup"
class Killed(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
try:  # interrupted in epoch 2: the resume state of epoch 1 stays
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ThrottledBackup(str(backup), 0), Killed()])
except KeyboardInterrupt:
    pass
backed_up = model.get_weights()
save_keras(folder / "whole.weights.h5", model.save_weights)  # with room: loads back the same
copy = keras.models.clone_model(model)
copy.load_weights(folder / "whole.weights.h5")
same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
(folder / "tree").mkdir()
(folder / "tree" / "big").write_bytes(b"x" * 5000)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
found = {"same": same}
def record(name, write):
    try:
        write()
        found[name] = "no error"
    except UserError as error:
        found[name] = str(error)
    except Exception as error:
        found[name] = disk_problem(error)
fit = lambda callback: model.fit(x, y, epochs=200, verbose=0, callbacks=[callback])
record("csv_logger", lambda: fit(keras.callbacks.CSVLogger(str(folder / "history.csv"))))
record("tensorboard", lambda: fit(keras.callbacks.TensorBoard(str(folder / "tensorboard"))))
record("gfile", lambda: tf.io.gfile.GFile(str(folder / "oracle.json"), "w").write("x" * 5000))
record("copytree", lambda: shutil.copytree(folder / "tree", folder / "copy"))
record("save_keras", lambda: save_keras(folder / "model.weights.h5", model.save_weights))
record("backup", lambda: model.fit(x, y, epochs=3, verbose=0, callbacks=[ThrottledBackup(str(backup), 0)]))
state = json.loads((backup / "training_metadata.json").read_text())
copy.load_weights(backup / state["weights"])  # what the next run resumes from: epoch 1, whole
found["backup_intact"] = all(np.array_equal(a, b) for a, b in zip(backed_up, copy.get_weights()))
found["backup_epoch"] = state["epoch"]
print(json.dumps(found))
"""


def test_every_writer_outside_atomic_write_is_recognised_on_a_full_disk(tmp_path):
    """What the command line recognises (project.artifacts.disk_problem) in real writers' real errors:
    Keras' CSVLogger (an OSError without a file name), TensorBoard and tf.io.gfile (Keras Tuner's
    files: a TensorFlow error naming the file), shutil.copytree (a list of failed copies); and Keras'
    saves, the resume state's included, go through memory (save_keras), so a full disk leaves no
    partial file and the previous resume state whole."""
    result = subprocess.run(
        [sys.executable, "-c", WRITERS, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["same"] is True
    assert found["csv_logger"] == [None, "File too large", 27]
    path, reason, _ = found["tensorboard"]
    assert Path(path).parent == tmp_path / "tensorboard" / "train" and reason == "File too large"
    assert found["gfile"] == [str(tmp_path / "oracle.json"), "File too large", 27]
    assert found["copytree"] == [str(tmp_path / "copy" / "big"), "File too large", 27]
    assert found["save_keras"].startswith(f"cannot write {tmp_path / 'model.weights.h5'}: File too large")
    assert not (tmp_path / "model.weights.h5").exists(), "never a partial weights file"
    # Keras' BackupAndRestore wrote straight through h5py: a truncated file the next run could not load
    assert re.match(
        rf"cannot write {re.escape(str(tmp_path / 'backup'))}/epoch-\d+\.weights\.h5: File too large", found["backup"]
    )
    assert found["backup_intact"] is True and found["backup_epoch"] == 1


def test_a_tuned_copy_cut_short_is_not_marked_complete(tmp_path):
    from project.tune.final_round import install

    source, target = tmp_path / "finalists" / "coarse-0", tmp_path / "tuned"
    source.mkdir(parents=True)
    for name in ("COMPLETE", "config.resolved.yaml", "metrics.json"):
        (source / name).write_text(name)
    (source / "model.keras").symlink_to(tmp_path / "gone")  # a file that cannot be copied
    with pytest.raises(shutil.Error):
        install(source, target, best={})
    partial = target.with_name(f".{target.name}.partial")  # assembled aside, renamed once complete
    assert not target.exists() and not (partial / "COMPLETE").exists()
