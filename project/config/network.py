"""The network a paper card describes (model:): the backbone or the scratch CNN, and the head."""

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from project.config.backbone_table import BACKBONES, check_backbone
from project.config.base import Activation, Strict


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
