"""The search of a paper card (search:): the space of each searchable hyperparameter, the two
stages and the budget."""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from project.config.base import Strict
from project.config.durations import parse_duration


class Param(Strict):
    """One searched hyperparameter: a numeric range (min, max, sampling) or a list of choices."""

    min: float | None = Field(default=None, description="lower end of a numeric range")
    max: float | None = Field(default=None, description="upper end of a numeric range")
    sampling: Literal["linear", "log"] = Field(default="linear", description="log: uniform in log space")
    step: float | None = Field(default=None, description="spacing of the values in the range")
    choices: list[Any] | None = Field(default=None, description="the values to choose from, instead of min and max")

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
    "backbone_lr_multiplier": "training.stages.-1.lr_multipliers.backbone",
    "augmentation_strength": "augmentation_strength",
    "mixup": "training.mixup",
    "cutmix": "training.cutmix",
}


class SearchStage(Strict):
    trials: int = Field(ge=1, description="trials of this stage (a limit with a budget)")
    epochs: int = Field(ge=1, description="epochs of each trial")


class Search(Strict):
    objective: str = Field(default="val_accuracy", description="the per-epoch figure that ranks trials")
    direction: Literal["max", "min"] = Field(default="max", description="whether a higher objective is better")
    seed: int = Field(default=1, description="seed of the random search's draws")
    top_k: int = Field(default=3, ge=1, description="coarse trials the fine stage narrows around")
    coarse: SearchStage = Field(default=SearchStage(trials=8, epochs=3), description="wide ranges, short trials")
    fine: SearchStage = Field(
        default=SearchStage(trials=4, epochs=6), description="ranges narrowed around the top_k coarse trials"
    )
    space: dict[str, Param] = Field(default_factory=dict, description="the searched hyperparameters and their ranges")
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
