"""Tuner trials that reuse one compiled model: no retracing between trials of the same architecture.

Compiling a Keras model throws its traced train, test and predict functions away, and tracing
MobileNetV2's costs ~16 s here, most of a short trial. So the hyperparameters a trial may change
without changing the graph are values the compiled functions read at run time:

- learning rate, its schedule's steps per epoch and length, weight decay and label smoothing are
  Keras variables (`Knobs`) read by the optimizer, `ScheduledRate` and `smoothed_crossentropy`;
- head dropout is a variable inside the model (project.model.HeadDropout): set with the weights;
- batch size and augmentation strength only change the tf.data pipeline (its batch dimension is
  None, so another batch size is the same signature).

Everything else (backbone, head, trained layers, optimizer type, momentum, L2, input size) is the
architecture: `architecture_key` tells two trials apart. A trial with a known key takes the cached
model, the weights and dropout seeds of a model freshly built from its own seed, the optimizer's
initial state and its own knob values; it then trains exactly as a fresh process would.
The initial state depends only on the architecture and the seed, so it is kept too: a trial with a
known key and seed builds no model at all (building MobileNetV2 costs ~0.35 s, 2-3 % of a trial).
"""

import math
import random
from collections import OrderedDict

import numpy as np

import keras
from keras import ops

from project.model import HeadDropout

CACHE_SIZE = 2  # compiled models kept: each holds its traced graphs


class Knobs:
    """The run-time hyperparameters a compiled trial model reads (never part of the model)."""

    def __init__(self):
        def knob(name):
            return keras.Variable(0.0, trainable=False, dtype="float32", name=f"knob_{name}")

        self.learning_rate, self.weight_decay, self.label_smoothing = knob("learning_rate"), knob("weight_decay"), knob("label_smoothing")
        self.steps_per_epoch, self.total_steps = knob("steps_per_epoch"), knob("total_steps")

    def set(self, training, learning_rate, steps_per_epoch, epochs):
        self.learning_rate.assign(learning_rate)
        self.weight_decay.assign(decoupled_weight_decay(training))
        self.label_smoothing.assign(training.label_smoothing)
        self.steps_per_epoch.assign(max(1, steps_per_epoch))
        self.total_steps.assign(max(1, epochs * steps_per_epoch))


def set_knobs(model, knobs, training, learning_rate, steps_per_epoch, epochs):
    """A trial's values into its compiled model: the Knobs, and a constant or plateau rate into the
    optimizer's own variable (ReduceLROnPlateau lowers that one)."""
    knobs.set(training, learning_rate, steps_per_epoch, epochs)
    if training.schedule in ("constant", "plateau"):
        model.optimizer.learning_rate = float(learning_rate)


def set_head_dropout(model, rate):
    """The trial's head dropout rate into a reused model: the cached initial state holds the rate
    of the trial that built it (the rate is a variable of project.model.HeadDropout)."""
    for layer in model.layers:
        if isinstance(layer, HeadDropout):
            layer.rate.assign(rate)


def decoupled_weight_decay(training):
    """The decay the optimizer applies: AdamW without one decays by Keras' default 0.004."""
    if training.optimizer == "adamw":
        return training.weight_decay or 0.004
    return training.weight_decay


class ScheduledRate(keras.optimizers.schedules.LearningRateSchedule):
    """The card's schedule computed from Knobs at every step: step (x decay every `step_every`
    epochs), exponential (x decay per epoch), cosine (to 0 over the run), constant."""

    def __init__(self, kind, knobs, step_every=10, decay=0.1):
        self.kind, self.knobs, self.step_every, self.decay = kind, knobs, step_every, decay

    def __call__(self, step):
        k = self.knobs
        step = ops.cast(step, "float32")
        if self.kind == "step":
            return k.learning_rate * ops.power(self.decay, ops.floor(step / (self.step_every * k.steps_per_epoch)))
        if self.kind == "exponential":
            return k.learning_rate * ops.power(self.decay, step / k.steps_per_epoch)
        if self.kind == "cosine":
            done = ops.minimum(step, k.total_steps) / k.total_steps
            return k.learning_rate * 0.5 * (1.0 + ops.cos(math.pi * done))
        return k.learning_rate * 1.0

    def get_config(self):
        return {"kind": self.kind, "step_every": self.step_every, "decay": self.decay}


