"""Training length and the learning-rate schedules papers state: stages in steps as well as epochs,
warmup then cosine, and one-cycle.

Steps are counted at `training.steps_batch_size` (the batch size the card states them at). A run
with another batch size sees the paper's number of images: steps x steps_batch_size / batch size
optimizer steps, rounded up to whole epochs (Keras trains whole epochs; the schedule then spans
those epochs). Warmup is resolved the same way, per stage: each stage restarts its schedule.

The schedule formulas take tensors or floats, so the plain schedule (`OneCycle`) and a tuner
trial's (project.train.knobs.ScheduledRate, reading variables) compute the same numbers.
"""

import math

import keras
from keras import ops

from project.config.schema import WARMUP_SCHEDULES
from project.errors import UserError

ONE_CYCLE_RISE = 0.3  # one_cycle without a warmup: the rise takes this share of the stage (PyTorch's pct_start)
ONE_CYCLE_START = 25.0  # one_cycle starts at peak / this (PyTorch's div_factor) ...
ONE_CYCLE_END = 1e4  # ... and ends at its start / this (final_div_factor)


def run_steps(steps, training, batch_size):
    """Optimizer steps at `batch_size` that see as many images as `steps` at training.steps_batch_size."""
    return math.ceil(steps * (training.steps_batch_size or training.batch_size) / batch_size)


def stage_epochs(training, stage, steps_per_epoch, batch_size):
    """Epochs a stage runs: its epochs, or its steps converted at `batch_size` and rounded up to whole epochs."""
    if stage.steps is None:
        return stage.epochs
    return math.ceil(run_steps(stage.steps, training, batch_size) / steps_per_epoch)


def card_epochs(training, train_images, batch_size=None):
    """Epochs of all the card's stages on `train_images` training images at `batch_size` (default the card's)."""
    batch_size = batch_size or training.batch_size
    steps_per_epoch = -(-train_images // batch_size)
    return sum(stage_epochs(training, s, steps_per_epoch, batch_size) for s in training.stages)


def conversion_text(training, stage, steps_per_epoch, batch_size):
    """How a stage's steps became epochs, for the log and the report ('' for a stage in epochs)."""
    if stage.steps is None:
        return ""
    stated = training.steps_batch_size or training.batch_size
    steps = run_steps(stage.steps, training, batch_size)
    epochs = stage_epochs(training, stage, steps_per_epoch, batch_size)
    at_batch = f" = {steps:,} steps at batch {batch_size}" if batch_size != stated else ""
    return f"{stage.steps:,} steps at batch {stated}{at_batch} -> {epochs} epochs of {steps_per_epoch} steps"


def warmup_steps(training, stage, steps_per_epoch, batch_size, epochs=None):
    """Optimizer steps of the stage's warmup (0: its schedule has none) when it runs `epochs` (default:
    the card's length). A shorter run (a tuner trial) keeps the warmup's share of the stage, as its
    cosine is compressed to the trial's length. Raises UserError when the warmup is not shorter than
    the stage (what the schema cannot check: a warmup in epochs and a stage in steps, or the reverse)."""
    if training.schedule not in WARMUP_SCHEDULES:
        return 0
    run = stage_epochs(training, stage, steps_per_epoch, batch_size) if epochs is None else epochs
    # the card's length; a stage the card skips (epochs 0) that a trial runs is its own reference
    card_epochs = stage_epochs(training, stage, steps_per_epoch, batch_size) or run
    total = card_epochs * steps_per_epoch
    if training.warmup_epochs is not None:
        key, value, warm = (
            "warmup_epochs",
            f"{training.warmup_epochs:g}",
            math.ceil(training.warmup_epochs * steps_per_epoch),
        )
    elif training.warmup_steps is not None:
        key, value, warm = (
            "warmup_steps",
            f"{training.warmup_steps}",
            run_steps(training.warmup_steps, training, batch_size),
        )
    else:  # one_cycle without a stated warmup
        key, value, warm = "", "", round(ONE_CYCLE_RISE * total)
    if key and warm >= total:
        raise UserError(
            f"training.{key} ({value}: {warm} steps at batch {batch_size}) must be shorter than stage {stage.name!r} "
            f"({card_epochs} epochs x {steps_per_epoch} steps = {total}): shorten the warmup or lengthen the stage"
        )
    return warm if run == card_epochs else round(warm * run / card_epochs)


# ------------------------------------------------------------------ the formulas


def _float(value):
    return ops.cast(value, "float32")


def warmup_cosine(step, peak, warmup, total):
    """Linear from 0 to `peak` over `warmup` steps, then a cosine to 0 at `total` (Keras' CosineDecay
    with warmup_target; Goyal et al. 2017, Loshchilov & Hutter 2017)."""
    step, warmup, total = _float(step), _float(warmup), _float(total)
    rising = peak * step / ops.maximum(warmup, 1.0)
    done = ops.clip((step - warmup) / ops.maximum(total - warmup, 1.0), 0.0, 1.0)
    falling = peak * 0.5 * (1.0 + ops.cos(math.pi * done))
    return ops.where(step < warmup, rising, falling)


def one_cycle(step, peak, warmup, total):
    """Smith & Topin's one-cycle as PyTorch's OneCycleLR computes it (cosine annealing, two phases):
    from peak / 25 up to `peak` over `warmup` steps, then down to peak / 25 / 1e4 at `total`.
    The learning rate only: momentum stays the card's."""
    step, warmup, total = _float(step), _float(warmup), _float(total)
    start = peak / ONE_CYCLE_START
    end = start / ONE_CYCLE_END
    up = ops.clip(step / ops.maximum(warmup, 1.0), 0.0, 1.0)
    down = ops.clip((step - warmup) / ops.maximum(total - warmup, 1.0), 0.0, 1.0)
    rising = start + (peak - start) * 0.5 * (1.0 - ops.cos(math.pi * up))
    falling = end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * down))
    return ops.where(step < warmup, rising, falling)


FORMULAS = {"warmup_cosine": warmup_cosine, "one_cycle": one_cycle}


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """one_cycle as a Keras schedule with fixed numbers (a tuner trial reads variables instead)."""

    def __init__(self, peak, warmup, total):
        self.peak, self.warmup, self.total = float(peak), int(warmup), int(total)

    def __call__(self, step):
        return one_cycle(step, self.peak, self.warmup, self.total)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


def plain_schedule(training, learning_rate, steps_per_epoch, epochs, warmup=0):
    """The stage's schedule with fixed numbers: a Keras schedule, or the rate itself (constant, plateau)."""
    steps = max(1, steps_per_epoch)
    total = max(1, epochs * steps)
    kind = training.schedule
    if kind == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, training.step_every * steps, training.decay, staircase=True
        )
    if kind == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, steps, training.decay)
    if kind == "cosine" or (kind == "warmup_cosine" and not warmup):
        return keras.optimizers.schedules.CosineDecay(learning_rate, total)
    if kind == "warmup_cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - warmup), warmup_target=learning_rate, warmup_steps=warmup
        )
    if kind == "one_cycle":
        return OneCycle(learning_rate, warmup, total)
    return learning_rate
