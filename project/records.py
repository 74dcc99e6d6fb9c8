"""The files of runs/ as typed records: one pydantic model per file, with its format version.

Writers build the model and write through it, so a renamed or missing key fails where it is written;
readers get the model back, or ONE UserError that names the file, what is wrong and the command
that writes it again. JSON records carry a `format` key, CSV records a `format` column (the last).

    metrics.json          Metrics        a trained run (make train, make tune)
    history.csv           History        its epochs, one row each
    sanity.json           Sanity         make sanity
    tuning/trials.csv     Trials         every trial of the search
    tuning/summary.json   TuningSummary  spaces, budget, finalists, final round, warnings
    tuning/fine_space.json FineSpace     the narrowed space of the fine stage
    comparison.json       Comparison     the report's before/after numbers (reports/)
    best_hyperparameters.json  Candidate the tuned run's trial (no format key: its content is the trial's)
"""

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

import pandas as pd
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from project.artifacts import atomic_write, write_json
from project.errors import UserError

FORMAT = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ reading, writing, refusing


def refused(path, problem, command):
    return UserError(f"{path}: {problem}: rerun `{command}`")


def _where(loc):
    if len(loc) >= 3 and loc[0] == "rows" and isinstance(loc[1], int):
        return f"row {loc[1] + 1}, column `{loc[2]}`"
    return ".".join(str(part) for part in loc)


def problems(error: ValidationError):
    """A pydantic error in one line: missing and unknown keys first (together: a renamed key), then the rest."""
    missing, unknown, other = [], [], []
    for e in error.errors():
        where = _where(e["loc"])
        if e["type"] == "missing":
            missing.append(f"`{where}`")
        elif e["type"] == "extra_forbidden":
            unknown.append(f"`{where}`")
        else:
            other.append(f"{where}: {e['msg']}")
    parts = [f"missing key {', '.join(missing)}"] if missing else []
    if unknown:
        parts.append(f"unknown key {', '.join(unknown)}" + (" (renamed?)" if missing else ""))
    parts += other[:3] + ([f"and {len(other) - 3} more"] if len(other) > 3 else [])
    return "; ".join(parts)


def _validated(model, data, path, command):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise refused(path, problems(error), command) from None


def _check_format(found, path, command):
    """`found`: the format the file says, None when it says none (written before records had one: format 0)."""
    if found is None:
        raise refused(
            path, f"format 0 (it records none: written by older code), this code reads format {FORMAT}", command
        )
    if found != FORMAT:
        raise refused(path, f"format {found}, this code reads format {FORMAT}", command)


def _json(path, command):
    path = Path(path)
    if not path.is_file():
        raise refused(path, "missing", command)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise refused(path, f"not valid JSON ({error})", command) from None
    if not isinstance(data, dict):
        raise refused(path, f"not a JSON object but a {type(data).__name__}", command)
    return data


class Stored(Strict):
    """A JSON file of runs/: FILE (its name), COMMAND (what writes it); read refuses it in one UserError."""

    FILE: ClassVar[str]
    COMMAND: ClassVar[str]

    def dump(self):
        """The keys the writer gave (optional ones it left out stay out of the file)."""
        return self.model_dump(exclude_unset=True)

    def write(self, path):
        write_json(path, self.dump())

    @classmethod
    def read(cls, path, command=None):
        command = command or cls.COMMAND
        data = _json(path, command)
        cls._check(data, path, command)
        return _validated(cls, data, path, command)

    @classmethod
    def _check(cls, data, path, command):
        pass


class Record(Stored):
    """A JSON file of runs/ with its format version."""

    format: int = FORMAT

    def dump(self):
        return {**super().dump(), "format": self.format}

    @classmethod
    def _check(cls, data, path, command):
        _check_format(data["format"] if "format" in data else None, path, command)


def write_record(record, path):
    record.write(path)


def read_record(model, path, command=None):
    return model.read(path, command)


# ------------------------------------------------------------------ tables (CSV records)


def _text(field):
    """A column read as text (its blank cells are empty strings, not numbers)."""
    return field.annotation is str or get_origin(field.annotation) is Literal


def _cell(field, value):
    """A blank CSV cell (NaN) as the field takes it: '' for text, None where None is allowed."""
    if not (isinstance(value, float) and math.isnan(value)):
        return value
    if field.annotation is str:
        return ""
    return None if type(None) in get_args(field.annotation) else value


