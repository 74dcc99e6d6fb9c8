"""Training monitors: the update/weight ratio (a Keras callback) and the diagnosis at the end of
a training, both read by `train` and `tune` and written next to the run.

The ratio ||dw|| / ||w|| of one update, per trainable layer, should be around 1e-3 (CS231n):
far below means the weights barely move (learning rate too low), far above means each step
rewrites them (too high). It is measured on a few sampled steps per epoch (a weights snapshot
before and after the step), not on every step, and logged as `update_ratio` (the median over
layers) so that CSVLogger puts it into history.csv.

A schedule lowers the learning rate on purpose (cosine ends near 0), and the ratio falls with it.
So each epoch is judged at the stage's peak rate: `update_ratio_at_peak_lr` = the ratio x peak
rate / the rate scheduled at the sampled steps (an update is proportional to the rate for SGD and
Adam alike). A rate 100x too low is too low at its peak too; a cosine tail is not. Likewise under a
stage's lr_multipliers each layer's ratio is divided by its part's factor (a part at 0 does not train
and is left out): a backbone trained at a tenth of the rate on purpose is not "too slow".
"""

import math
import weakref

import keras
import numpy as np
import pandas as pd

from project import logs
from project.train.knobs import part_optimizers

log = logs.get(__name__)

RATIO_LOW, RATIO_HIGH = 1e-5, 1e-1  # a warning outside this band around the ideal 1e-3
GAP = 0.10  # train - val accuracy above this: overfitting
FLAT = 0.10  # the loss fell by less than this fraction of its first value: barely moves


def leaf_layers(model):
    """Every layer that is not itself a model, nested backbones included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


class UpdateRatio(keras.callbacks.Callback):
    """Logs `update_ratio` per epoch: the median over trainable layers of ||dw|| / ||w|| of one
    update, averaged over `samples` sampled steps of the epoch. Prints a WARN once per fit when
    it leaves [RATIO_LOW, RATIO_HIGH]. Put it before CSVLogger so the value reaches the CSV."""

    def __init__(self, samples=4, verbose=True, peak_lr=None):
        super().__init__()
        self.samples = samples
        self.peak_lr = peak_lr  # the schedule's highest rate; None: the rate when the fit begins
        self.verbose = verbose
        self.epoch_values = []  # every epoch of every fit it took part in
        self.warnings = []

    def on_train_begin(self, logs=None):
        # stages change what is trainable: list the layers again at every fit
        trained = [layer for layer in leaf_layers(self.model) if layer.trainable_weights]
        layers = [layer.trainable_weights for layer in trained]
        self._snapshot, self._measure = ratio_functions(self.model, layers)
        self._count = len(layers)
        self._factors = rate_factors(self.model, trained)
        params = self.params or {}
        steps = params.get("steps") or 40
        self._every = max(1, steps // self.samples)
        self._peak = self.peak_lr or current_learning_rate(self.model.optimizer)
        self._before = None
        self._warned = False

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = np.zeros(self._count)
        self._counts = np.zeros(self._count)
        self._rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self._before = self._snapshot() if batch % self._every == 0 else None
        if self._before is not None:
            self._rates.append(current_learning_rate(self.model.optimizer))  # the rate this step applies

    def on_train_batch_end(self, batch, logs=None):
        if self._before is None:
            return
        change, norm = (keras.ops.convert_to_numpy(v) for v in self._measure(self._before))
        counted = (norm != 0) & (self._factors > 0)  # a NaN norm counts: the weights blew up
        self._sums[counted] += change[counted] / norm[counted] / self._factors[counted]
        self._counts[counted] += 1
        self._before = None

    def on_epoch_end(self, epoch, logs=None):
        if not self._counts.any():
            return
        per_layer = self._sums[self._counts > 0] / self._counts[self._counts > 0]
        value = float(np.median(per_layer))
        value = value if math.isfinite(value) else math.inf  # weights became NaN: the update blew up
        rate = float(np.mean(self._rates))
        at_peak = value * self._peak / rate if rate > 0 and self._peak else math.nan  # a rate of 0 says nothing
        self.epoch_values.append(at_peak)
        if logs is not None:
            logs["update_ratio"] = value
            logs["update_ratio_at_peak_lr"] = at_peak
        summary = ratio_summary([at_peak])
        if summary["status"] == "WARN" and not self._warned:
            self._warned = True
            scaled = f" ({value:.1e} at the scheduled rate {rate:.2g})" if rate != self._peak else ""
            message = (
                f"WARN  update/weight ratio {at_peak:.1e} at the peak learning rate {self._peak:.2g}{scaled}, "
                f"epoch {epoch + 1} (median of {len(per_layer)} layers): {summary['advice']}"
            )
            self.warnings.append(message)
            if self.verbose:
                log.warning(message)

    def summary(self):
        return ratio_summary(self.epoch_values)


def rate_factors(model, layers):
    """Each layer's factor of the stage's rate: its part's lr multiplier (the backbone layer's or the
    head's optimizer, project.train.training.stage_optimizer), 1 for all under one optimizer."""
    parts = part_optimizers(model.optimizer)
    if not parts:
        return np.ones(len(layers))
    inside = {id(layer) for layer in leaf_layers(model.get_layer("backbone"))}
    return np.array([parts["backbone" if id(layer) in inside else "head"].lr_multiplier for layer in layers])


