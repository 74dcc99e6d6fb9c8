"""The card schemas (pydantic): what a paper card and a dataset card may hold.

Every model forbids unknown keys, so a typo is an error that names the key. Nothing here
imports TensorFlow: a bad card is reported in well under a second.
"""

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from project.config.backbone_table import BACKBONES, check_backbone
from project.config.durations import parse_duration
from project.config.layouts import DROP, Bin, mapped_classes_problem, options_problem, read_label_map
from project.paths import REPO_ROOT

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


class Head(Strict):
    pooling: Literal["avg", "max", "flatten"] = Field(
        default="avg", description="how the backbone's feature map becomes a vector"
    )
    hidden: list[int] = Field(default_factory=list, description="units of each hidden dense layer")
    activation: Activation = Field(default="relu", description="activation of the hidden layers")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout rate before each dense layer")
    normalization: Literal["none", "batch"] = Field(
        default="none", description="BatchNormalization after each hidden layer"
    )

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value):
        if any(units < 1 for units in value):
            raise ValueError("hidden layer sizes must be >= 1")
        return value


Pooling = Literal["max", "avg", "none"]  # what ends a scratch block: 2x2 max or average pooling, or nothing
POOLINGS = get_args(Pooling)


class Scratch(Strict):
    """The from-scratch CNN (model.backbone: scratch): conv blocks, each of `convs_per_block`
    convolutions (the first with the block's `strides`) ending in the block's 2x2 `pooling`.
    `strides` and `pooling` take one value for every block or a list with one per block; whether the
    network ends in global pooling or a flatten is model.head.pooling."""

    blocks: list[int] = Field(default=[32, 64], min_length=1, description="filters of each conv block")
    convs_per_block: int = Field(default=2, ge=1, le=8, description="convolutions before each block's pooling")
    kernel_size: int = Field(default=3, ge=1, le=11, description="side of the square convolution kernels")
    padding: Literal["same", "valid"] = Field(
        default="same", description="same keeps the size; valid trims kernel_size - 1 per convolution"
    )
    strides: int | list[int] = Field(
        default=1, description="stride (1 to 8) of each block's first convolution: one for all blocks, or one per block"
    )
    pooling: Pooling | list[Pooling] = Field(
        default="max", description="the 2x2 pooling ending each block: one for all blocks, or one per block"
    )
    activation: Activation = Field(default="relu", description="activation after each convolution")
    initializer: Literal["he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "normal_0.01"] = Field(
        default="he_normal", description="initialiser of the convolution kernels"
    )
    normalization: Literal["batch", "layer", "group", "none"] = Field(
        default="batch", description="normalisation after each convolution"
    )

    @field_validator("strides", mode="before")
    @classmethod
    def _strides(cls, value):
        """Checked here, not by the union, so that a bad stride is one error naming the key."""
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 8 for v in values):
            raise ValueError("a stride is a whole number from 1 to 8, or a list of them, one per block")
        return value

    @field_validator("pooling", mode="before")
    @classmethod
    def _pooling(cls, value):
        values = value if isinstance(value, list) else [value]
        if not values or any(v not in POOLINGS for v in values):
            raise ValueError(f"pooling is one of {', '.join(POOLINGS)}, or a list of them, one per block")
        return value

    @model_validator(mode="after")
    def _one_per_block(self):
        for name in ("strides", "pooling"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != len(self.blocks):
                raise ValueError(
                    f"{name}: {len(value)} values for {len(self.blocks)} blocks; give one value, or one per block"
                )
        return self

    def per_block(self, name):
        """`strides` or `pooling` as one value per block."""
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value] * len(self.blocks)


