"""The learning-rate range test of `make sanity` (check 4; Smith 2017, fastai's lr_find): one training
step per rate on an exponential grid, the loss read on a fixed held batch after each, and where it
falls, falls fastest, bottoms out and explodes. project.train.sanity turns it into a PASS / WARN."""

import itertools
import math

import keras
import numpy as np
import pandas as pd

FALL_STARTS = 0.03  # the loss "starts to fall" once 3% below its start (the sweep's success is a 10% fall)


def held_loss(model, x, y):
    """A function returning the compiled loss on one fixed batch, in training mode (batch statistics,
    as a step sees them), traced once: the sweep calls it after every step."""
    import tensorflow as tf

    loss_fn = keras.losses.get(model.loss)
    x, y = tf.constant(x), tf.constant(y)
    compute = tf.function(lambda: keras.ops.mean(loss_fn(y, model(x, training=True))))
    return lambda: float(compute())


def blew_up(loss, step_loss, average, best, start, explode=4.0):
    """Where the sweep stops: a non-finite loss, the held loss above `explode` x its best average so far
    (fastai), or, once it has fallen by 10%, its average back above where it started: a classifier driven
    too hard often collapses to chance rather than blowing up."""
    if not (math.isfinite(loss) and math.isfinite(step_loss)):
        return True
    return loss > explode * best or (best < 0.9 * start and average > start)


def lr_sweep(model, batches, min_lr=1e-7, max_lr=10.0, steps=100, explode=4.0, beta=0.9, held=None):
    """One training step per learning rate on an exponential grid (Smith 2017, fastai's lr_find), on
    a compiled model, each followed by the loss on one fixed `held` batch (default: the first batch),
    until the loss blows up.

    The held loss, not the step's own: the step's loss is on a new (augmented) batch every time, and
    its batch-to-batch noise hides a 10% fall over a short sweep; on a fixed batch, any change is a
    change of the model. Its average is a debiased EMA, as fastai's."""
    lrs = np.geomspace(min_lr, max_lr, steps)
    source = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else iter(batches.repeat())
    if held is None:
        held = batches[0] if isinstance(batches, (list, tuple)) else next(iter(batches))
    measure = held_loss(model, *held)
    start = measure()
    losses, step_losses, ema, best, exploded = [], [], 0.0, math.inf, None
    for i, lr in enumerate(lrs):
        x, y = next(source)
        model.optimizer.learning_rate = float(lr)
        step_losses.append(float(model.train_on_batch(x, y, return_dict=True)["loss"]))
        losses.append(measure())
        ema = beta * ema + (1 - beta) * losses[-1]
        average = ema / (1 - beta ** (i + 1))
        if blew_up(losses[-1], step_losses[-1], average, best, start, explode):
            exploded = i
            break
        best = min(best, average)
    return {
        "lr": lrs[: len(losses)].tolist(),
        "loss": losses,
        "step_loss": step_losses,
        "start_loss": start,
        "exploded_at": exploded,
    }


def sweep_window(lrs, decades=0.25, least=5):
    """An odd number of sweep points spanning about `decades` of learning rate (at least `least`)."""
    per_decade = (len(lrs) - 1) / max(math.log10(lrs[-1] / lrs[0]), 1e-12)
    return max(least, int(round(decades * per_decade)) // 2 * 2 + 1)


def smooth(values, window):
    # centred: no lag, so a minimum sits at the learning rate that produced it
    return pd.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()


def steepest(losses, lrs, i_min, window):
    """(index of the steepest fall before the minimum i_min, first and last index of the region around it
    falling at least half as fast), the slope taken over about half a decade: a one-step slope of a noisy
    curve points anywhere."""
    if i_min < 2:
        return i_min, 0, i_min
    slope = np.gradient(smooth(losses, 2 * window - 1)[: i_min + 1], np.log10(lrs[: i_min + 1]))
    steep = int(np.argmin(slope))
    fast = slope <= 0.5 * slope[steep]
    first = last = steep
    while first > 0 and fast[first - 1]:
        first -= 1
    while last < i_min and fast[last + 1]:
        last += 1
    return steep, first, last


def read_sweep(sweep):
    """Where the loss starts to fall, falls fastest, bottoms out and explodes, and a coarse search range:
    Smith's bounds, from where the loss starts to fall up to its minimum, past which steps undo what
    earlier ones learned; two decades at least."""
    lrs, losses, exploded = np.asarray(sweep["lr"]), np.asarray(sweep["loss"], dtype=float), sweep["exploded_at"]
    end = max(1, len(losses) if exploded is None else exploded)
    lrs_used, window, start = lrs[:end], sweep_window(lrs), sweep["start_loss"]
    smoothed = smooth(losses[:end], window)
    i_min = int(np.argmin(smoothed))
    steep, first, last = steepest(losses[:end], lrs_used, i_min, window)
    falling = np.flatnonzero(smoothed[: i_min + 1] < (1 - FALL_STARTS) * start)
    falls_from = float(lrs_used[falling[0] if len(falling) else i_min])
    high = float(lrs_used[i_min])
    low = max(float(lrs[0]), min(falls_from, high / 100))
    return {
        "start_loss": start,
        "min_loss": float(smoothed[i_min]),
        "fell": bool(smoothed[i_min] < 0.9 * start),
        "lr_falls_from": falls_from,
        "lr_steepest": float(lrs_used[steep]),
        "falls_fastest": [float(lrs_used[first]), float(lrs_used[last])],
        "lr_at_min": high,
        "lr_explodes": float(lrs[exploded]) if exploded is not None else None,
        "suggested_range": [low, high],
        "smoothed": smoothed.tolist(),
    }
