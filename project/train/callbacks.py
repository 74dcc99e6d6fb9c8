"""The callbacks of a training stage, and the state a killed stage resumes from.

A run killed anywhere (kill -9 included) and rerun with the same command ends with the numbers of a
run never interrupted: at an epoch end the resume state holds everything the next epoch depends on,
- the weights and the optimizer's variables (its step, moments and learning rate, as
  ReduceLROnPlateau left it): Keras' model.save_weights;
- the state of every seed generator (dropout's draws), which save_weights leaves out;
- what the callbacks count: the checkpoint's best value, early stopping's and ReduceLROnPlateau's
  wait, best and cooldown (COUNTERS);
- the epoch: the input pipeline draws each epoch's shuffle and augmentations from (seed, epoch,
  batch), so a resumed epoch sees the batches it would have seen;
- the best-on-val weights so far: the checkpoint file is written from them once, when the stage ends.

backup/<stage>/ (Keras BackupAndRestore's folder, deleted when the stage ends):
    epoch-<n>.weights.h5          the weights and optimizer after epoch n, written then renamed
    epoch-<n>.best.npz            the best-on-val weights up to epoch n (NumPy's npz: ~0.04 s to
                                  write, where Keras' h5 of ~600 datasets takes ~0.4 s here)
    training_metadata.json        the commit, written last and atomically: the epoch, the files
                                  it goes with, the seed generators and the counters
    training_metadata.json.bkp    the state before it (Keras' double_checkpoint), tried when the
                                  latest cannot be read; neither readable: the stage starts over
"""

import csv
import json
import math
import time
from pathlib import Path

import keras

from project import faults, logs
from project.artifacts import atomic_write, load_arrays, save_arrays, save_keras, write_json
from project.train.averaging import judged_weights

log = logs.get(__name__)

METADATA = "training_metadata.json"  # Keras BackupAndRestore's name: its loader reads the epoch from it
PREVIOUS = METADATA + ".bkp"
# what each callback counts that the next epoch depends on: saved with the resume state, restored
# after Keras' on_train_begin has reset it
COUNTERS = {
    "best_checkpoint": ("best",),
    "early_stopping": ("wait", "best", "best_epoch"),
    "plateau": ("wait", "best", "cooldown_counter"),
}


def monitor_of(paper):
    monitor = paper.training.early_stopping.monitor if paper.training.early_stopping else "val_accuracy"
    return monitor, "min" if "loss" in monitor else "max"


