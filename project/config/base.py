"""What every card model shares: unknown keys are errors, assignments are validated, and the
names of the template's built-in choices."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

ADAPTER_NAMES = (
    "folder",
    "csv",
    "digits",
    "npz",
    "keras",
    "tfds",
)  # the built-in loaders: project.data.adapters.ADAPTERS

WARMUP_SCHEDULES = ("warmup_cosine", "one_cycle")
TTA_VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270")  # project.train.tta.VIEWS applies them
Activation = Literal["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish", "tanh", "sigmoid"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
