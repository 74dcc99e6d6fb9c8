"""Run-time hyperparameters: values a compiled model reads from variables, not constants of its
traced graph, so that a tuner trial can reuse a compiled model with its own values (project.tune.reuse).

`Knobs` holds the learning rate, the schedule's length and warmup, weight decay, label smoothing and
the stage's learning-rate multipliers; `ScheduledRate` and `smoothed_crossentropy` read them at every step.
"""

import math

import keras
from keras import ops

from project.train.schedules import FORMULAS


class Knobs:
    """The run-time hyperparameters a compiled trial model reads (never part of the model)."""

    def __init__(self):
        def knob(name):
            return keras.Variable(0.0, trainable=False, dtype="float32", name=f"knob_{name}")

        self.learning_rate, self.weight_decay, self.label_smoothing = (
            knob("learning_rate"),
            knob("weight_decay"),
            knob("label_smoothing"),
        )
        self.steps_per_epoch, self.total_steps = knob("steps_per_epoch"), knob("total_steps")
        self.warmup_steps = knob("warmup_steps")
        # training.stages[].lr_multipliers: the factor of each part's optimizer (project.train.training)
        self.lr_backbone, self.lr_head = knob("lr_backbone"), knob("lr_head")

    def set(self, training, learning_rate, steps_per_epoch, epochs, multipliers=None, warmup_steps=0):
        self.learning_rate.assign(learning_rate)
        self.weight_decay.assign(decoupled_weight_decay(training))
        self.label_smoothing.assign(training.label_smoothing)
        self.steps_per_epoch.assign(max(1, steps_per_epoch))
        self.total_steps.assign(max(1, epochs * steps_per_epoch))
        self.lr_backbone.assign(multipliers.backbone if multipliers else 1.0)
        self.lr_head.assign(multipliers.head if multipliers else 1.0)
        self.warmup_steps.assign(warmup_steps)


def set_knobs(model, knobs, training, learning_rate, steps_per_epoch, epochs, multipliers=None, warmup_steps=0):
    """A trial's values into its compiled model: the Knobs, and a constant or plateau rate into the
    optimizer's own variable (ReduceLROnPlateau lowers that one), or into each part's optimizer times
    its factor (`multipliers`: the stage's lr_multipliers). `warmup_steps`: optimizer steps
    (project.train.schedules.warmup_steps)."""
    knobs.set(training, learning_rate, steps_per_epoch, epochs, multipliers, warmup_steps)
    parts = part_optimizers(model.optimizer)
    for part, optimizer in parts.items():
        optimizer.lr_multiplier = getattr(multipliers, part) if multipliers else 1.0
    if training.schedule in ("constant", "plateau"):
        for optimizer in parts.values():
            optimizer.learning_rate = float(learning_rate) * optimizer.lr_multiplier
        if not parts:
            model.optimizer.learning_rate = float(learning_rate)


def part_optimizers(optimizer):
    """{"backbone": optimizer, "head": optimizer} of a stage with lr_multipliers (a
    keras.optimizers.MultiOptimizer, maybe inside a LossScaleOptimizer), or {} for one optimizer."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return {inner.name: inner for inner in getattr(optimizer, "optimizers", ())}


def decoupled_weight_decay(training):
    """The decay the optimizer applies: AdamW without one decays by Keras' default 0.004."""
    if training.optimizer == "adamw":
        return training.weight_decay or 0.004
    return training.weight_decay


class ScheduledRate(keras.optimizers.schedules.LearningRateSchedule):
    """The card's schedule computed from Knobs at every step: step (x decay every `step_every`
    epochs), exponential (x decay per epoch), cosine (to 0 over the run), warmup_cosine and
    one_cycle (project.train.schedules' formulas), constant; times `scale` (a Knobs multiplier, for
    one part's optimizer under lr_multipliers) when given."""

    def __init__(self, kind, knobs, step_every=10, decay=0.1, scale=None):
        self.kind, self.knobs, self.step_every, self.decay, self.scale = kind, knobs, step_every, decay, scale

    def __call__(self, step):
        rate = self._rate(step)
        return rate if self.scale is None else rate * self.scale

    def _rate(self, step):
        k = self.knobs
        step = ops.cast(step, "float32")
        if self.kind == "step":
            return k.learning_rate * ops.power(self.decay, ops.floor(step / (self.step_every * k.steps_per_epoch)))
        if self.kind == "exponential":
            return k.learning_rate * ops.power(self.decay, step / k.steps_per_epoch)
        if self.kind == "cosine":
            done = ops.minimum(step, k.total_steps) / k.total_steps
            return k.learning_rate * 0.5 * (1.0 + ops.cos(math.pi * done))
        if self.kind in FORMULAS:
            return FORMULAS[self.kind](step, k.learning_rate, k.warmup_steps, k.total_steps)
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
