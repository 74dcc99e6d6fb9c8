"""Hyperparameter search: Keras Tuner random search, coarse -> fine, then the final round.

runs/<paper>__<dataset>/tuning/
    coarse/, fine/          one Keras Tuner project per stage (oracle.json, trial_*/trial.json),
                            plus our trial_*/meta.json (project.tune.trials) and each trial's training logs
    fine_space.json         the narrowed space, fixed when the fine stage first starts
    trials.csv              every trial of both stages, rewritten whenever a trial ends
    budget.json             the trial counts a time budget fixed (project.tune.search_plan)
    <stage>/trial_*/error.log   a failed or exploded trial's full traceback (the console gets one line)
    summary.json            the spaces, the budget, the finalists, the final round, the edge-of-range warnings
    config.resolved.yaml    the configuration searched (another one moves tuning/ aside)
runs/<paper>__<dataset>/finalists/   the top trials trained at full length (project.tune.final_round)
runs/<paper>__<dataset>/tuned/       the best finalist, + best_hyperparameters.json

Each stage's trials are built and trained by its hypermodel (project.tune.hypermodel); trials of one
architecture share a compiled model (project.tune.reuse). Distributed, on Keras Tuner's
chief/worker mode (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT): the chief
runs each stage's oracle (coarse on PORT, fine on PORT+1), writes trials.csv and runs the final
round; workers run the trials. Every process must see the same runs/ folder (a shared
filesystem), as Keras Tuner's own trial checkpoints do.
"""

import json
import logging
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd
import tensorflow as tf
import yaml

from project import faults, logs
from project.artifacts import archive, atomic_write, cannot_write, disk_problem, read_json, run_root, write_json
from project.data.prepare import prepare
from project.errors import UserError
from project.records import FineSpace
from project.train import runtime
from project.train.schedules import card_epochs
from project.train.training import training_stats
from project.tune.final_round import final_round, retrain, summarize
from project.tune.hparams_log import write_hparams
from project.tune.hypermodel import CardHyperModel, FitClock, TrialExploded, fold_histories
from project.tune.reuse import ModelCache
from project.tune.search_check import check_search, require_test, trial_folds
from project.tune.search_plan import BUDGET, Progress, check_budget, duration, headline, plan_budget, trial_row
from project.tune.search_space import narrow
from project.tune.trials import META, STAGES, ended, fixed_seconds, ranked, read_trials, write_trials_csv
from project.tune.tuner_state import reload

log = logs.get(__name__)

NO_LIMIT = 10**9  # max_consecutive_failed_trials: failed trials never end the search
ERROR_LOG = "error.log"  # in a failed trial's folder: the traceback Keras Tuner caught
FAILED = (keras_tuner.engine.trial.TrialStatus.FAILED, keras_tuner.engine.trial.TrialStatus.INVALID)


@contextmanager
def released_step_graphs():
    """TensorFlow 2.21 leak (tensorflow/tensorflow#97697, fix pending upstream): every traced train
    step registers a CustomGradient-N function in TF's global gradient registry whose closure pins
    the whole step graph, ~100 MB per MobileNetV2 trial, never freed. A trial's train step is never
    differentiated again once the trial is over: drop the entries it registered (a private dict,
    hence the guard; the same purge as keras-team/tf-keras#898 proposes for clear_session)."""
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for key in set(registry) - before:
                if key.startswith("CustomGradient-"):
                    del registry[key]


@contextmanager
def tracebacks_to_trial_logs():
    """Keras Tuner prints the whole traceback of every failed trial to stderr while its config
    flag DEBUG is on (the default), expected explosions included. It also keeps that traceback
    as the trial's message, which StageTuner.on_trial_end writes to the trial's error.log, and the
    progress line says why the trial failed: the print is turned off for the search (the flag is
    Keras Tuner's only switch for it; were it gone, the tracebacks would just print again)."""
    from keras_tuner.src import config as keras_tuner_config

    before = getattr(keras_tuner_config, "DEBUG", None)
    keras_tuner_config.DEBUG = False
    try:
        yield
    finally:
        keras_tuner_config.DEBUG = before


