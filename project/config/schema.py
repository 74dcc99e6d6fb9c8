"""The card schemas (pydantic): what a paper card and a dataset card may hold. The paper card's
parts live beside this module (network.py: model:, recipe.py: training:, evaluation:, runtime:,
search.py: search:) and are re-exported here, so `project.config.schema` names every card model.

Every model forbids unknown keys, so a typo is an error that names the key. Nothing here
imports TensorFlow: a bad card is reported in well under a second.
"""

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from project.config.base import ADAPTER_NAMES, TTA_VIEWS, WARMUP_SCHEDULES, Activation, Optimizer, Strict  # noqa: F401
from project.config.layouts import DROP, Bin, mapped_classes_problem, options_problem, read_label_map
from project.config.network import POOLINGS, Head, Model, Pooling, Scratch, scratch_sizes  # noqa: F401
from project.config.recipe import (  # noqa: F401
    EarlyStopping,
    Evaluation,
    LrMultipliers,
    Recorded,
    Runtime,
    Stage,
    Training,
)
from project.config.search import SEARCHABLE, Param, Search, SearchStage  # noqa: F401
from project.paths import REPO_ROOT

# ---------------------------------------------------------------- paper card


class Citation(Strict):
    title: str = Field(description="the paper's exact title")
    authors: list[str] = Field(min_length=1, description="the authors in the paper's order (et al. allowed)")
    venue: str = Field(description="journal (volume, issue, pages) or conference")
    year: int = Field(ge=1990, le=2100, description="year of publication")
    link: str = Field(default="", description="https:// link: DOI or arXiv")


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
    metric: ReportedMetric = Field(default="accuracy", description="what the value measures, on the test subset")
    class_name: str | None = Field(default=None, description="the class of sensitivity or specificity")
    value: float = Field(gt=0.0, le=1.0, description="a fraction: 0.928 for 92.8%")
    where: str = Field(description="table, figure or section of the paper")
    test_size: int | None = Field(default=None, ge=1, description="images in the paper's test set, when stated")
    tolerance: float = Field(
        default=0.02, gt=0.0, lt=1.0, description="largest half-width of our interval that still decides"
    )
    note: str = Field(default="", description="more about the data or the setting of this value")

    @model_validator(mode="after")
    def _class_for_per_class_metrics(self):
        if self.class_name is not None and self.metric not in ("sensitivity", "specificity"):
            raise ValueError(f"class_name is for sensitivity and specificity only, not {self.metric}")
        return self


class DataCheck(Strict):
    """The data check before training (file-based datasets; see project/data/datacheck.py)."""

    check: bool = Field(default=True, description="scan the files first: exclude unreadable ones, convert odd formats")
    drop_duplicates: bool = Field(default=False, description="keep one copy of identical images, in a single subset")


class Transform(Strict):
    """One albumentations transform: its class name and keyword arguments. Names and arguments
    are checked by `augment.build_augmentation` (importing albumentations takes over a second)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="an albumentations class name; the item's other keys are its arguments")


class ReportOptions(Strict):
    gradcam_layer: str | None = Field(
        default=None,
        description="the backbone layer whose feature map Grad-CAM reads; null: the backbone's last feature map",
    )


class Paper(Strict):
    citation: Citation = Field(description="the paper")
    reported: list[Reported] = Field(default_factory=list, description="the paper's results the report compares with")
    summary: str = Field(default="", description="the method and what the card reproduces, in two sentences")
    caveats: list[str] = Field(default_factory=list, description="what the card could not reproduce or confirm")
    intended_use: str = Field(
        default="Coursework reproduction of a published image classifier; not for clinical or other high-stakes use.",
        description="the model card's intended use",
    )
    seed: int = Field(default=42, description="seed of initialisation, shuffling, augmentation and dropout")
    model: Model = Field(default=Model(), description="the network")
    training: Training = Field(default=Training(), description="the recipe")
    data: DataCheck = DataCheck()
    augmentation: list[Transform] = Field(
        default_factory=list, description="albumentations transforms, in order (train only)"
    )
    augmentation_strength: float = Field(
        default=1.0, ge=0.0, le=1.0, description="scales each transform's probability p"
    )
    target_accuracy: float = Field(default=0.97, gt=0.0, le=1.0, description="the test accuracy the report checks")
    evaluation: Evaluation = Field(default=Evaluation(), description="how the test subset is evaluated besides plainly")
    runtime: Runtime = Runtime()
    search: Search | None = Field(default=None, description="the tuning's search; null: no make tune")
    assumed: list[str] = Field(default_factory=list, description="dotted keys whose values the paper does not state")
    report: ReportOptions = Field(default=ReportOptions(), description="what the report shows")

    @model_validator(mode="after")
    def _square_for_rotations(self):
        height, width = self.model.input_size
        turned = [v for v in self.evaluation.tta if v in ("rot90", "rot270")]
        if turned and height != width:
            raise ValueError(
                f"evaluation.tta: {', '.join(turned)} needs a square model.input_size, got {height}x{width} "
                f"(accepted views for it: hflip, vflip, rot180)"
            )
        return self

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

    val: float = Field(
        default=0.15, gt=0.0, lt=1.0, description="fraction for validation (of train, when provided; unused with folds)"
    )
    test: float = Field(
        default=0.15, ge=0.0, lt=1.0, description="fraction for test (unused when provided); 0: none, only with folds"
    )
    seed: int = Field(default=0, description="seed of the stratified split and of the folds")
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
    adapter: str = Field(description="the loader: a built-in adapter, or your own function")
    options: dict[str, Any] = Field(default_factory=dict, description="the adapter's options (below)")
    split: Split = Field(default_factory=Split, description='fractions, or "provided" (the data comes pre-split)')
    classes: list[str] | None = Field(
        default=None, description="class names in label order; default: found in the data, sorted"
    )
    label_map: dict[str, str] | list[Bin] | None = Field(
        default=None,
        description=f"raw label -> class (several to one merges, {DROP} leaves out), or a list of {{max, name}} bins "
        f"grading numeric labels; applied after the adapter, before the split",
    )
    description: str = Field(default="", description="what the images show, who made and labelled them")
    source: str = Field(default="", description="where to download it (URL or DOI, version)")
    license: str = Field(default="", description="the data's licence")
    num_classes: int | None = Field(default=None, description="classes, as documented (shown by make list)")
    num_images: int | None = Field(default=None, description="images, as documented (shown by make list)")
    resolution: str = Field(default="", description="image sizes, as documented")
    layout: str = Field(default="", description="how the files are arranged on disk")

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

    @field_validator("options")
    @classmethod
    def _subset_options(cls, options, info):
        """The built-in adapters' {subset: path} options, checked before any file is read."""
        problem = options_problem(info.data.get("adapter"), options)
        if problem:
            raise ValueError(problem)
        return options

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map(cls, value):
        return read_label_map(value)

    @field_validator("label_map")
    @classmethod
    def _classes_of_the_map(cls, label_map, info):
        problem = label_map is not None and mapped_classes_problem(label_map, info.data.get("classes"))
        if problem:
            raise ValueError(problem)
        return label_map


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
