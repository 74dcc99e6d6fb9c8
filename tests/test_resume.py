"""Interruption and resume (issue 6 section 2): a `train` killed with SIGKILL mid-epoch and rerun
with the same command finishes a complete run with continuous epochs; atomic writes never leave a
partial file."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}

# two stages so that the rerun must also find the right one; batch size 4 makes ~290 steps per
# epoch: long enough to be killed in the middle of one
CARD = """\
citation: {title: Resume test, authors: [Test], venue: none, year: 2024}
seed: 3
model:
  backbone: scratch
  weights: none
  input_size: 16
  scratch: {blocks: [8], convs_per_block: 1}
  head: {pooling: flatten}
training:
  optimizer: adam
  learning_rate: 0.003
  batch_size: 4
  early_stopping: {monitor: val_accuracy, patience: 20}
  stages:
    - {name: warm, epochs: 2}
    - {name: main, epochs: 4}
runtime: {backup_seconds: 0}  # the resume state at every epoch end: a kill loses no finished epoch
"""


def rows(log):
    """Epoch rows in a CSVLogger file (0 while it does not exist)."""
    try:
        return max(0, len(log.read_text().strip().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def wait_for(condition, process, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return time.monotonic()
        if process.poll() is not None:
            pytest.fail(f"train ended before it could be killed: {process.stdout.read()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("train made no progress in time")


@pytest.mark.slow
def test_train_killed_mid_epoch_resumes_with_continuous_epochs(tmp_path):
    card = tmp_path / "resume.yaml"
    card.write_text(CARD)
    command = [
        sys.executable,
        "-m",
        "project",
        "train",
        "--paper",
        str(card),
        "--dataset",
        "digits",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    run = tmp_path / "runs" / "resume__digits" / "baseline"
    warm, main = run / "logs" / "history_warm.csv", run / "logs" / "history_main.csv"

    first = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = wait_for(lambda: rows(warm) >= 1, first, 300)
    two = wait_for(lambda: rows(warm) >= 2, first, 300)
    wait_for(lambda: rows(main) >= 1, first, 300)
    time.sleep(0.4 * (two - one))  # into the second epoch of stage main
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    assert rows(main) == 1, "the kill was meant to land inside main's second epoch"
    assert not (run / "COMPLETE").exists()
    assert (run / "checkpoints" / "warm.done.json").exists()

    second = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (run / "COMPLETE").exists()
    assert not (run.parent / "archive").exists(), "the rerun must resume, not move the run aside"

    history = pd.read_csv(run / "history.csv")
    assert history["stage"].tolist() == ["warm"] * 2 + ["main"] * 4
    assert history[history.stage == "warm"]["epoch"].tolist() == [0, 1]
    assert history[history.stage == "main"]["epoch"].tolist() == [0, 1, 2, 3]
    assert history["global_epoch"].tolist() == list(range(1, 7))
    metrics = json.loads((run / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["warm", "main"]
    assert [s["epochs"] for s in metrics["stages"]] == [2, 4], "epochs before and after the kill, as if never killed"
    assert re.findall(r"Epoch (\d+)/(\d+)", second.stdout) == [("2", "4"), ("3", "4"), ("4", "4")], (
        "the rerun trains only main's 3 remaining epochs"
    )
    # the final weights are main's best epoch over both runs (the checkpoint threshold survived the kill)
    best = history[history.stage == "main"]["val_accuracy"].max()
    assert metrics["val_accuracy"] == pytest.approx(best, abs=1e-6)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test"]["count"] > 0


WRITER = """
import sys
from project.artifacts import atomic_write
path, size = sys.argv[1], int(sys.argv[2])
i = 0
print("ready", flush=True)
while True:
    atomic_write(path, (str(i % 10) * size) + "\\nend\\n")
    i += 1
"""


def test_atomic_write_never_leaves_a_partial_file_when_killed(tmp_path):
    target = tmp_path / "metrics.json"
    size = 4_000_000  # a few ms per write: kills land inside writes
    for delay in (0.05, 0.13, 0.21, 0.34):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(size)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        text = target.read_text()
        assert len(text) == size + 5 and text.endswith("\nend\n") and len(set(text[:size])) == 1, "a partial file"
    # what a kill can leave: only hidden temporary files beside it, which no reader opens
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".metrics.json.") and name.endswith(".tmp") for name in leftovers), leftovers


FULL_DISK = """
import resource, signal, sys
from project.artifacts import atomic_write
from project.errors import UserError
path = sys.argv[1]
atomic_write(path, "previous\\n")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # a disk that fills up mid-write
try:
    atomic_write(path, "x" * 1_000_000)
except UserError as error:
    print(error)
"""


def test_atomic_write_on_a_full_disk_is_a_clear_error_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "best.weights.json"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(target)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"cannot write {target}: File too large (is the folder writable, is the disk full?)" in result.stdout
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name], "the temporary file is removed"


def test_a_resumed_stage_keeps_its_best_checkpoint_and_early_stopping_patience(tmp_path):
    """Interrupted after 2 epochs, resumed with weights wiped before every validation (so every
    later epoch is worse): the final model is still the best epoch before the interruption, and early
    stopping (patience 2) counts the epochs before the restart, stopping after epoch 3."""
    import keras
    import numpy as np

    from project.config.cards import load_config
    from project.data.prepare import prepare
    from project.model.classifier import build_model
    from project.train.training import evaluate, fit_stages

    card = tmp_path / "patience.yaml"
    card.write_text(
        CARD.replace("batch_size: 4", "batch_size: 8")
        .replace("patience: 20", "patience: 2")
        .replace("    - {name: warm, epochs: 2}\n", "")
        .replace("epochs: 4", "epochs: 8")
        .replace("learning_rate: 0.003", "learning_rate: 0.01")
    )
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "digits400.npz", x=(digits.images[:400] * 255 / 16).astype(np.uint8), y=digits.target[:400])
    (tmp_path / "digits400.yaml").write_text(
        "adapter: npz\noptions: {path: digits400.npz}\nsplit: {val: 0.25, test: 0.2}\n"
    )
    config = load_config(str(card), str(tmp_path / "digits400.yaml"))
    paper, folder = config.paper, tmp_path / "run"
    data = prepare(config, tmp_path)
    stats = data.stats(paper.model.input_size)

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    class Wipe(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):  # validation at the end of each epoch sees zero weights
            self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])

    keras.utils.set_random_seed(paper.seed)
    with pytest.raises(KeyboardInterrupt):
        fit_stages(
            build_model(paper.model, data.num_classes, stats, l2=paper.training.l2)[0],
            paper,
            data,
            folder,
            extra_callbacks=[Kill()],
            verbose=0,
        )
    before = pd.read_csv(folder / "logs" / "history_main.csv")
    assert before["epoch"].tolist() == [0, 1]
    assert before["val_accuracy"].max() > 0.3, (
        "the first two epochs must learn something for this test to mean anything"
    )

    model = build_model(paper.model, data.num_classes, stats, l2=paper.training.l2)[0]  # what a new process builds
    fit_stages(model, paper, data, folder, extra_callbacks=[Wipe()], verbose=0)
    after = pd.read_csv(folder / "logs" / "history_main.csv")
    assert after["epoch"].tolist() == [0, 1, 2, 3]
    assert after["val_accuracy"].iloc[2:].max() < before["val_accuracy"].max()
    val, _, _ = evaluate(model, data, paper, "val")
    assert val["accuracy"] == pytest.approx(before["val_accuracy"].max(), abs=1e-6)
