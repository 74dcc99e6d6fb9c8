"""How much a search runs and how long the rest should take: the time budget (`search.budget`,
`make tune BUDGET=20m`), the progress line after every trial, and the plan `make all` prints first.

The budget fixes the number of trials once, from the first trial's measured time (its building
and tracing included, so the search tends to end under the budget), split between coarse and
fine in the card's proportion; the card's trials and epochs stay as limits. The plan is written
to tuning/budget.json, so a resumed or repeated search runs the same trials (the same seed gives
the same search). No TensorFlow here.
"""

import statistics
import time

import pandas as pd

from project import logs
from project.config.durations import duration, parse_duration
from project.errors import UserError

log = logs.get(__name__)

BUDGET = "budget.json"  # in tuning/: the trial counts a time budget fixed


def steady_epoch(epoch_seconds):
    """A trial's epoch time without its first epoch (where tracing happens), when it has others."""
    later = epoch_seconds[1:] or epoch_seconds
    return statistics.median(later)


def plan_budget(budget_seconds, first, counts):
    """Trials per stage for a budget, from the first coarse trial's meta.json (wall seconds and
    epoch seconds); counts: {stage: (card trials, epochs)}. Returns the record for budget.json."""
    epoch = steady_epoch(first["epoch_seconds"])
    fixed = max(0.0, first["wall_seconds"] - epoch * len(first["epoch_seconds"]))
    cost = {stage: fixed + epochs * epoch for stage, (_, epochs) in counts.items()}
    card = {stage: trials * cost[stage] for stage, (trials, _) in counts.items()}
    left = max(0.0, budget_seconds - first["wall_seconds"])
    share = card["coarse"] / sum(card.values())
    trials = {
        "coarse": min(counts["coarse"][0], 1 + int(left * share // cost["coarse"])),
        "fine": min(counts["fine"][0], max(1, int(left * (1 - share) // cost["fine"]))),
    }
    return {
        "budget_seconds": budget_seconds,
        "first_trial_seconds": first["wall_seconds"],
        "epoch_seconds": round(epoch, 3),
        "fixed_seconds": round(fixed, 3),
        "trial_seconds": {s: round(c, 2) for s, c in cost.items()},
        "trials": trials,
    }


class Progress:
    """One line per ended trial, in Keras' style: stage, trial k of n, best so far, elapsed, ETA.
    The ETA counts the epochs left (trials still to run, then the tuned retrain) at the rate the
    ended trials ran, their fixed costs included."""

    def __init__(self, counts, retrain_epochs, objective, start=None):
        self.counts, self.retrain_epochs, self.objective = dict(counts), retrain_epochs, objective
        self.start = time.monotonic() if start is None else start

    def epochs_left(self, table):
        done = {stage: int((table["stage"] == stage).sum()) for stage in self.counts}
        trials = sum(max(0, n - done[stage]) * epochs for stage, (n, epochs) in self.counts.items())
        return trials + self.retrain_epochs

    def line(self, stage, table, trial_id, error_log=None):
        """The line for trial `trial_id` of `stage`, which has just ended; `table` is trials.csv.
        A trial that failed or exploded gets its reason, and `error_log`, where its traceback is."""
        ended = table[table["status"] != "running"]
        seconds, epochs = ended["wall_seconds"].sum(), ended["epochs_run"].sum()
        scores = pd.to_numeric(table[f"best_{self.objective}"], errors="coerce")
        row = trial_row(table, stage, trial_id)
        score = scores[row.name]
        eta = self.epochs_left(table) * seconds / epochs if epochs else None
        why = headline(row["failure_reason"]).removeprefix(f"{row['status']}: ") if row["status"] != "completed" else ""
        where = f"traceback in {error_log}" if error_log and row["status"] != "completed" else ""
        return (
            f"[{stage}] trial {int((ended['stage'] == stage).sum())}/{self.counts[stage][0]} {row['status']}"
            + (f" ({'; '.join(t for t in (why, where) if t)})" if why or where else "")
            + f" in {row['wall_seconds']:.0f}s: "
            + (f"{self.objective} {score:.4f}, " if pd.notna(score) else "")
            + (f"best {scores.max():.4f}" if scores.notna().any() else "no score yet")
            + f" - elapsed {duration(time.monotonic() - self.start)}"
            + (
                f", about {duration(eta)} left (ETA {time.strftime('%H:%M', time.localtime(time.time() + eta))})"
                if eta
                else ""
            )
        )


def trial_row(table, stage, trial_id):
    """The row of trials.csv of one trial."""
    return table[(table["stage"] == stage) & (table["trial_id"].astype(str) == str(trial_id))].iloc[0]


def headline(reason, limit=300):
    """A failure reason on one console line: its first non-blank line (TensorFlow's errors run to
    many), shortened; trials.csv and the trial's error.log keep all of it."""
    lines = [line.strip() for line in str(reason if isinstance(reason, str) else "").splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_text(config, seeds=1, budget=None):
    """What `make all` runs, in one line."""
    paper, split = config.paper, config.dataset.split
    stages = paper.training.stages
    if all(s.steps is None for s in stages):
        epochs = f"{sum(s.epochs for s in stages)} epochs"
    else:  # steps become epochs only once the data is known
        epochs = " + ".join(s.length for s in stages if s.epochs != 0)
    folds = f" x {split.folds} folds" if split.folds else ""
    runs = f"{epochs} x {seeds} seed{'s' if seeds > 1 else ''}{folds}"
    text = f"make all on {config.paper_name} x {config.dataset_name}: sanity (6 checks) -> baseline ({runs})"
    search = paper.search
    if not split.has_test:
        return text + " -> report (split.test 0: no tuning)"
    if search is not None:
        budget = budget or search.budget
        text += (
            f" -> search (coarse {search.coarse.trials} trials x {search.coarse.epochs} epochs, fine "
            f"{search.fine.trials} x {search.fine.epochs}"
            + (f", within {budget}" if budget else "")
            + (f", each trial on {search.folds} folds" if search.folds else "")
            + f") -> final round ({search.finalists} finalists x {epochs}, the best is tuned)"
            + (f" -> tuned, {seeds - 1} more seed{'s' if seeds > 2 else ''}" if seeds > 1 else "")
            + (f" -> tuned on all {split.folds} folds" if split.folds else "")
        )
    return text + " -> report"


def cli(config, args):
    log.info(plan_text(config, args.seeds, args.budget))
    return 0


def check_budget(text, where):
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UserError(f"{where}: {error}") from None
