"""The card schemas (pydantic): what a paper card and a dataset card may hold.

Every model forbids unknown keys, so a typo is an error that names the key. Nothing here
imports TensorFlow: a bad card is reported in well under a second.
"""

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from project.config.backbone_table import BACKBONES, check_backbone
from project.config.durations import parse_duration
from project.paths import REPO_ROOT

ADAPTER_NAMES = (
    "folder",
    "csv",
    "digits",
    "npz",
    "keras",
    "tfds",
)  # the built-in loaders: project.data.adapters.ADAPTERS

Activation = Literal["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish", "tanh", "sigmoid"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- paper card


class Citation(Strict):
    title: str
    authors: list[str] = Field(min_length=1)
    venue: str
    year: int = Field(ge=1990, le=2100)
    link: str = ""


# what the template computes on the test subset (project.train.metrics.classification_metrics), so what a paper can be held to
ReportedMetric = Literal[
    "accuracy", "macro_f1", "balanced_accuracy", "sensitivity", "specificity", "roc_auc", "top5_accuracy"
]


class Reported(Strict):
    """One result the paper reports, and where to find it.

    `dataset` names the dataset card the value was measured on, so the report compares it with the run on
    that card; case, spaces, hyphens and underscores are ignored ("CIFAR-10" is the card cifar10). Any other
    text ("ImageNet (ILSVRC 2012)", "none") means another dataset: the value is shown, never compared.
    Say more about the data in `note`. `metric` is one the template computes; sensitivity and specificity
    are of one class, `class_name` (default for a two-class dataset: its second, positive class).
    `tolerance`: how close is close enough; reproduced means the paper's value lies inside our 95%
    interval and that interval's half-width is at most the tolerance."""

    dataset: str = Field(description='a dataset card name, or other text for another dataset ("none")')
    metric: ReportedMetric = "accuracy"
    class_name: str | None = Field(default=None, description="the class of sensitivity or specificity")
    value: float = Field(gt=0.0, le=1.0, description="a fraction: 0.928 for 92.8%")
    where: str = Field(description="table, figure or section of the paper")
    test_size: int | None = Field(default=None, ge=1)
    tolerance: float = Field(
        default=0.02, gt=0.0, lt=1.0, description="largest half-width of our interval that still decides"
    )
    note: str = ""

    @model_validator(mode="after")
    def _class_for_per_class_metrics(self):
        if self.class_name is not None and self.metric not in ("sensitivity", "specificity"):
            raise ValueError(f"class_name is for sensitivity and specificity only, not {self.metric}")
        return self


class Head(Strict):
    pooling: Literal["avg", "max", "flatten"] = "avg"
    hidden: list[int] = Field(default_factory=list, description="units of each hidden dense layer")
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    normalization: Literal["none", "batch"] = "none"

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value):
        if any(units < 1 for units in value):
            raise ValueError("hidden layer sizes must be >= 1")
        return value


