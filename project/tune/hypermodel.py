"""The hypermodel of one search stage: Keras Tuner's HyperModel over the card, and the callbacks a
trial trains with (the explosion guard, the clock of its time inside model.fit).

declare_hyperparameters declares the stage's space; build makes the trial's card and its model
(project.model.classifier.build_model, or a compiled model from project.tune.reuse); fit trains
it like the baseline (project.train.training.fit_stages) into the trial folder that
project.tune.tuning.StageTuner.run_trial passes.
"""

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd

from project.config.cards import with_values
from project.model.backbones import WeightsSource
from project.model.classifier import build_model
from project.train.knobs import Knobs, set_knobs
from project.train.training import combined_history, compile_model, fit_stages, training_stats
from project.tune.reuse import ModelCache, architecture_key, initial_state, seed_trial, set_head_dropout
from project.tune.search_space import card_values

EXPLOSION = 3.0  # a trial explodes when its training loss exceeds this times its first value


class TrialExploded(keras_tuner.errors.FailedTrialError):
    """The training loss exploded: Keras Tuner marks the trial FAILED and never retries it."""


class ExplosionGuard(keras.callbacks.Callback):
    """Ends a trial within the epoch where the training loss exceeds EXPLOSION x its first
    recorded value, or is NaN/inf (Keras's running mean of the epoch, checked every batch)."""

    def __init__(self, factor=EXPLOSION):
        super().__init__()
        self.factor, self.first, self.epochs, self.reason = factor, None, 0, ""

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.reason = f"exploded: training loss is {loss} in epoch {self.epochs}, batch {batch + 1}"
        elif self.first is None:
            self.first = loss
        elif loss > self.factor * self.first:
            self.reason = (
                f"exploded: training loss {loss:.4g} > {self.factor:g}x its first value {self.first:.4g} "
                f"in epoch {self.epochs}, batch {batch + 1}"
            )
        if self.reason:
            raise TrialExploded(self.reason)


class FitClock(keras.callbacks.Callback):
    """Seconds inside model.fit, an exploded fit included (on_train_end never comes then): the
    rest of a trial's wall time is the search's own overhead (build, datasets, bookkeeping).
    And each epoch's seconds (the first holds the tracing), which a time budget is planned from."""

    def __init__(self):
        super().__init__()
        self.seconds, self.start, self.epoch_seconds = 0.0, None, []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(round(time.perf_counter() - self.epoch_start, 3))

    def on_train_end(self, logs=None):
        if self.start is not None:
            self.seconds += time.perf_counter() - self.start
            self.start = None


def declare(hp, space):
    """Register the space's hyperparameters; return this trial's values."""
    values = {}
    for name, e in space.items():
        if e["type"] == "choice":
            values[name] = hp.Choice(name, e["choices"])
        elif e["type"] == "fixed":
            values[name] = hp.Fixed(name, e["value"])
        elif e["type"] == "int":
            values[name] = hp.Int(name, e["min"], e["max"], step=e["step"], sampling=e["sampling"])
        else:
            values[name] = hp.Float(name, e["min"], e["max"], step=e["step"], sampling=e["sampling"])
    return values


def trial_config(config, space, values):
    return with_values(config, card_values(space, values, len(config.paper.model.head.hidden)))


@dataclass
class TrialModel:
    """What CardHyperModel.build hands to the fit that follows: the trial's model, the card with the
    trial's values, and how the model was made."""

    model: keras.Model
    config: object  # the card with the trial's values
    weights: WeightsSource
    knobs: Knobs
    key: str | None  # architecture_key: a compiled model is cached under it (None: never cached)
    reused: bool  # a compiled model from the cache: fit only sets the trial's values
    initial: tuple | None  # a fresh model's initial_state(), cached with it once compiled