def current_learning_rate(optimizer):
    """The rate the optimizer applies at its current step (a schedule evaluated, or the variable); for a
    stage with lr_multipliers (a MultiOptimizer), the stage's own rate: a part's rate over its factor."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    for part in getattr(optimizer, "optimizers", ()):
        if getattr(part, "lr_multiplier", 0):
            return float(keras.ops.convert_to_numpy(part.learning_rate)) / part.lr_multiplier
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {variable ids: (snapshot, measure)}


def ratio_functions(model, layers):
    """_ratio_functions for these layers of `model`, built once: a new pair would be traced again at
    every fit, ~0.5 s of each tuner trial that reuses a compiled model."""
    key = tuple(id(w) for weights in layers for w in weights)
    cached = _FUNCTIONS.setdefault(model, {})
    if key not in cached:
        cached[key] = _ratio_functions(layers)
    return cached[key]


def _ratio_functions(layers):
    """A copy of every tracked variable as one flat tensor, and per layer ||w - before|| and
    ||before|| (segment sums over that vector), as compiled TensorFlow functions: a sample costs
    milliseconds, where copying each variable to NumPy (or eager ops) costs far more."""
    import tensorflow as tf

    flat = [w.value for weights in layers for w in weights]
    sizes = [sum(int(np.prod(w.shape)) for w in weights) for weights in layers]
    segments = tf.constant(np.repeat(np.arange(len(layers)), sizes), dtype=tf.int32)

    @tf.function
    def snapshot():
        return tf.concat([tf.reshape(w if w.dtype == tf.float32 else tf.cast(w, tf.float32), [-1]) for w in flat], 0)

    @tf.function
    def norms(before, now):
        change = tf.math.segment_sum(tf.square(now - before), segments)
        return tf.sqrt(change), tf.sqrt(tf.math.segment_sum(tf.square(before), segments))

    return snapshot, lambda before: norms(before, snapshot())


def monitor_callbacks(peak_lr=None):
    """The monitors to add to a training's callbacks (before CSVLogger); `peak_lr`: the highest rate
    the stage's schedule reaches (the card's rate for constant, step, exponential, cosine and plateau)."""
    return [UpdateRatio(peak_lr=peak_lr)]


def ratio_summary(values):
    """PASS / WARN for per-epoch update/weight ratios (e.g. the history.csv column)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype="float64")
    if not len(values):
        return {"status": "n/a", "median": None, "epochs": 0, "advice": "no update/weight ratio was recorded"}
    finite = values[np.isfinite(values)]
    median = float(np.median(values)) if len(finite) == len(values) else math.inf
    summary = {
        "median": median,
        "min": float(finite.min()) if len(finite) else None,
        "max": float(finite.max()) if len(finite) else None,
        "epochs": int(len(values)),
        "band": [RATIO_LOW, RATIO_HIGH],
        "ideal": 1e-3,
    }
    if median < RATIO_LOW:
        return {
            **summary,
            "status": "WARN",
            "advice": "updates are tiny next to the weights (ideal ~1e-3): raise the learning rate",
        }
    if median > RATIO_HIGH:
        return {
            **summary,
            "status": "WARN",
            "advice": "each update rewrites the weights (ideal ~1e-3): lower the learning rate",
        }
    return {**summary, "status": "PASS", "advice": "update/weight ratio is within the healthy band around 1e-3"}


def capacity_advice(frozen_layers):
    if frozen_layers:
        return "unfreeze more backbone layers, use a bigger head or a bigger backbone"
    return "add capacity (more filters or blocks, a wider backbone, a hidden head layer) or train for more epochs"


def _last(table, column, epochs=3):
    """Mean of the last few epochs (smooths one noisy epoch)."""
    if column not in table or not table[column].notna().any():
        return None
    return float(table[column].dropna().tail(epochs).mean())