def trial_log(folder, stage, trial_id):
    """A trial's error.log (Keras Tuner names a trial's folder trial_<id> in the stage's project)."""
    return Path(folder) / stage / f"trial_{trial_id}" / ERROR_LOG


# ------------------------------------------------------------------ who runs what


def role():
    """local, chief or worker (Keras Tuner's distributed mode, from its environment variables)."""
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return "local"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise UserError(
            f"distributed tuning: KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not "
            f"(set all three, as `make tune-chief` and `make tune-worker WORKER=n` do)"
        )
    if not os.environ["KERASTUNER_ORACLE_PORT"].isdigit():
        raise UserError(f"KERASTUNER_ORACLE_PORT must be a port number, got {os.environ['KERASTUNER_ORACLE_PORT']!r}")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def worker_id():
    return os.environ.get("KERASTUNER_TUNER_ID") or "local"


@contextmanager
def stage_port(offset):
    """Each stage has its own oracle: the fine stage's listens on KERASTUNER_ORACLE_PORT + 1."""
    port = os.environ.get("KERASTUNER_ORACLE_PORT")
    if port is None or not offset:
        yield
        return
    os.environ["KERASTUNER_ORACLE_PORT"] = str(int(port) + offset)
    try:
        yield
    finally:
        os.environ["KERASTUNER_ORACLE_PORT"] = port


# ------------------------------------------------------------------ tuner and oracle


