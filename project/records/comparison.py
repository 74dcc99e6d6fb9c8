"""comparison.json: the report's before/after numbers (written to reports/<paper>__<dataset>/)."""

from typing import ClassVar, Literal

from project.records.base import Record, Strict
from project.records.runs import TrivialBaseline


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


class FoldSide(SeedSide):
    ci95: list[float] | None  # 95% t interval of the mean over the runs


class FoldPaired(Strict):
    """The runs both sides trained (the same seed and fold), paired."""

    units: list[list[int]]  # [seed, fold] of each pair
    differences: list[float]
    difference: float
    ci95: list[float] | None
    t: float | None
    df: float | None
    p_value: float | None
    reason: str


class FoldRun(Strict):
    run: str
    seed: int
    fold: int
    val_accuracy: float
    test_accuracy: float  # on the test subset, or (measured_on: held_out_fold) on the run's held-out fold


class Pooled(Strict):
    """split.test 0: the first seed's held-out folds pooled, every image predicted once."""

    accuracy: float
    count: int
    ci95: list[float]


class Folds(Strict):
    """Cross-validation (split.folds): every fold's run and the statistics over them."""

    folds: int
    seeds: int
    measured_on: Literal["test", "held_out_fold"]
    runs: dict[Literal["before", "after"], list[FoldRun]]
    before: FoldSide
    after: FoldSide | None
    paired: FoldPaired | None
    pooled: Pooled | None


class Decision(Strict):
    by: Literal["seeds", "paired", "folds"]
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
    folds: Folds | None = None
