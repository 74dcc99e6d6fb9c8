"""The records of a trained run: metrics.json, history.csv, and the run root's sanity.json."""

from typing import Any, ClassVar, Literal

from project.records.base import Record, Row, Strict, Table

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


class SkippedImages(Strict):
    """Sources that could not be decoded when the run was evaluated (changed after the data check):
    left out of that subset's scores (their `count` is the images evaluated) and of predictions.csv."""

    val: list[str]
    test: list[str]


class StageInfo(Strict):
    """One training stage; `epochs`: run (early stopping may end it before planned_epochs). A stage the
    card gives in `steps` (at steps_batch_size) ran planned_epochs at batch_size (project.train.schedules)."""

    stage: str
    epochs: int
    unfrozen_layers: int
    frozen_layers: int
    seconds: float
    images_per_second: float
    learning_rate: float
    params_trainable: int
    params_frozen: int
    planned_epochs: int | None = None
    batch_size: int | None = None
    steps: int | None = None
    steps_batch_size: int | None = None
    warmup_steps: int | None = None  # optimizer steps of the schedule's warmup at batch_size


class Device(Strict):
    type: str
    name: str
    count: int


class Machine(Strict):
    """runtime.fingerprint(): what must match for make check to expect identical numbers."""

    cpu: str
    tensorflow: str
    onednn: bool


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


class TestTimeAugmentation(Strict):
    """evaluation.tta: the test scores of the softmax averaged over the plain images and `views`."""

    views: list[str]
    test: Scores


class Metrics(Record):
    FILE: ClassVar[str] = "metrics.json"
    COMMAND: ClassVar[str] = "make train"

    run: str
    paper: str
    dataset: str
    test_accuracy: float
    test_tta_accuracy: float | None = None  # with evaluation.tta: next to test_accuracy, never instead of it
    test_loss: float
    test_macro_f1: float
    val_accuracy: float
    val_loss: float
    val_macro_f1: float
    test: ScoresPerClass
    val: Scores
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    tta: TestTimeAugmentation | None = None
    num_classes: int
    class_names: list[str]
    counts: Counts
    skipped_images: SkippedImages
    stages: list[StageInfo]
    weights_used: str  # for display
    weights_kind: Literal["imagenet", "file", "random", "random_fallback"]  # what the report decides by
    seed: int
    split_seed: int
    fold: int | None = None  # the cross-validation fold this run validated on (split.folds)
    folds: int | None = None
    # what the `test` scores were measured on: the test subset, or (split.test 0) the held-out fold,
    # which also chose the checkpoint (an optimistic, cross-validated figure)
    test_subset: Literal["test", "held_out_fold"] = "test"
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
    machine: Machine | None = None  # runs trained before it was recorded have none


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