def diagnose(history, target=0.9, gap=GAP, frozen_layers=0):
    """What the curves say and what to change, from a history table (history.csv columns:
    loss, accuracy, val_loss, val_accuracy, optionally update_ratio_at_peak_lr).

    `frozen_layers`: backbone layers the last stage kept frozen; capacity advice suggests
    unfreezing only when some are (a from-scratch network has nothing to unfreeze).

    `target`: the accuracy the card aims at; training accuracy below target - 0.05 with no gap
    means the model cannot even fit the training set (too little capacity or too short).
    Returns {"status": "ok" | "problems", "summary": one line, "findings": [...]}, each finding
    {"problem", "evidence", "advice"}.
    """
    table = pd.DataFrame(history)
    findings = []
    loss = pd.to_numeric(table.get("loss", pd.Series(dtype="float64")), errors="coerce")
    if loss.empty:
        return {"status": "n/a", "summary": "no training history", "findings": []}
    first, best, final = float(loss.iloc[0]), float(loss.min()), float(loss.iloc[-1])
    train_acc, val_acc = _last(table, "accuracy"), _last(table, "val_accuracy")
    ratio = ratio_summary(table["update_ratio_at_peak_lr"]) if "update_ratio_at_peak_lr" in table else None

    exploded = not np.isfinite(loss).all() or (len(loss) > 1 and final > 2 * best and final > first)
    if exploded or (ratio and ratio["status"] == "WARN" and ratio["median"] > RATIO_HIGH):
        evidence = (
            "the loss became NaN/inf"
            if not np.isfinite(loss).all()
            else f"loss went from {first:.3g} down to {best:.3g}, then up to {final:.3g}"
        )
        if ratio and ratio["median"] is not None and ratio["median"] > RATIO_HIGH:
            evidence += f"; update/weight ratio {ratio['median']:.1e} (> {RATIO_HIGH:g})"
        findings.append(
            {
                "problem": "learning rate too high",
                "evidence": evidence,
                "advice": "lower the learning rate (by 3-10x) or add warm-up; `make sanity` shows where the loss explodes",
            }
        )
    elif len(loss) > 1 and (first - best) < FLAT * first and (train_acc is None or train_acc < target):
        evidence = (
            f"loss {first:.3g} -> {final:.3g} over {len(loss)} epochs (fell by {100 * (first - best) / first:.1f}%)"
        )
        if ratio and ratio["median"] is not None and ratio["median"] < RATIO_LOW:
            evidence += f"; update/weight ratio {ratio['median']:.1e} (< {RATIO_LOW:g})"
        findings.append(
            {
                "problem": "learning rate too low",
                "evidence": evidence,
                "advice": "the loss barely moves: raise the learning rate (3-10x); if it still does not move, run `make sanity` to look for a bug in data, labels or model",
            }
        )
    elif ratio and ratio["status"] == "WARN" and ratio["median"] < RATIO_LOW:
        findings.append(
            {
                "problem": "learning rate too low",
                "evidence": f"update/weight ratio {ratio['median']:.1e} (< {RATIO_LOW:g})",
                "advice": "updates are tiny next to the weights: raise the learning rate",
            }
        )

    if train_acc is not None and val_acc is not None and train_acc - val_acc > gap:
        val_loss = pd.to_numeric(table.get("val_loss", pd.Series(dtype="float64")), errors="coerce").dropna()
        rising = (
            f"; val_loss rose from {val_loss.min():.3g} to {val_loss.iloc[-1]:.3g}"
            if len(val_loss) and val_loss.iloc[-1] > 1.1 * val_loss.min()
            else ""
        )
        findings.append(
            {
                "problem": "overfitting",
                "evidence": f"train accuracy {train_acc:.3f} vs val {val_acc:.3f} (gap {train_acc - val_acc:.3f} > {gap:g}){rising}",
                "advice": "more regularisation (dropout, l2, weight decay), stronger augmentation, more data, or stop earlier",
            }
        )
    elif (
        train_acc is not None
        and train_acc < target - 0.05
        and (val_acc is None or val_acc < target - 0.05)
        and not findings
    ):
        # both low: a low training accuracy alone is what augmentation and dropout do on purpose
        still = loss.iloc[-min(3, len(loss))] - final > 0.05 * final if len(loss) > 1 else False
        findings.append(
            {
                "problem": "too little capacity",
                "evidence": f"train accuracy {train_acc:.3f} and val {val_acc if val_acc is not None else float('nan'):.3f} "
                f"below the target {target:g} with no train/val gap"
                + (f"; the loss was still falling ({final:.3g})" if still else ""),
                "advice": ("train longer (the loss is still falling), " if still else "")
                + capacity_advice(frozen_layers),
            }
        )

    if not findings:
        return {
            "status": "ok",
            "summary": "training looks healthy: the loss fell, no large train/val gap, the ratio is in band",
            "findings": [],
        }
    return {"status": "problems", "summary": "; ".join(f["problem"] for f in findings), "findings": findings}