def scratch_sizes(scratch, input_size):
    """[(where, height, width)] of the scratch CNN's feature map after each layer that changes it, from
    the input on; stops at the first size that reaches 0. Keras' arithmetic: a `same` convolution gives
    ceil(n / stride), a `valid` one floor((n - kernel) / stride) + 1, a 2x2 pooling floor(n / 2)."""

    def conv(n, stride):
        if scratch.padding == "same":
            return -(-n // stride)
        return (n - scratch.kernel_size) // stride + 1 if n >= scratch.kernel_size else 0

    h, w = input_size
    sizes = [("input", h, w)]
    for b, (stride, pooling) in enumerate(zip(scratch.per_block("strides"), scratch.per_block("pooling"))):
        for c in range(scratch.convs_per_block):
            s = stride if c == 0 else 1
            if scratch.padding == "valid" or s > 1:
                h, w = conv(h, s), conv(w, s)
                sizes.append((f"block{b + 1}_conv{c + 1}", h, w))
            if min(h, w) < 1:
                return sizes
        if pooling != "none":
            h, w = h // 2, w // 2
            sizes.append((f"block{b + 1}_pool", h, w))
            if min(h, w) < 1:
                return sizes
    return sizes


class Model(Strict):
    backbone: str = Field(
        default="MobileNetV2", description="a keras.applications model (ResNet50, EfficientNetB0, ...) or scratch"
    )
    weights: str = Field(default="imagenet", description="imagenet, none, or a path to a weights file")
    weights_fallback: Literal["error", "random"] = Field(
        default="error", description="when the ImageNet weights are missing: stop, or go on from random initialisation"
    )
    input_size: list[int] = Field(default_factory=list, description="[height, width]; empty: the backbone's default")
    width: float = Field(default=1.0, gt=0.0, le=2.0, description="width multiplier (alpha) of MobileNet family")
    preprocessing: Literal["backbone", "per_channel_mean", "mean_image", "rescale", "none"] = Field(
        default="backbone",
        description="the backbone's own, standardised by the training subset's channel means or mean image, "
        "rescale (x / 255), or none",
    )
    head: Head = Field(default=Head(), description="the classifier on top of the backbone")
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
        if self.backbone == "scratch":
            sizes = scratch_sizes(self.scratch, self.input_size)
            where, h, w = sizes[-1]
            if min(h, w) < 1:
                s = self.scratch
                path = " -> ".join(f"{name} {height}x{width}" for name, height, width in sizes)
                raise ValueError(
                    f"model.scratch (padding {s.padding}, strides {s.strides}, pooling {s.pooling}, kernel_size "
                    f"{s.kernel_size}) shrinks the feature map to {h}x{w} at {where} for input_size "
                    f"{self.input_size}: {path}; use padding: same, smaller strides, pooling: none in some "
                    f"blocks, fewer blocks, or a larger input_size"
                )
        return self


class LrMultipliers(Strict):
    """Discriminative learning rates: the backbone's variables train at the stage's learning rate
    times `backbone`, the head's (everything else) at it times `head`, each part with an optimizer of
    its own (keras.optimizers.MultiOptimizer), so that the rate itself differs, not the gradient."""

    backbone: float = Field(default=1.0, ge=0.0, le=100.0, description="x the stage's rate for the backbone")
    head: float = Field(default=1.0, ge=0.0, le=100.0, description="x the stage's rate for the head")

    @model_validator(mode="after")
    def _something_trains(self):
        if self.backbone == 0 and self.head == 0:
            raise ValueError("backbone and head are both 0: nothing would train; set one of them above 0")
        return self


class Stage(Strict):
    """One stage of training. `unfreeze`: backbone layers trained, counted from the top:
    0 (frozen), a number, "all", or the name of the first layer to train (e.g. "block_13_expand").
    `train_batchnorm`: the unfrozen BatchNormalization layers train and update their statistics even
    with pretrained weights (by default those stay in inference mode; from random initialisation they
    always train). `lr_multipliers`: discriminative learning rates for the backbone and the head.
    Its length is `epochs` or `steps` (optimizer steps at training.steps_batch_size, as papers state
    them: project.train.schedules.stage_epochs converts them to whole epochs of the run)."""

    name: str = Field(description="the stage's name (unique), e.g. head or fine_tune")
    epochs: int | None = Field(default=None, ge=0, description="epochs of this stage (or steps, not both)")
    steps: int | None = Field(
        default=None, ge=1, description="optimizer steps at training.steps_batch_size, instead of epochs"
    )
    unfreeze: int | str = Field(
        default="all", description="backbone layers trained, from the top: 0, a number, all, or a layer name"
    )
    learning_rate: float | None = Field(
        default=None, gt=0.0, description="this stage's; default training.learning_rate"
    )
    train_batchnorm: bool = Field(
        default=False, description="BatchNormalization of the unfrozen layers trains, even with pretrained weights"
    )
    lr_multipliers: LrMultipliers | None = Field(
        default=None, description="{backbone: x, head: y}: per-part learning rates (null: one rate for all)"
    )

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("unfreeze must be >= 0, 'all' or a layer name")
        return value

    @model_validator(mode="after")
    def _head_trains(self):
        if self.unfreeze == 0 and self.lr_multipliers is not None and self.lr_multipliers.head == 0:
            raise ValueError("lr_multipliers.head is 0 and unfreeze is 0: nothing would train in this stage")
        return self

    @model_validator(mode="after")
    def _length(self):
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                f"give epochs or steps, not both (got epochs {self.epochs} and steps {self.steps}): "
                "steps are converted to epochs at the run's batch size"
            )
        if self.epochs is None and self.steps is None:
            raise ValueError("give the stage's length: epochs (e.g. epochs: 10) or steps (e.g. steps: 20000)")
        return self

    @property
    def length(self):
        """The stage's length as the card states it: '10 epochs' or '20,000 steps'."""
        return f"{self.epochs} epochs" if self.steps is None else f"{self.steps:,} steps"


