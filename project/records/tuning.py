"""The records of the search (tuning/): trials.csv, summary.json, fine_space.json, and the tuned run's
best_hyperparameters.json."""

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, model_validator

from project.records.base import Record, Row, Stored, Strict, Table


class Trial(Row):
    """One trial of trials.csv; the other columns are its hyperparameter values and best_/last_<objective>."""

    __pydantic_extra__: dict[str, bool | int | float | str | None]
    OPEN_BLANK_IS_NONE: ClassVar[bool] = True

    trial_id: str
    stage: Literal["coarse", "fine"]
    epochs_run: int | None
    status: Literal["completed", "running", "failed", "exploded"]
    failure_reason: str
    seed: int | None
    wall_seconds: float | None
    fit_seconds: float | None
    fixed_seconds: float | None
    reused: bool | None
    worker: str


class Trials(Table):
    FILE: ClassVar[str] = "trials.csv"
    COMMAND: ClassVar[str] = "make tune"

    rows: list[Trial]

    @classmethod
    def column_problems(cls, columns):
        found = super().column_problems(columns)
        best = [c for c in columns if c.startswith("best_")]
        if len(best) != 1 or f"last_{best[0].removeprefix('best_')}" not in columns:
            found.append(f"one best_<objective> and one last_<objective> column expected, found {best or 'none'}")
        return found

    @property
    def objective(self):
        return next(c for c in self._columns if c.startswith("best_")).removeprefix("best_")


class Candidate(Stored):
    """A ranked trial: its values decoded and as card keys (summary.json; best_hyperparameters.json)."""

    FILE: ClassVar[str] = "best_hyperparameters.json"
    COMMAND: ClassVar[str] = "make tune"

    stage: Literal["coarse", "fine"]
    trial_id: str
    score: float
    objective: str
    values: dict[str, Any]
    hyperparameters: dict[str, Any]
    card_values: dict[str, Any]


class Budget(Strict):
    """budget.json: the trial counts a time budget fixed."""

    budget_seconds: float
    first_trial_seconds: float
    epoch_seconds: float
    fixed_seconds: float
    trial_seconds: dict[str, float]
    trials: dict[str, int]


class Finalist(Strict):
    """A finalist trained for the full epochs; its full-length val metric is the extra key named by `metric`."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float]

    stage: Literal["coarse", "fine"]
    trial_id: str
    search_score: float
    run: str  # with folds: its first fold's run
    folds: int | None = None  # split.folds: the metric is the mean over this many folds' runs (search.folds)


class FinalRound(Strict):
    metric: str
    finalists: list[Finalist]

    @model_validator(mode="after")
    def _metric_of_every_finalist(self):
        for finalist in self.finalists:
            if set(finalist.model_extra) != {self.metric}:
                raise ValueError(f"finalists hold {sorted(finalist.model_extra)}, not the metric {self.metric}")
        return self


class TuningSummary(Record):
    FILE: ClassVar[str] = "summary.json"
    COMMAND: ClassVar[str] = "make tune"

    objective: str
    direction: Literal["min", "max"]
    stages: list[Literal["coarse", "fine"]]
    coarse_space: dict[str, dict[str, Any]]
    fine_space: dict[str, dict[str, Any]] | None
    budget: Budget | None
    finalists: list[Candidate]
    best: Candidate | None
    final_round: FinalRound | None
    warnings: list[str]
    trial_seconds: float


class FineSpace(Record):
    FILE: ClassVar[str] = "fine_space.json"
    COMMAND: ClassVar[str] = "make tune"

    top_k: list[str]
    space: dict[str, dict[str, Any]]
