"""Tuner trials that reuse one compiled model: no retracing between trials of the same architecture.

Compiling a Keras model throws its traced train, test and predict functions away, and tracing
MobileNetV2's costs ~16 s here, most of a short trial. So the hyperparameters a trial may change
without changing the graph are values the compiled functions read at run time:

- learning rate, its schedule's steps per epoch, length and warmup, weight decay and label smoothing are
  Keras variables (`Knobs`) read by the optimizer, `ScheduledRate` and `smoothed_crossentropy`;
- head dropout is a variable inside the model (project.model.classifier.HeadDropout): set with the weights;
- batch size, augmentation strength and the mixup / CutMix alphas only change the tf.data pipeline
  (its batch dimension is None, so another batch size is the same signature).

The factors of a stage's lr_multipliers are Knobs too (whether the stage has them is architecture:
two optimizers instead of one). Everything else (backbone, head, trained layers and whether their
BatchNormalization trains, optimizer type, momentum, gradient clipping, the weights' moving average,
L2, input size) is the architecture: `architecture_key` tells two trials apart. A trial with a known key takes the cached
model, the weights and dropout seeds of a model freshly built from its own seed, the optimizer's
initial state and its own knob values; it then trains exactly as a fresh process would.
The initial state depends only on the architecture and the seed, so it is kept too: a trial with a
known key and seed builds no model at all (building MobileNetV2 costs ~0.35 s, 2-3 % of a trial).
"""

import random
from collections import OrderedDict

import keras
import numpy as np
from keras import ops

from project.model.classifier import HeadDropout
from project.train.knobs import Knobs

CACHE_SIZE = 2  # compiled models kept: each holds its traced graphs


def set_head_dropout(model, rate):
    """The trial's head dropout rate into a reused model: the cached initial state holds the rate
    of the trial that built it (the rate is a variable of project.model.classifier.HeadDropout)."""
    for layer in model.layers:
        if isinstance(layer, HeadDropout):
            layer.rate.assign(rate)


def architecture_key(paper):
    """What a compiled trial model is tied to: everything in the graph that Knobs cannot change."""
    m, t = paper.model, paper.training
    return repr(
        (
            m.model_dump(mode="json", exclude={"head": {"dropout"}}),
            m.head.dropout > 0,
            t.optimizer,
            t.momentum if t.optimizer in ("momentum", "nesterov", "rmsprop") else None,
            t.l2,
            t.schedule,
            t.step_every,
            t.decay,
            t.clipnorm,  # constants of the optimizer's traced update
            t.ema,
            [(s.name, s.unfreeze, s.train_batchnorm, s.lr_multipliers is not None) for s in t.stages],
            paper.runtime.model_dump(mode="json"),
        )
    )


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
        model built from `seed` would have, or a fresh one from `build()` -> (model, WeightsSource).
        Returns (model, WeightsSource, knobs, compiled)."""
        entry = self.entries.get(key)
        if entry is None:
            model, weights = build()
            return model, weights, Knobs(), False
        self.entries.move_to_end(key)
        if seed not in entry["initial"]:
            fresh, weights = build()
            entry["initial"][seed] = initial_state(fresh, weights)
        values, weights, random_states = entry["initial"][seed]
        random.setstate(random_states[0])
        np.random.set_state(random_states[1])
        model = entry["model"]
        for variable, value in zip(model.variables, values, strict=True):  # weights, BN statistics, dropout seeds
            variable.assign(value)
        for variable, value in zip(model.optimizer.variables, entry["optimizer"], strict=True):
            variable.assign(value)
        return model, weights, entry["knobs"], True

    def keep(self, key, seed, model, knobs, initial):
        """Remember a freshly compiled trial model (its optimizer is built, still in its initial
        state) and `initial`, its initial_state() taken right after it was built."""
        self.entries[key] = {
            "model": model,
            "knobs": knobs,
            "initial": {seed: initial},
            "optimizer": [ops.convert_to_numpy(v) for v in model.optimizer.variables],
        }
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def initial_state(model, weights):
    """What a model freshly built from a seed hands to the trial: its variables' values, where its
    weights came from, and Python's and NumPy's random states right after the build."""
    return [ops.convert_to_numpy(v) for v in model.variables], weights, (random.getstate(), np.random.get_state())
