"""Keras Tuner's own files, written atomically and read back even when one was cut short.

Keras Tuner writes oracle.json, tuner_<id>.json and each trial_*/trial.json in place: a kill inside
a write leaves half a JSON, and its reload then stops the search with a traceback. The search's
oracle and tuner (project.tune.tuning) write them through project.artifacts.atomic_write instead,
and read them back with `reload`, which copes with a file cut short (by older code, a full disk, a
copy made half-way) and with the gap between Oracle.create_trial's two writes. Each case is one
warning line and the search goes on:

- a trial.json that does not parse: the trial is rebuilt from our meta.json (which keeps its values
  for this) and runs again, as Keras Tuner reruns any interrupted trial (same values, same score);
  a trial that never started (no meta.json) is set aside as trial.json.broken and drawn again;
- an oracle.json that does not parse, is missing, or does not list the trials found (a kill
  between the two writes of Oracle.create_trial; a trial set aside): rebuilt from the trials, its
  random state replayed from the seed, so the next trials draw what they would have drawn (Keras
  Tuner would leave such a trial "running" forever and draw its values again);
- a trial its trial.json says ended while oracle.json still lists it as running: not run again.
"""

import json
from pathlib import Path

from keras_tuner.engine.trial import Trial, TrialStatus

from project import logs

log = logs.get(__name__)

ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.INVALID)


def reload(oracle, meta_name):
    """Oracle.reload for a RandomSearchOracle with a `declared` space (its hypermodel's)."""
    project = Path(oracle._project_dir)
    state = _read(project / "oracle.json")
    if state is not None:
        oracle.set_state({**state, "ongoing_trials": {}})  # its space first: a rebuilt trial needs it
    else:
        oracle.hyperparameters = oracle.declared.copy()
    rerun = []
    for path in sorted(project.glob("trial_*/trial.json")):
        trial = _trial(path, oracle, meta_name)
        if trial is not None:
            oracle.trials[trial.trial_id] = trial
            if trial.status == TrialStatus.RUNNING:
                rerun.append(trial.trial_id)
    if state is not None and set(state["start_order"]) != set(oracle.trials):
        log.warning(
            f"{project / 'oracle.json'} lists trials {sorted(state['start_order'])}, the folder has "
            f"{sorted(oracle.trials)} (a kill between two writes, or a trial set aside): rebuilt from the trials"
        )
        state = None
    oracle.set_state(_rebuilt(oracle) if state is None else _known(state, oracle, rerun))
    for trial in oracle.trials.values():
        oracle._record_values(trial)
    # as Keras Tuner's reload: the trials that were running run again
    oracle._retry_queue += [t.trial_id for t in oracle.ongoing_trials.values() if t.trial_id not in oracle._retry_queue]
    oracle.ongoing_trials = {}


def _read(path):
    try:
        state = json.loads(Path(path).read_text())
        if not isinstance(state, dict) or not all(k in state for k in ("start_order", "ongoing_trials", "seed_state")):
            raise ValueError("not an oracle's state")
        return state
    except FileNotFoundError:
        log.warning(f"{path} is missing: rebuilt from the trials")
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning(f"{path} cannot be read ({type(error).__name__}): rebuilt from the trials")
    return None


def _trial(path, oracle, meta_name):
    """The trial of a trial.json; rebuilt (RUNNING: to run again) from meta.json when it does not parse."""
    try:
        return Trial.from_state(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = type(error).__name__
    trial_id = path.parent.name.removeprefix("trial_")
    try:
        values = json.loads(path.with_name(meta_name).read_text())["values"]
    except (OSError, ValueError, KeyError, TypeError):
        broken = path.with_name("trial.json.broken")
        path.replace(broken)
        log.warning(f"{path} cannot be read ({reason}) and the trial never started: set aside as {broken.name}")
        return None
    hyperparameters = oracle.hyperparameters.copy()
    hyperparameters.values = dict(values)
    trial = Trial(hyperparameters, trial_id=trial_id, status=TrialStatus.RUNNING)
    oracle._save_trial(trial)
    log.warning(f"{path} cannot be read ({reason}): trial {trial_id} runs again with its values from {meta_name}")
    return trial


def _known(state, oracle, rerun):
    """oracle.json's state, for the trials it lists: a trial its own file says ended is never run
    again (oracle.json is written after it, and lists the trial as running until the next save);
    a rebuilt one (RUNNING) is queued to run again."""
    ended = {i for i, trial in oracle.trials.items() if trial.status in ENDED}
    ongoing = {k: v for k, v in state["ongoing_trials"].items() if v not in ended}
    end_order = [i for i in state["end_order"] if i in ended]
    retry = [i for i in state["retry_queue"] if i not in ended]
    retry += [i for i in rerun if i not in retry and i not in ongoing.values()]
    return {
        **state,
        "ongoing_trials": ongoing,
        "end_order": end_order + sorted(ended - set(end_order)),
        "retry_queue": retry,
        "run_times": {**state["run_times"], **dict.fromkeys(ended - set(end_order), 1), **dict.fromkeys(rerun, 0)},
    }


def _rebuilt(oracle):
    """An oracle state from the trials alone (oracle.json unreadable)."""
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    ended = [t.trial_id for t in trials if t.status in ENDED]
    return {
        "ongoing_trials": {},
        "hyperparameters": oracle.hyperparameters.get_config(),
        "start_order": [t.trial_id for t in trials],
        "end_order": ended,
        "run_times": dict.fromkeys(ended, 1),
        "retry_queue": [t.trial_id for t in trials if t.trial_id not in ended],
        "seed": oracle.seed,
        "seed_state": replayed_seed_state(oracle, trials),
        "tried_so_far": [],
        "id_to_hash": {},
        "display": oracle._display.get_state(),
    }


def replayed_seed_state(oracle, trials):
    """The random search's seed state once it has drawn `trials`' values: drawn again from the seed
    (RandomSearchOracle._random_values, which skips values already tried) until each is met."""
    wanted = {oracle._compute_values_hash(t.hyperparameters.values) for t in trials}
    oracle._seed_state, oracle._tried_so_far = oracle.seed, set()
    while not wanted <= oracle._tried_so_far:
        before = oracle._seed_state
        values = oracle._random_values()
        drawn = None if values is None else oracle._compute_values_hash(values)
        if drawn not in wanted:  # not the draws this search made: the next trial takes this one
            oracle._seed_state = before
            log.warning("the search's random state could not be replayed from its seed: later trials may differ")
            break
        oracle._tried_so_far.add(drawn)
    state, oracle._tried_so_far = oracle._seed_state, set()
    return state