def stage_callbacks(paper, folder, stage, checkpoint=True, backup=True, state=None):
    """CSV history, best-on-val `checkpoint`, NaN guard, TensorBoard, early stopping,
    ReduceLROnPlateau, and last the resume state (`backup`: a tuner trial has none, Keras Tuner
    reruns an interrupted trial; nor a checkpoint of its last stage, whose final weights are dropped).

    The order matters at an epoch end: the CSV log is written first (an epoch is never missing from
    it), the resume state last (it saves what the others counted for that epoch). `state`:
    resume_state(), which the stage's datasets were made for (they start at its epoch)."""
    t = paper.training
    monitor, mode = monitor_of(paper)
    callbacks = [
        keras.callbacks.CSVLogger(str(folder / "logs" / f"history_{stage}.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
        EpochTensorBoard(str(folder / "logs" / "tensorboard" / stage), write_graph=False),
    ]
    counted = {}
    if checkpoint:
        counted["best_checkpoint"] = BestCheckpoint(folder / "checkpoints" / f"{stage}.weights.h5", monitor, mode)
        callbacks.insert(1, counted["best_checkpoint"])
    if t.early_stopping:
        e = t.early_stopping
        counted["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=e.monitor, mode=mode, patience=e.patience, min_delta=e.min_delta
        )
    if t.schedule == "plateau":
        counted["plateau"] = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=t.decay, patience=t.plateau_patience
        )
    callbacks += [c for name, c in counted.items() if name != "best_checkpoint"]
    if backup:
        callbacks.append(ThrottledBackup(folder / "backup" / stage, paper.runtime.backup_seconds, counted, state))
    return callbacks


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard, which at update_freq="epoch" (no profiling) still calls
    tf.summary.scalar for every metric after every batch, with no writer to record it: ~1 ms a
    batch here (the main thread waits for the GIL, which augmentation holds), for nothing."""

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq != "epoch" or self._should_trace:
            super().on_train_batch_end(batch, logs)


class BestCheckpoint(keras.callbacks.Callback):
    """The best-on-val weights: copied in memory at every improvement (~0.05 s for MobileNetV2),
    carried in the resume state, and written to `path` once, when training ends (~0.4 s), so the
    file always matches the epochs a resumed run keeps. Written beside, then renamed: a kill leaves
    the previous file whole."""

    def __init__(self, path, monitor, mode):
        super().__init__()
        self.path, self.monitor, self.mode, self.best = Path(path), monitor, mode, None
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.weights = value, judged_weights(self.model)  # the moving average's, with training.ema

    def on_train_end(self, logs=None):
        if self.weights is None:
            return
        now = self.model.get_weights()
        self.model.set_weights(self.weights)
        save_keras(self.path, self.model.save_weights, "checkpoint.weights")  # h5py crashes on a full disk
        self.model.set_weights(now)


class ThrottledBackup(keras.callbacks.BackupAndRestore):
    """Keras BackupAndRestore, written so that a kill at any instant leaves a state to resume from
    exactly (the module's docstring), at an epoch end only when `seconds` have passed since its last
    write (0: every epoch). Writing MobileNetV2's state takes ~0.4 s, a sixth of a demo epoch; a
    kill then costs at most `seconds` of training.

    Keras' own _save_model writes the weights and then training_metadata.json in place: a kill
    between the two, or inside either, resumes the wrong epoch's weights or stops on a half-written
    JSON. Here each write goes to a temporary file renamed into place, the metadata last.
    `counted`: {COUNTERS name: callback}; `state`: resume_state(), chosen before the stage's
    datasets were made (they start at its epoch)."""

    def __init__(self, backup_dir, seconds, counted=None, state=None):
        super().__init__(str(backup_dir), double_checkpoint=True)
        self.seconds, self.written = seconds, time.monotonic()
        self.counted, self.state = counted or {}, state

    def on_train_begin(self, logs=None):
        # Keras keeps the resumed epoch on the model: reset it, or the next stage would start there too
        self.model._initial_epoch = None
        state = self.state
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(state["path"])
        if state.get("best_path"):
            self.counted["best_checkpoint"].weights = load_arrays(state["best_path"])
        set_seed_states(self.model, state.get("seed_states"))
        for name, callback in self.counted.items():
            for key, value in state.get("counters", {}).get(name, {}).items():
                setattr(callback, key, value)
        self._current_epoch = state["epoch"]
        self.model._initial_epoch = self.params["epochs"] if state.get("stopped") else state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        if time.monotonic() - self.written >= self.seconds:
            self._save_model()
            self.written = time.monotonic()

    def _save_model(self):
        folder = Path(self.backup_dir)
        name = f"epoch-{self._current_epoch}.weights.h5"
        save_keras(folder / name, self.model.save_weights, "resume.weights")
        best = self.counted.get("best_checkpoint")
        best_name = None
        if best is not None and best.weights is not None:
            best_name = f"epoch-{self._current_epoch}.best.npz"
            save_arrays(folder / best_name, best.weights, "resume.best")
        latest = folder / METADATA
        if latest.exists():  # double_checkpoint: the state before stays loadable
            atomic_write(folder / PREVIOUS, latest.read_bytes())
        write_json(
            latest,
            {
                "epoch": self._current_epoch,
                "batch": 0,
                "weights": name,
                "best_weights": best_name,
                "stopped": bool(self.model.stop_training),  # early stopping ended the stage: resume nothing
                "seed_states": seed_states(self.model),
                "counters": {
                    key: {k: plain(getattr(self.counted[key], k)) for k in COUNTERS[key]} for key in self.counted
                },
            },
        )
        previous = read_state(folder / PREVIOUS)
        kept = {name, best_name, *((previous["weights"], previous["best_weights"]) if previous else ())}
        for old in folder.glob("epoch-*"):
            if old.name not in kept:
                old.unlink(missing_ok=True)


def plain(value):
    """A counter as JSON keeps it: numpy scalars as Python numbers, infinities as they are."""
    return value.item() if hasattr(value, "item") else value


def seed_states(model):
    """The state of every seed generator of the model (dropout's), in the model's order: save_weights
    leaves them out, and a resumed epoch must draw what it would have drawn."""
    return [v.numpy().tolist() for v in model.variables if v.name == "seed_generator_state"]


def set_seed_states(model, states):
    if states is None:
        return
    variables = [v for v in model.variables if v.name == "seed_generator_state"]
    if len(variables) != len(states):
        log.warning(f"the resume state has {len(states)} seed generators, the model {len(variables)}: not restored")
        return
    for variable, state in zip(variables, states):
        variable.assign(state)


def read_state(path):
    """A resume state's metadata with the paths of its weights and best weights, or None when it is
    missing, does not parse, names files that are gone, or was written by Keras' own writer or an
    earlier version of ours (Keras' could pair one epoch's weights with another's metadata): the stage
    then starts over, to the same numbers."""
    folder = Path(path).parent
    try:
        state = json.loads(Path(path).read_text())
        epoch, names = int(state["epoch"]), (state["weights"], state["best_weights"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning(f"{path} cannot be read ({type(error).__name__}: {error}): not resumed from it")
        return None
    for name in filter(None, names):
        if not (folder / name).is_file():
            log.warning(f"{path} names {name}, which is missing: not resumed from it")
            return None
    best = names[1] and str(folder / names[1])
    return {**state, "epoch": epoch, "path": str(folder / names[0]), "best_path": best}


def resume_state(folder, stage):
    """The state a stage resumes from: its latest, else the one before; None: it starts over."""
    backup = Path(folder) / "backup" / stage
    if not backup.exists():
        return None
    for name in (METADATA, PREVIOUS):
        state = read_state(backup / name)
        if state is not None:
            if name == PREVIOUS:
                log.warning(f"[{stage}] resuming from the state before the latest (epoch {state['epoch']})")
            return state
    return None


def resume_log(folder, stage, epochs):
    """The stage's CSV log cut back to the `epochs` its resume state holds (a killed run may have
    logged an epoch it did not back up: that epoch runs again, so its row goes). Cut as text, so the
    rows kept are byte for byte those an uninterrupted run writes."""
    path = Path(folder) / "logs" / f"history_{stage}.csv"
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n")]  # a row cut short (a full disk) goes too
    if kept:
        header = next(csv.reader(kept[:1]))
        if "epoch" in header:
            column = header.index("epoch")
            kept = kept[:1] + [row for row in kept[1:] if int(float(next(csv.reader([row]))[column])) < epochs]
    if kept != lines:
        atomic_write(path, "".join(kept))


class KillPoint(keras.callbacks.Callback):
    """project.faults' `name` at every training batch end (added only when a test arms it)."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def on_train_batch_end(self, batch, logs=None):
        faults.checkpoint(self.name)


def kill_points(trial):
    name = "trial.batch" if trial else "fit.batch"
    return [KillPoint(name)] if faults.armed(name) else []