# what every training epoch records (history.csv), so what early stopping, checkpoints and the search can follow
Recorded = Literal["val_accuracy", "val_macro_f1", "val_loss", "accuracy", "macro_f1", "loss"]


class EarlyStopping(Strict):
    monitor: Recorded = Field(default="val_accuracy", description="the per-epoch figure it follows")
    patience: int = Field(default=5, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(default=0.0, ge=0.0, description="smallest change that counts as improvement")


class Training(Strict):
    optimizer: Optimizer = Field(default="adam", description="momentum: SGD with momentum; nesterov: with Nesterov's")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0, description="the initial (peak) learning rate")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="momentum of momentum, nesterov and rmsprop")
    schedule: Literal["constant", "step", "cosine", "exponential", "plateau", "warmup_cosine", "one_cycle"] = Field(
        default="constant", description="how the learning rate changes over each stage's epochs"
    )
    step_every: int = Field(default=10, ge=1, description="epochs between drops (step schedule)")
    decay: float = Field(
        default=0.1, gt=0.0, le=1.0, description="factor per drop (step), per epoch (exponential), on plateau"
    )
    plateau_patience: int = Field(default=3, ge=1, description="epochs without improvement before a drop (plateau)")
    warmup_epochs: float | None = Field(
        default=None, gt=0.0, description="linear warmup of warmup_cosine / one_cycle, in epochs of each stage"
    )
    warmup_steps: int | None = Field(
        default=None, ge=1, description="the warmup in optimizer steps at steps_batch_size (instead of warmup_epochs)"
    )
    batch_size: int = Field(default=32, ge=1, le=65536, description="images per training step")
    steps_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="the batch size stages[].steps and warmup_steps are counted at (default: batch_size as the card states it)",
    )
    clipnorm: float | None = Field(default=None, gt=0.0, description="clip each gradient to this norm (Keras clipnorm)")
    ema: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="momentum of an exponential moving average of the weights, which are evaluated and saved",
    )
    mixup: float | None = Field(
        default=None, gt=0.0, le=100.0, description="mixup alpha: Beta(alpha, alpha), training batches"
    )
    cutmix: float | None = Field(
        default=None, gt=0.0, le=100.0, description="CutMix alpha: Beta(alpha, alpha), training batches"
    )
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0, description="decoupled, applied by the optimizer")
    l2: float = Field(
        default=0.0,
        ge=0.0,
        lt=10.0,
        description="L2 penalty in the loss (l2 * sum of squares) on every Conv and Dense kernel, backbone included",
    )
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="of the cross-entropy's targets")
    class_weight: Literal["none", "auto"] = Field(
        default="none", description="auto: weigh each class's loss by inverse frequency in train"
    )
    early_stopping: EarlyStopping | None = Field(default=None, description="stop on no improvement; null: never")
    stages: list[Stage] = Field(
        default_factory=lambda: [Stage(name="train", epochs=10)],
        min_length=1,
        description="the stages of fine-tuning, run in order",
    )

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if not any(s.epochs or s.steps for s in stages):
            raise ValueError("at least one stage needs epochs >= 1 (or steps)")
        return stages

    @model_validator(mode="after")
    def _recipe(self):
        """Warmup belongs to a schedule that has one, and is shorter than every stage it starts
        (in the card's own units here; mixed units are checked by project.train.schedules at run time)."""
        if self.warmup_epochs is not None and self.warmup_steps is not None:
            raise ValueError("training.warmup_epochs and training.warmup_steps: give one, not both")
        warmup = "warmup_epochs" if self.warmup_epochs is not None else "warmup_steps" if self.warmup_steps else None
        if warmup and self.schedule not in WARMUP_SCHEDULES:
            raise ValueError(
                f"training.{warmup}: a warmup belongs to schedule {' or '.join(WARMUP_SCHEDULES)}, not {self.schedule}"
            )
        if self.schedule == "warmup_cosine" and not warmup:
            raise ValueError(
                "training.schedule warmup_cosine needs training.warmup_epochs or training.warmup_steps (its length)"
            )
        for stage in self.stages:
            unit, length = ("epochs", stage.epochs) if stage.steps is None else ("steps", stage.steps)
            value = getattr(self, warmup) if warmup else None
            if length and warmup and warmup.endswith(unit) and value >= length:
                raise ValueError(
                    f"training.{warmup} ({value:g}) must be shorter than every stage it warms up: "
                    f"stage {stage.name!r} has {length} {unit}"
                )
        if self.steps_batch_size is None and (self.warmup_steps or any(s.steps for s in self.stages)):
            object.__setattr__(self, "steps_batch_size", self.batch_size)  # steps are counted at the card's batch size
        return self