class Scratch(Strict):
    """The from-scratch CNN (model.backbone: scratch)."""

    blocks: list[int] = Field(default=[32, 64], min_length=1, description="filters of each conv block")
    convs_per_block: int = Field(default=2, ge=1, le=8)
    kernel_size: int = Field(default=3, ge=1, le=11)
    activation: Activation = "relu"
    initializer: Literal["he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "normal_0.01"] = "he_normal"
    normalization: Literal["batch", "layer", "group", "none"] = "batch"


class Model(Strict):
    backbone: str = "MobileNetV2"
    weights: str = Field(default="imagenet", description="imagenet, none, or a path to a weights file")
    weights_fallback: Literal["error", "random"] = "error"
    input_size: list[int] = Field(default_factory=list, description="[height, width]; empty: the backbone's default")
    width: float = Field(default=1.0, gt=0.0, le=2.0, description="width multiplier (alpha) of MobileNet family")
    preprocessing: Literal["backbone", "per_channel_mean", "mean_image", "none"] = "backbone"
    head: Head = Head()
    scratch: Scratch = Scratch()

    @field_validator("backbone")
    @classmethod
    def _known(cls, value):
        check_backbone(value)
        return value

    @field_validator("input_size", mode="before")
    @classmethod
    def _square(cls, value):
        return [value, value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _check(self):
        if not self.input_size:
            size = BACKBONES.get(self.backbone, {}).get("default_size", 224)
            object.__setattr__(self, "input_size", [size, size])
        if len(self.input_size) != 2:
            raise ValueError("input_size must be one number or [height, width]")
        check_backbone(self.backbone, self.input_size)
        if self.backbone == "scratch" and self.preprocessing == "backbone":
            object.__setattr__(self, "preprocessing", "per_channel_mean")
        return self


class Stage(Strict):
    """One stage of training. `unfreeze`: backbone layers trained, counted from the top:
    0 (frozen), a number, "all", or the name of the first layer to train (e.g. "block_13_expand")."""

    name: str
    epochs: int = Field(ge=0)
    unfreeze: int | str = "all"
    learning_rate: float | None = Field(default=None, gt=0.0)

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("unfreeze must be >= 0, 'all' or a layer name")
        return value


# what every training epoch records (history.csv), so what early stopping, checkpoints and the search can follow
Recorded = Literal["val_accuracy", "val_macro_f1", "val_loss", "accuracy", "macro_f1", "loss"]


class EarlyStopping(Strict):
    monitor: Recorded = "val_accuracy"
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)


class Training(Strict):
    optimizer: Optimizer = "adam"
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="momentum of momentum, nesterov and rmsprop")
    schedule: Literal["constant", "step", "cosine", "exponential", "plateau"] = "constant"
    step_every: int = Field(default=10, ge=1, description="epochs between drops (step schedule)")
    decay: float = Field(
        default=0.1, gt=0.0, le=1.0, description="factor per drop (step), per epoch (exponential), on plateau"
    )
    plateau_patience: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1, le=65536)
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0, description="decoupled, applied by the optimizer")
    l2: float = Field(default=0.0, ge=0.0, lt=10.0, description="L2 penalty in the loss, on layers the template builds")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    class_weight: Literal["none", "auto"] = "none"
    early_stopping: EarlyStopping | None = None
    stages: list[Stage] = Field(default_factory=lambda: [Stage(name="train", epochs=10)], min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if sum(s.epochs for s in stages) < 1:
            raise ValueError("at least one stage needs epochs >= 1")
        return stages


class Runtime(Strict):
    """How to run, not what to train: auto picks mixed precision and XLA on a GPU only."""

    mixed_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: bool | Literal["auto"] = "auto"
    distribution: Literal["none", "mirrored"] = Field(
        default="none", description="mirrored: every GPU of this machine; batch_size is per replica"
    )
    cache: Literal["memory", "disk", "none"] = Field(
        default="memory", description="decoded images: memory, disk (runs/<run>/cache), none"
    )
    backup_seconds: float = Field(
        default=30.0, ge=0.0, description="resume state written at an epoch end at most this often (0: every epoch)"
    )
    deterministic: bool = Field(
        default=True, description="TensorFlow op determinism: the same seed gives the same numbers on the same machine"
    )


class DataCheck(Strict):
    """The data check before training (file-based datasets; see project/datacheck.py)."""

    check: bool = Field(default=True, description="scan the files first: exclude unreadable ones, convert odd formats")
    drop_duplicates: bool = Field(default=False, description="keep one copy of identical images, in a single subset")


class Transform(Strict):
    """One albumentations transform: its class name and keyword arguments. Names and arguments
    are checked by `augment.build_augmentation` (importing albumentations takes over a second)."""

    model_config = ConfigDict(extra="allow")
    name: str


class Param(Strict):
    """One searched hyperparameter: a numeric range (min, max, sampling) or a list of choices."""

    min: float | None = None
    max: float | None = None
    sampling: Literal["linear", "log"] = "linear"
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.choices is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give either choices or min/max, not both")
            if len(self.choices) < 2:
                raise ValueError(f"a choice needs at least 2 values, got {self.choices} (fix the value in the card)")
            return self
        if self.min is None or self.max is None:
            raise ValueError("give min and max (or choices)")
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0, got {self.min}")
        return self


# searchable hyperparameter -> the card key its value replaces (head_units sets the width of
# every hidden layer; unfreeze applies to the last training stage)
SEARCHABLE = {
    "learning_rate": "training.learning_rate",
    "weight_decay": "training.weight_decay",
    "l2": "training.l2",
    "dropout": "model.head.dropout",
    "batch_size": "training.batch_size",
    "optimizer": "training.optimizer",
    "momentum": "training.momentum",
    "label_smoothing": "training.label_smoothing",
    "head_units": "model.head.hidden",
    "head_activation": "model.head.activation",
    "unfreeze": "training.stages.-1.unfreeze",
    "augmentation_strength": "augmentation_strength",
}


class SearchStage(Strict):
    trials: int = Field(ge=1)
    epochs: int = Field(ge=1)


class Search(Strict):
    objective: str = "val_accuracy"
    direction: Literal["max", "min"] = "max"
    seed: int = 1
    top_k: int = Field(default=3, ge=1, description="coarse trials the fine stage narrows around")
    coarse: SearchStage = SearchStage(trials=8, epochs=3)
    fine: SearchStage = SearchStage(trials=4, epochs=6)
    space: dict[str, Param] = Field(default_factory=dict)
    budget: str | None = Field(
        default=None, description="time for the search's trials, e.g. 20m or 1h30m (trials stay limits)"
    )
    finalists: int = Field(
        default=2, ge=1, description="best trials retrained for the full epochs; the best on val is the tuned run"
    )
    folds: int | None = Field(
        default=None,
        ge=2,
        description="score each trial on the mean val over this many of the split's folds (k times the cost)",
    )

    @field_validator("budget")
    @classmethod
    def _duration(cls, value):
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("space")
    @classmethod
    def _names(cls, space):
        if not space:
            raise ValueError(
                "the search space is empty: add at least one hyperparameter, e.g. learning_rate: {min: 1e-5, max: 1e-1, sampling: log}"
            )
        unknown = sorted(set(space) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"unknown hyperparameter {', '.join(unknown)}; searchable: {', '.join(SEARCHABLE)}")
        return space


class Paper(Strict):
    citation: Citation
    reported: list[Reported] = Field(default_factory=list)
    summary: str = ""
    caveats: list[str] = Field(default_factory=list)
    intended_use: str = (
        "Coursework reproduction of a published image classifier; not for clinical or other high-stakes use."
    )
    seed: int = 42
    model: Model = Model()
    training: Training = Training()
    data: DataCheck = DataCheck()
    augmentation: list[Transform] = Field(default_factory=list)
    augmentation_strength: float = Field(
        default=1.0, ge=0.0, le=1.0, description="scales each transform's probability p"
    )
    target_accuracy: float = Field(default=0.97, gt=0.0, le=1.0)
    runtime: Runtime = Runtime()
    search: Search | None = None
    assumed: list[str] = Field(default_factory=list, description="dotted keys whose values the paper does not state")

    @model_validator(mode="after")
    def _assumed_keys_exist(self):
        for key in self.assumed:
            if _lookup(self, key) is _MISSING:
                raise ValueError(f"assumed: {key!r} is not a key of the paper card")
        return self


# ---------------------------------------------------------------- dataset card


class Split(Strict):
    """Fractions of the data held out (or `provided` subsets), and optionally k-fold cross-validation
    (`folds`: each fold's val is one k-th of the non-test data; `val` is then unused) and groups that
    must stay within one subset and one fold (`group_by`: project.data.split.groups_of)."""

    val: float = Field(default=0.15, gt=0.0, lt=1.0)
    test: float = Field(default=0.15, ge=0.0, lt=1.0, description="0: no test subset (only with folds)")
    seed: int = 0
    provided: bool = Field(default=False, description="the data comes pre-split (train/val/test)")
    val_from_train: bool = Field(
        default=False, description="with provided: carve val from train anyway (e.g. a tiny val set)"
    )
    folds: int | None = Field(
        default=None, ge=2, description="k-fold cross-validation: train k runs, each validated on one fold"
    )
    group_by: str | None = Field(
        default=None,
        description="a regular expression searched in each source id (group: its first capture group, else the "
        "match), or column:NAME of the csv manifest; a group never spans two subsets or folds",
    )

    @field_validator("group_by")
    @classmethod
    def _pattern(cls, value):
        if value is None or value.startswith("column:"):
            if value is not None and not value.removeprefix("column:").strip():
                raise ValueError("column: needs a manifest column name, e.g. column:patient_id")
            return value
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(
                f"not a regular expression ({error}); e.g. '^(person\\d+)_' or column:patient_id"
            ) from None
        return value

    @property
    def has_test(self):
        """False with test: 0 (cross-validation only); pre-split data keeps its own test subset."""
        return self.provided or self.test > 0

    @model_validator(mode="after")
    def _fractions(self):
        if self.test == 0 and not self.folds and not self.provided:
            raise ValueError(
                "test: 0 holds no test subset apart, which only cross-validation allows: set folds (e.g. 5), "
                "or a test fraction > 0"
            )
        if self.folds is None and self.val + self.test >= 0.9:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves too little to train on (must be < 0.9)")
        return self


class Dataset(Strict):
    adapter: str
    options: dict[str, Any] = Field(default_factory=dict)
    split: Split = Field(default_factory=Split, description='fractions, or "provided" (the data comes pre-split)')
    classes: list[str] | None = None
    description: str = ""
    source: str = ""
    license: str = ""
    num_classes: int | None = None
    num_images: int | None = None
    resolution: str = ""
    layout: str = ""

    @field_validator("split", mode="before")
    @classmethod
    def _provided(cls, value):
        """`split: provided` is short for {provided: true} (not a Union: errors then name split.<key> only)."""
        if isinstance(value, str) and value != "provided":
            raise ValueError("give fractions, e.g. {val: 0.15, test: 0.15, seed: 0}, or: provided")
        return {"provided": True} if value == "provided" else value

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value):
        """A registered adapter, or path/to/file.py:function inside the repository (never imported here)."""
        if value in ADAPTER_NAMES:
            return value
        file, colon, function = value.rpartition(":")
        if not colon or not file.endswith(".py") or not function.isidentifier():
            raise ValueError(
                f"unknown adapter {value!r}; accepted: {', '.join(ADAPTER_NAMES)}, or path/to/file.py:function inside the repository"
            )
        if not (REPO_ROOT / file).resolve().is_relative_to(REPO_ROOT):
            raise ValueError(
                f"custom adapter {file} lies outside the repository ({REPO_ROOT}); custom adapters must live inside it"
            )
        return value