def smoothed_crossentropy(knobs):
    """Categorical cross-entropy with label smoothing read from a variable (Keras' own takes a float)."""

    def loss(y_true, y_pred):
        classes = ops.cast(ops.shape(y_true)[-1], y_pred.dtype)
        smoothing = ops.cast(knobs.label_smoothing, y_pred.dtype)
        return keras.losses.categorical_crossentropy(y_true * (1.0 - smoothing) + smoothing / classes, y_pred)

    return loss


def architecture_key(paper):
    """What a compiled trial model is tied to: everything in the graph that Knobs cannot change."""
    m, t = paper.model, paper.training
    return repr((
        m.model_dump(mode="json", exclude={"head": {"dropout"}}), m.head.dropout > 0, t.optimizer,
        t.momentum if t.optimizer in ("momentum", "nesterov", "rmsprop") else None, t.l2, t.schedule,
        t.step_every, t.decay, [(s.name, s.unfreeze) for s in t.stages], paper.runtime.model_dump(mode="json"),
    ))


def seed_trial(seed):
    """keras.utils.set_random_seed(seed), but TensorFlow's global seed is only set when it differs:
    tf.random.set_seed clears TensorFlow's kernel caches, and a reused compiled model then spends
    ~5 s of its first epoch instantiating its functions again. A model's initial weights and dropout
    seeds come from Python's random (Keras draws them there); tf.data's shuffles combine their own
    seeds with TensorFlow's, which is already `seed`."""
    import tensorflow as tf

    try:
        current = tf.compat.v1.get_seed(None)[0]
    except RuntimeError:  # op determinism refuses to answer before any seed is set
        current = None
    if current != seed:
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)


class ModelCache:
    """The last CACHE_SIZE compiled trial models by architecture key, with their Knobs, the
    optimizer's initial state and, per seed, the initial state of a freshly built model."""

    def __init__(self, size=CACHE_SIZE):
        self.size, self.entries = size, OrderedDict()

    def take(self, key, seed, build):
        """The model a trial trains: the cached one for `key` holding the initial state a fresh
        model built from `seed` would have, or a fresh one from `build()` -> (model, weights_used).
        Returns (model, weights_used, knobs, compiled)."""
        entry = self.entries.get(key)
        if entry is None:
            model, weights_used = build()
            return model, weights_used, Knobs(), False
        self.entries.move_to_end(key)
        if seed not in entry["initial"]:
            fresh, weights_used = build()
            entry["initial"][seed] = initial_state(fresh, weights_used)
        values, weights_used, random_states = entry["initial"][seed]
        random.setstate(random_states[0])
        np.random.set_state(random_states[1])
        model = entry["model"]
        for variable, value in zip(model.variables, values, strict=True):  # weights, BN statistics, dropout seeds
            variable.assign(value)
        for variable, value in zip(model.optimizer.variables, entry["optimizer"], strict=True):
            variable.assign(value)
        return model, weights_used, entry["knobs"], True

    def keep(self, key, seed, model, knobs, initial):
        """Remember a freshly compiled trial model (its optimizer is built, still in its initial
        state) and `initial`, its initial_state() taken right after it was built."""
        self.entries[key] = {"model": model, "knobs": knobs, "initial": {seed: initial},
                             "optimizer": [ops.convert_to_numpy(v) for v in model.optimizer.variables]}
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def initial_state(model, weights_used):
    """What a model freshly built from a seed hands to the trial: its variables' values, where its
    weights came from, and Python's and NumPy's random states right after the build."""
    return [ops.convert_to_numpy(v) for v in model.variables], weights_used, (random.getstate(), np.random.get_state())
