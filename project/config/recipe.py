"""How a paper card trains (training:, evaluation:, runtime:): the optimizer, its schedule, the
stages of fine-tuning, the recipe switches, and how to run."""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from project.config.base import TTA_VIEWS, WARMUP_SCHEDULES, Optimizer, Strict


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