class CardHyperModel(keras_tuner.HyperModel):
    """One search stage: its space and its epochs per training stage. declare_hyperparameters: the
    space; build: the card with the trial's values -> project.model.classifier.build_model; fit: the
    card's training stages (project.train.training.fit_stages, so trials train like the baseline)
    with the trial's batch size, into the trial folder Tuner.run_trial gives it.

    A one-stage card's trials of the same architecture share one compiled model (project.tune.reuse;
    the stages of a search share their `cache`): build hands out the cached model holding the fresh
    model's initial state, and fit sets the trial's values instead of compiling again. Keras Tuner
    also builds once while it sets a stage up (Tuner.__init__); that model is never trained."""

    def __init__(self, config, data, objective, *, space, epochs, stats=None, settings=None, cache=None, folds=()):
        super().__init__(name=config.run_name)
        self.config, self.data, self.objective = config, data, objective
        self.folds = list(folds)  # search.folds: each trial trains on each of these Data, scored on the mean
        self.space, self.epochs = space, epochs
        self.stats = training_stats(data, config.paper) if stats is None else stats  # input size is not searched
        self.settings = settings or {"jit_compile": False, "replicas": 1}  # project.train.runtime's choice
        self.cache = ModelCache() if cache is None else cache
        self.built = None  # the TrialModel of the last build, for the fit that follows

    def declare_hyperparameters(self, hp):
        declare(hp, self.space)

    def build(self, hp):
        config = trial_config(self.config, self.space, declare(hp, self.space))
        paper = config.paper
        seed_trial(paper.seed)
        key = architecture_key(paper) if len(paper.training.stages) == 1 else None  # one compiled state per stage
        model, weights, knobs, reused = self.cache.take(
            key,
            paper.seed,
            lambda: build_model(paper.model, self.data.num_classes, self.stats, l2=paper.training.l2),
        )
        initial = None if reused else initial_state(model, weights)
        if reused:
            set_head_dropout(model, paper.model.head.dropout)
        self.built = TrialModel(model, config, weights, knobs, key, reused, initial)
        return model

    def compile_stage(
        self, built, model, paper, learning_rate, steps_per_epoch, epochs, jit_compile, stage=None, warmup_steps=0
    ):
        """fit_stages' compile step: a reused model only takes the trial's values."""
        if built.reused:
            multipliers = stage.lr_multipliers if stage is not None else None
            set_knobs(
                model, built.knobs, paper.training, learning_rate, steps_per_epoch, epochs, multipliers, warmup_steps
            )
            return
        compile_model(
            model,
            paper,
            learning_rate,
            steps_per_epoch,
            epochs,
            jit_compile,
            knobs=built.knobs,
            stage=stage,
            warmup_steps=warmup_steps,
        )
        if built.key is not None:
            self.cache.keep(built.key, paper.seed, model, built.knobs, built.initial)

    def fit(self, hp, model, *args, folder, clock=None, callbacks=(), verbose=1, **kwargs):
        """Train `model`, which build(hp) returned, into the trial's `folder`; `clock` (a FitClock)
        times it. The tuner's callbacks (its hooks) ride along with ours. Returns the best epoch's
        metrics, for the oracle."""
        built, self.built = self.built, None  # held no longer than the trial: its model may hold traced graphs
        if built is None or built.model is not model:
            raise ValueError("CardHyperModel.fit trains the model its last build returned")
        if not self.folds:
            self.fit_one(built, self.data, folder, callbacks, clock, verbose)
            return best_epoch(trial_history(folder, built.config.paper), self.objective)
        # search.folds: the same initial model (rebuilt from the trial's seed, or the cached one reset) on each fold
        best = []
        for k, data in enumerate(self.folds, start=1):
            if k > 1:
                self.build(hp)
                built, self.built = self.built, None
            self.fit_one(built, data, Path(folder) / f"fold{k}", callbacks, clock, verbose)
            best.append(best_epoch(trial_history(Path(folder) / f"fold{k}", built.config.paper), self.objective))
        return {key: float(np.mean([b[key] for b in best])) for key in best[0] if all(key in b for b in best)}

    def fit_one(self, built, data, folder, callbacks, clock, verbose):
        paper = built.config.paper
        fit_stages(
            built.model,
            paper,
            data,
            folder,
            weights=built.weights,
            epochs=self.epochs,
            batch_size=paper.training.batch_size * self.settings["replicas"],
            extra_callbacks=[*callbacks, ExplosionGuard(), *([clock] if clock is not None else [])],
            verbose=verbose,
            jit_compile=self.settings["jit_compile"],
            trial=True,
            compile_stage=partial(self.compile_stage, built),
        )


def trial_history(folder, paper):
    return combined_history(folder, [s.name for s in paper.training.stages])


def fold_histories(folder, paper):
    """The trial's history, or one per fold (search.folds: trained in folder/fold1, fold2, ...)."""
    folds = sorted(Path(folder).glob("fold*"), key=lambda f: int(f.name[4:]) if f.name[4:].isdigit() else 0)
    return [trial_history(f, paper) for f in folds] if folds else [trial_history(folder, paper)]


def best_epoch(history, objective):
    """The metrics of the trial's best epoch, for the oracle."""
    name = objective.name
    if name not in history or history[name].isna().all():
        raise keras_tuner.errors.FailedTrialError(f"no {name} recorded (NaN or missing)")
    values = history[name]
    row = history.loc[values.idxmax() if objective.direction == "max" else values.idxmin()]
    return {
        k: float(row[k]) for k in history.columns if k not in ("stage", "epoch", "global_epoch") and pd.notna(row[k])
    }