class Evaluation(Strict):
    """How the test subset is evaluated besides the plain images. `tta`: test-time augmentation, the
    softmax averaged over the plain image and these views; reported next to the plain figure (metrics.json
    test_tta_accuracy), never instead of it."""

    tta: list[Literal[TTA_VIEWS]] = Field(
        default_factory=list,
        description="test-time views whose softmax is averaged with the plain image's; reported next to the plain accuracy",
    )

    @field_validator("tta")
    @classmethod
    def _once(cls, views):
        if len(set(views)) != len(views):
            raise ValueError(f"each view once, got {views}")
        return views


class Runtime(Strict):
    """How to run, not what to train: auto picks mixed precision and XLA on a GPU only."""

    mixed_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="auto", description="auto: bf16 or float16 on a GPU, float32 on a CPU"
    )
    jit_compile: bool | Literal["auto"] = Field(default="auto", description="XLA; auto: on a GPU only")
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
    """The data check before training (file-based datasets; see project/data/datacheck.py)."""

    check: bool = Field(default=True, description="scan the files first: exclude unreadable ones, convert odd formats")
    drop_duplicates: bool = Field(default=False, description="keep one copy of identical images, in a single subset")


class Transform(Strict):
    """One albumentations transform: its class name and keyword arguments. Names and arguments
    are checked by `augment.build_augmentation` (importing albumentations takes over a second)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="an albumentations class name; the item's other keys are its arguments")


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