class StageOracle(keras_tuner.oracles.RandomSearchOracle):
    """Keras Tuner's random search oracle, rewriting trials.csv and printing the progress line
    whenever a trial ends: the oracle is the one place that sees every trial end, locally and as the
    distributed chief. With a time budget, the first coarse trial's end fixes the trial counts.
    Its files are written atomically and read back even when cut short (project.tune.tuner_state);
    `declared`: the hypermodel's space, which a search whose oracle.json is unreadable starts from."""

    def __init__(self, folder, stage=None, progress=None, budget=None, declared=None, **kwargs):
        super().__init__(**kwargs)
        self.folder, self.stage, self.progress, self.budget = Path(folder), stage, progress, budget
        self.declared = declared or keras_tuner.HyperParameters()

    def save(self):
        atomic_write(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        atomic_write(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", json.dumps(trial.get_state()))

    def reload(self):
        reload(self, META)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        if self.budget is not None and not (self.folder / BUDGET).exists():
            self.max_trials = plan_search(self.folder, self.budget, self.progress)["coarse"]
        table = write_trials_csv(self.folder, self.objective.name)
        if self.progress is not None:
            path = trial_log(self.folder, self.stage, trial.trial_id)
            line = self.progress.line(self.stage, table, trial.trial_id, path if path.exists() else None)
            surprise = trial_row(table, self.stage, trial.trial_id)["status"] == "failed"  # not an explosion
            log.log(logging.WARNING if surprise else logging.INFO, line)


class StageTuner(keras_tuner.Tuner):
    """Keras Tuner's Tuner (RandomSearch = Tuner + RandomSearchOracle) that writes meta.json per trial."""

    def __init__(self, *args, stage, **kwargs):
        self.stage = stage
        super().__init__(*args, **kwargs)

    def save(self):
        """Keras Tuner's save, atomically (its tuner file holds an empty state, so reload never reads it)."""
        if not self._is_worker():
            self.oracle.save()
        atomic_write(self._get_tuner_fname(), json.dumps(self.get_state()))

    def reload(self):
        if not self._is_worker():
            self.oracle.reload()

    def run_trial(self, trial, *args, **kwargs):
        model = self.hypermodel  # the stage's CardHyperModel
        folder = Path(self.get_trial_dir(trial.trial_id))
        path = folder / META
        meta = read_json(path) if path.exists() else {"starts": 0, "wall_seconds": 0.0}
        meta.update(
            stage=self.stage,
            values=dict(trial.hyperparameters.values),  # what rebuilds the trial if its trial.json is lost
            worker=worker_id(),
            seed=model.config.paper.seed,
            status="running",
            reason="",
            starts=meta["starts"] + 1,
        )
        write_json(path, meta)
        clock, reused = FitClock(), False  # what the trial's meta.json records of its fit
        start = time.perf_counter()
        try:
            with released_step_graphs(), self.strategy_scope():
                # Keras Tuner's documented override: its own run_trial clears the session before every
                # build (which would discard the compiled models trials reuse) and checkpoints the best
                # epoch's weights, which the search never reads (the best values are retrained).
                # The trial's folder and clock go to the hypermodel's fit as keyword arguments.
                hp = trial.hyperparameters
                network = model.build(hp)
                reused = network.compiled  # a compiled model from project.tune.reuse: no build, compile nor tracing
                results = model.fit(hp, network, *args, folder=folder, clock=clock, **kwargs)
            meta["status"] = "completed"
            return results
        except TrialExploded as error:
            meta.update(status="exploded", reason=str(error))
            raise
        except UserError as error:  # the card cannot work: stop the search, say why
            meta.update(status="failed", reason=str(error))
            raise keras_tuner.errors.FatalError(str(error)) from error
        except Exception as error:
            meta.update(status="failed", reason=f"{type(error).__name__}: {error}")
            problem = disk_problem(error)  # a full disk fails every trial after it: stop, never a failed trial
            if problem:
                stop = UserError(cannot_write(problem[0] or folder, *problem[1:]))
                raise keras_tuner.errors.FatalError(str(stop)) from stop
            raise
        finally:
            clock.on_train_end()  # an exception skipped it
            meta["wall_seconds"] = round(meta["wall_seconds"] + time.perf_counter() - start, 2)
            meta["fit_seconds"] = round(meta.get("fit_seconds", 0.0) + clock.seconds, 2)
            meta["epoch_seconds"] = clock.epoch_seconds
            meta["reused"] = reused  # the trial took a compiled model: no build, compile nor tracing
            meta["fixed_seconds"] = fixed_seconds(meta)
            meta.update(outcome(folder, model, meta["status"] == "exploded"))
            try:
                write_json(path, meta)
            except UserError as error:  # a full disk again: stop the search with it (Keras Tuner would go on)
                raise keras_tuner.errors.FatalError(str(error)) from error

    def on_trial_end(self, trial):
        """Keras Tuner's hook once a trial has run, before the oracle records its end: a failed
        trial's traceback (trial.message, Keras Tuner's own) goes to its error.log. The oracle's
        progress line gives the reason; a worker, which prints no progress line, says it here."""
        if trial.status in FAILED and trial.message:
            path = Path(self.get_trial_dir(trial.trial_id)) / ERROR_LOG
            atomic_write(path, trial.message)
            if role() == "worker":
                meta = read_json(path.with_name(META))
                log.info(
                    f"[{self.stage}] trial {trial.trial_id} {meta['status']}: {headline(meta['reason'])} (traceback in {path})"
                )
        super().on_trial_end(trial)
        faults.checkpoint("trial.end")  # between two trials: this one recorded, the next not begun

    def strategy_scope(self):
        return self.distribution_strategy.scope() if self.distribution_strategy else nullcontext()


def outcome(folder, model, exploded):
    """Best and last objective and epochs run, from the trial's training logs (`model`: the
    CardHyperModel; a trial's values never change the names of the card's training stages).
    With search.folds: the mean over the folds of each fold's best and last, and every fold's epochs."""
    histories = fold_histories(folder, model.config.paper)
    name = model.objective.name
    series = [h[name].dropna() if name in h else pd.Series(dtype=float) for h in histories]
    pick = pd.Series.max if model.objective.direction == "max" else pd.Series.min
    complete = all(len(values) for values in series)
    return {
        "best": float(np.mean([pick(values) for values in series])) if complete else None,
        "last": float(np.mean([values.iloc[-1] for values in series])) if complete else None,
        "epochs_run": sum(len(h) for h in histories) + (1 if exploded else 0),  # the epoch it exploded in counts
    }


# ------------------------------------------------------------------ the search


def search_identity(config):
    """What makes two searches the same: the cards, except trial counts and epochs per stage."""
    data = config.model_dump(mode="json", exclude={"paper_file", "dataset_file", "overrides"})
    for stage in STAGES:
        data["paper"]["search"].pop(stage, None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def prepare_search_folder(folder, config, fresh, who):
    """Resume the same search; move a different (or --fresh) one aside. Workers never move anything."""
    identity, saved = search_identity(config), folder / "config.resolved.yaml"
    if who == "worker":
        if fresh:
            log.warning("--fresh is ignored on a worker: the chief moves the previous search aside")
        if saved.exists() and saved.read_text() != identity:
            raise UserError(
                f"{saved} was written for another configuration: start the workers with the chief's cards and --set"
            )
        return
    if folder.exists() and (fresh or (saved.exists() and saved.read_text() != identity)):
        log.info(f"previous search moved to {archive(folder)}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, identity)


def strategy_of(card_runtime):
    """project.train.runtime's settings, and its strategy for Keras Tuner to build each trial under
    (Keras Tuner clears the session between trials, so a scope cannot stay open around the search)."""
    r = card_runtime
    settings, scope = runtime.apply(r.mixed_precision, r.jit_compile, r.distribution, r.deterministic)
    with scope:
        strategy = tf.distribute.get_strategy()
    return settings, strategy if settings["distribution"] == "mirrored" else None


def plan_search(folder, budget_seconds, progress):
    """Fix the trial counts for a time budget from the first coarse trial (tuning/budget.json)."""
    first = read_trials(folder, "coarse")[0][1]
    plan = plan_budget(budget_seconds, first, progress.counts)
    write_json(Path(folder) / BUDGET, plan)
    for stage, trials in plan["trials"].items():
        progress.counts[stage] = (trials, progress.counts[stage][1])
    log.info(
        f"[search] budget {duration(budget_seconds)}: the first trial took {first['wall_seconds']:.0f}s, so "
        f"{plan['trials']['coarse']} coarse and {plan['trials']['fine']} fine trials (tuning/{BUDGET})",
    )
    return plan["trials"]


def planned_counts(folder, counts, budget_seconds):
    """The card's (or --trials/--epochs) counts, or those a budget fixed before (the same search again)."""
    path = Path(folder) / BUDGET
    if not path.exists():
        return counts
    plan = read_json(path)
    if budget_seconds is not None and plan["budget_seconds"] != budget_seconds:
        raise UserError(
            f"the search in {folder} was planned for a budget of {duration(plan['budget_seconds'])}, not "
            f"{duration(budget_seconds)}: rerun with --fresh (FRESH=1) to plan a new one"
        )
    return {stage: (plan["trials"][stage], epochs) for stage, (_, epochs) in counts.items()}


def run_stage(stage, model, folder, search, trials, verbose, strategy=None, progress=None, budget=None):
    """`trials` trials of the stage's CardHyperModel `model` (its space and epochs)."""
    if ended(folder, stage) >= trials:
        log.info(f"[{stage}] all {trials} trials done (rerun with --fresh to search again)")
        return
    offset = STAGES.index(stage)
    declared = keras_tuner.HyperParameters()
    model.declare_hyperparameters(declared)
    oracle = StageOracle(
        folder,
        stage,
        progress,
        budget,
        declared,
        objective=keras_tuner.Objective(search.objective, search.direction),
        max_trials=trials,
        seed=search.seed + offset,
        max_consecutive_failed_trials=NO_LIMIT,
    )
    with stage_port(offset):
        tuner = StageTuner(
            oracle=oracle,
            hypermodel=model,
            directory=str(folder),
            project_name=stage,
            overwrite=False,
            distribution_strategy=strategy,
            stage=stage,
        )
        log.info(f"[{stage}] {trials} trials of {model.epochs} epochs, {worker_id()}")
        try:
            with tracebacks_to_trial_logs():
                tuner.search(verbose=verbose)
        except keras_tuner.errors.FatalError as error:
            if isinstance(error.__cause__, UserError):
                raise error.__cause__ from None
            raise


def fine_space(folder, space, search, who):
    """Narrowed around the top-k coarse trials once, then kept (a resumed search keeps its space).
    A worker that comes before the chief has narrowed declares the card's space: the values it
    runs come from the chief's oracle."""
    path = folder / "fine_space.json"
    if path.exists():
        return FineSpace.read(path).space
    if who == "worker":
        return space
    top = ranked(folder, ["coarse"], search.direction)[: search.top_k]
    fine = narrow(space, [trial["hyperparameters"]["values"] for _, trial in top])
    FineSpace(top_k=[trial["trial_id"] for _, trial in top], space=fine).write(path)
    return fine


def tune(config, root, *, trials=None, epochs=None, stage="all", fresh=False, seeds=1, verbose=1, budget=None):
    """Search coarse -> fine, record every trial, retrain the best into root/tuned. Returns the summary.
    budget: a duration ('20m'; default the card's search.budget) that fixes the number of trials."""
    if stage not in ("coarse", "fine", "all"):
        raise UserError(f"--stage {stage!r}: accepted: coarse, fine, all")
    search, space = check_search(config)
    require_test(config)
    for value, flag in ((trials, "--trials"), (epochs, "--epochs")):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    budget = budget or search.budget
    budget_seconds = check_budget(budget, "--budget / search.budget") if budget else None
    who, folder = role(), Path(root) / "tuning"
    data = prepare(config, root)  # refuses a dataset card whose split differs from root/split.csv; fold 1's view
    k, split_folds = trial_folds(config), config.dataset.split.folds or 1  # folds a trial, a finalist is trained on
    folds = [data.for_fold(fold) for fold in range(1, k + 1)] if k > 1 else []
    prepare_search_folder(folder, config, fresh, who)
    stats = training_stats(data, config.paper)  # the stages' trials share them and their compiled models
    objective, cache = keras_tuner.Objective(search.objective, search.direction), ModelCache()
    counts = {s: (trials or getattr(search, s).trials, epochs or getattr(search, s).epochs) for s in STAGES}
    counts = planned_counts(folder, counts, budget_seconds)
    full = card_epochs(config.paper.training, len(data.indices("train")))
    full_runs = full * (search.finalists * k + seeds * split_folds - k)  # the winner's first k runs are its finalist's
    progress = Progress({s: (n, e * k) for s, (n, e) in counts.items()}, full_runs, search.objective)
    planning = budget_seconds if budget_seconds is not None and not (folder / BUDGET).exists() else None
    log.info(
        f"[search] coarse {counts['coarse'][0]} trials x {counts['coarse'][1]} epochs, fine {counts['fine'][0]} x {counts['fine'][1]}"
        + (f" (counts fixed for a budget of {duration(planning)} after the first trial)" if planning else "")
        + (f", each trial on {k} folds (search.folds)" if k > 1 else "")
        + f"; then {search.finalists} finalist(s) trained for {full} epochs"
        + (f" and {seeds - 1} more seed(s)" if seeds > 1 else "")
    )
    settings, strategy = strategy_of(config.paper.runtime)

    def stage_model(name, stage_space):
        return CardHyperModel(
            config,
            data,
            objective,
            space=stage_space,
            epochs=counts[name][1],
            stats=stats,
            settings=settings,
            cache=cache,
            folds=folds,
        )

    if stage in ("coarse", "all"):
        model = stage_model("coarse", space)
        run_stage("coarse", model, folder, search, progress.counts["coarse"][0], verbose, strategy, progress, planning)
    if stage in ("fine", "all"):
        if who != "worker" and ended(folder, "coarse") < progress.counts["coarse"][0]:
            raise UserError(
                f"the coarse stage in {folder / 'coarse'} is not finished: run --stage coarse (or all) first"
            )
        model = stage_model("fine", fine_space(folder, space, search, who))
        run_stage("fine", model, folder, search, progress.counts["fine"][0], verbose, strategy, progress)
    if who == "worker":
        log.info(f"worker {worker_id()}: no trials left")
        return None
    table = write_trials_csv(folder, search.objective)
    write_hparams(folder, table, space, search.objective)
    stages = ["coarse"] if stage == "coarse" else list(STAGES)
    summary = summarize(folder, config, space, stages, table.wall_seconds.sum())
    if stage != "coarse":
        retrain(config, root, final_round(config, root, summary, space, fresh, verbose), fresh, seeds, verbose)
    return summary


def cli(config, args):
    tune(
        config,
        run_root(config, args.runs_dir),
        trials=args.trials,
        epochs=args.epochs,
        stage=args.stage,
        fresh=args.fresh,
        seeds=args.seeds,
        verbose=2 if args.quiet else 1,
        budget=args.budget,
    )