class Row(BaseModel):
    """One line of a CSV record; extra columns are the table's open ones (typed by __pydantic_extra__)."""

    model_config = ConfigDict(extra="allow")
    OPEN_BLANK_IS_NONE: ClassVar[bool] = False  # a blank open cell: None (no value) rather than NaN

    @model_validator(mode="before")
    @classmethod
    def _blank_cells(cls, data):
        if isinstance(data, dict):
            return {key: cls._blank(key, value) for key, value in data.items()}
        return data

    @classmethod
    def _blank(cls, key, value):
        if key in cls.model_fields:
            return _cell(cls.model_fields[key], value)
        blank = cls.OPEN_BLANK_IS_NONE and isinstance(value, float) and math.isnan(value)
        return None if blank else value


class Table(Record):
    """A CSV file of runs/: its rows, in the column order the writer gave, plus a `format` column."""

    rows: list[Row]
    _columns: list[str] = PrivateAttr(default_factory=list)

    def model_post_init(self, context):
        if not self._columns:
            self._columns = list(dict.fromkeys(key for row in self.rows for key in row.model_dump()))

    @classmethod
    def row_model(cls):
        return get_args(cls.model_fields["rows"].annotation)[0]

    @classmethod
    def column_problems(cls, columns):
        missing = [name for name, field in cls.row_model().model_fields.items() if name not in columns]
        return [f"missing column {', '.join(f'`{m}`' for m in missing)}"] if missing else []

    @classmethod
    def from_frame(cls, frame):
        """The writer's table (a DataFrame) as the record; a missing column is the writer's bug."""
        columns = [str(c) for c in frame.columns]
        if cls.column_problems(columns):
            raise ValueError(f"{cls.FILE}: {'; '.join(cls.column_problems(columns))}")
        table = cls(rows=frame.to_dict("records"))
        table._columns = columns
        return table

    @property
    def columns(self):
        return list(self._columns)

    def frame(self):
        return pd.DataFrame([row.model_dump() for row in self.rows], columns=self._columns)

    def write(self, path):
        atomic_write(path, self.frame().assign(format=self.format).to_csv(index=False))

    @classmethod
    def read(cls, path, command=None):
        command = command or cls.COMMAND
        path = Path(path)
        if not path.is_file():
            raise refused(path, "missing", command)
        text = [name for name, field in cls.row_model().model_fields.items() if _text(field)]
        try:
            frame = pd.read_csv(path, dtype=dict.fromkeys(text, str))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise refused(path, f"not a readable CSV table ({error})", command) from None
        _check_format(_table_format(frame), path, command)
        columns = [str(c) for c in frame.columns if c != "format"]
        if cls.column_problems(columns):
            raise refused(path, "; ".join(cls.column_problems(columns)), command)
        table = _validated(cls, {"rows": frame[columns].to_dict("records")}, path, command)
        table._columns = columns
        return table


def _table_format(frame):
    """The format column's one value (an empty table: the current format); None without the column."""
    if "format" not in frame.columns:
        return None
    found = sorted({str(v) for v in frame["format"]})
    return FORMAT if found in ([], [str(FORMAT)]) else " and ".join(found)


# ------------------------------------------------------------------ metrics.json


class ClassMetrics(Strict):
    precision: float
    recall: float
    f1: float
    support: int
    sensitivity: float
    specificity: float


class TrivialBaseline(Strict):
    """Always predicting the subset's majority class."""

    predicts: str
    accuracy: float
    balanced_accuracy: float
    macro_f1: float


class Scores(Strict):
    accuracy: float
    loss: float
    macro_f1: float
    balanced_accuracy: float
    roc_auc: float | None
    top5_accuracy: float | None
    majority_share: float
    trivial_baseline: TrivialBaseline
    count: int


class ScoresPerClass(Scores):
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]


class Counts(Strict):
    """Images per class in each subset."""

    train: dict[str, int]
    val: dict[str, int]
    test: dict[str, int]


class StageInfo(Strict):
    stage: str
    epochs: int
    unfrozen_layers: int
    frozen_layers: int
    seconds: float
    images_per_second: float
    learning_rate: float
    params_trainable: int
    params_frozen: int


class Device(Strict):
    type: str
    name: str
    count: int


class RuntimeSettings(Strict):
    precision: str
    jit_compile: bool
    distribution: str
    device: str
    replicas: int
    deterministic: bool


class RatioSummary(Strict):
    """The update/weight ratio over the epochs; without a recorded ratio only status, median, epochs, advice."""

    status: str
    median: float | None
    epochs: int
    advice: str
    min: float | None = None
    max: float | None = None
    band: list[float] | None = None
    ideal: float | None = None