class Config(Strict):
    """What a run needs: the paper card, the dataset card, their names and the overrides."""

    paper_name: str
    dataset_name: str
    paper_file: str = ""
    dataset_file: str = ""
    paper: Paper
    dataset: Dataset
    overrides: list[str] = Field(default_factory=list)

    @property
    def run_name(self):
        return f"{self.paper_name}__{self.dataset_name}"


_MISSING = object()


def _lookup(model, dotted):
    node = model
    for part in dotted.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def accepted_range(dotted):
    """The numeric range a paper card key accepts ('0 <= value < 1'), or '' if it has none."""
    model, field = Paper, None
    for part in dotted.split("."):
        if not part.lstrip("-").isdigit():
            field = model.model_fields[part]
            model = model_in(field.annotation)
    bounds = {
        kind: getattr(item, kind) for item in field.metadata for kind in ("ge", "gt", "le", "lt") if hasattr(item, kind)
    }
    lower = f"{bounds['ge']:g} <= " if "ge" in bounds else f"{bounds['gt']:g} < " if "gt" in bounds else ""
    upper = f" <= {bounds['le']:g}" if "le" in bounds else f" < {bounds['lt']:g}" if "lt" in bounds else ""
    return f"{lower}value{upper}" if lower or upper else ""


def model_in(annotation):
    """The pydantic model in an annotation (Training, list[Stage], Search | None), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(model_in, get_args(annotation)) if m is not None), None)