class Finding(Strict):
    problem: str
    evidence: str
    advice: str


class Diagnosis(Strict):
    status: str
    summary: str
    findings: list[Finding]


class Metrics(Record):
    FILE: ClassVar[str] = "metrics.json"
    COMMAND: ClassVar[str] = "make train"

    run: str
    paper: str
    dataset: str
    test_accuracy: float
    test_loss: float
    test_macro_f1: float
    val_accuracy: float
    val_loss: float
    val_macro_f1: float
    test: ScoresPerClass
    val: Scores
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    num_classes: int
    class_names: list[str]
    counts: Counts
    stages: list[StageInfo]
    weights_used: str
    seed: int
    split_seed: int
    wall_seconds: float
    train_images_per_second: float
    device: Device
    versions: dict[str, str]
    runtime: RuntimeSettings
    deterministic: bool
    git_commit: str | None
    timing_fields: list[str]
    update_ratio: RatioSummary
    diagnosis: Diagnosis


# ------------------------------------------------------------------ history.csv


class Epoch(Row):
    """One epoch of history.csv; the other columns are further metrics (update_ratio, learning_rate, ...)."""

    __pydantic_extra__: dict[str, float]

    stage: str
    global_epoch: int
    epoch: int
    accuracy: float
    loss: float
    macro_f1: float
    val_accuracy: float
    val_loss: float
    val_macro_f1: float


class History(Table):
    FILE: ClassVar[str] = "history.csv"
    COMMAND: ClassVar[str] = "make train"

    rows: list[Epoch]


# ------------------------------------------------------------------ sanity.json


class SanityCheck(Strict):
    name: str
    title: str
    status: Literal["PASS", "WARN", "FAIL"]
    numbers: dict[str, Any]
    advice: str
    seconds: float
    plot: str | None = None
    augmentation: str | None = None
    history: list[dict[str, Any]] | None = None  # overfit: per epoch
    curve: dict[str, list[Any]] | None = None  # lr_sweep: the range test
    layers: list[dict[str, Any]] | None = None  # activations: per layer
    collapsed_std: float | None = None


class Sanity(Record):
    FILE: ClassVar[str] = "sanity.json"
    COMMAND: ClassVar[str] = "make sanity"

    paper: str
    dataset: str
    status: Literal["PASS", "WARN", "FAIL"]
    weights_used: str
    seconds: float
    created: str
    checks: list[SanityCheck]


# ------------------------------------------------------------------ tuning/


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
    run: str


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


# ------------------------------------------------------------------ comparison.json (reports/)


class TrivialShare(TrivialBaseline):
    subset: str
    majority_share: float


class Paired(Strict):
    test: str
    b: int
    c: int
    n_discordant: int
    p_value: float


class Bootstrap(Strict):
    difference: float
    ci95: list[float]
    images: int
    resamples: int
    seed: int


class SeedSide(Strict):
    accuracies: list[float]
    n: int
    mean: float
    std: float | None


class Welch(Strict):
    t: float | None
    df: float | None
    p_value: float | None
    reason: str


class Seeds(Strict):
    before: SeedSide
    after: SeedSide
    difference: float
    ci95: list[float]
    resamples: int
    seed: int
    welch: Welch
    note: str


class Decision(Strict):
    by: Literal["seeds", "paired"]
    test: str
    difference: float
    ci95: list[float]
    p_value: float | None
    basis: str
    result: Literal["improved", "worse", "within noise"]


class Selection(Strict):
    checkpoint: str
    early_stopping: bool
    search: str | None
    search_direction: str | None


class SeedSpread(Strict):
    n: int
    mean: float
    std: float


class PaperRow(Strict):
    dataset: str
    metric: str
    class_name: str | None
    value: float
    where: str
    test_size: int | None
    tolerance: float
    note: str
    run: str
    ours: float | None
    ci95: list[float] | None
    interval: str
    seeds: SeedSpread | None
    verdict: str
    explanation: str


class PaperVerdict(Strict):
    overall: str
    overall_detail: str
    rows: list[PaperRow]


class Comparison(Record):
    FILE: ClassVar[str] = "comparison.json"
    COMMAND: ClassVar[str] = "make report"

    before: str
    after: str | None
    headline: str
    decision: Decision | None
    paired: Paired | None
    bootstrap: Bootstrap | None
    seeds: Seeds | None
    trivial_baseline: TrivialShare
    train_imbalance_ratio: float
    imbalanced: bool
    lead_metrics: list[str]
    selection: Selection
    paper: PaperVerdict
