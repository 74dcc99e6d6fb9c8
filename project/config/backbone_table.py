"""The backbones a card may name: keras.applications models plus the scratch CNN, as plain data
(default and minimum input size, preprocessing mode), so that validating a card needs no TensorFlow."""

# preprocessing mode of keras.applications.<module>.preprocess_input:
#   caffe: RGB->BGR, minus the ImageNet mean; tf: scale to [-1, 1]; torch: [0, 1] then
#   ImageNet mean/std; builtin: the model has its own rescaling layers (include_preprocessing).
_FAMILIES = {
    # name: (default input size, minimum input size, preprocessing mode)
    "VGG16": (224, 32, "caffe"),
    "VGG19": (224, 32, "caffe"),
    "ResNet50": (224, 32, "caffe"),
    "ResNet101": (224, 32, "caffe"),
    "ResNet152": (224, 32, "caffe"),
    "ResNet50V2": (224, 32, "tf"),
    "ResNet101V2": (224, 32, "tf"),
    "ResNet152V2": (224, 32, "tf"),
    "InceptionV3": (299, 75, "tf"),
    "Xception": (299, 71, "tf"),
    "InceptionResNetV2": (299, 75, "tf"),
    "MobileNet": (224, 32, "tf"),
    "MobileNetV2": (224, 32, "tf"),
    "MobileNetV3Small": (224, 32, "builtin"),
    "MobileNetV3Large": (224, 32, "builtin"),
    "DenseNet121": (224, 32, "torch"),
    "DenseNet169": (224, 32, "torch"),
    "DenseNet201": (224, 32, "torch"),
    "NASNetMobile": (224, 32, "tf"),
    "ConvNeXtTiny": (224, 32, "builtin"),
    "ConvNeXtSmall": (224, 32, "builtin"),
    "EfficientNetV2B0": (224, 32, "builtin"),
    "EfficientNetV2B1": (240, 32, "builtin"),
    "EfficientNetV2B2": (260, 32, "builtin"),
    "EfficientNetV2B3": (300, 32, "builtin"),
    "EfficientNetV2S": (384, 32, "builtin"),
}
for _i, _size in enumerate([224, 240, 260, 300, 380, 456, 528, 600]):
    _FAMILIES[f"EfficientNetB{_i}"] = (_size, 32, "builtin")

BACKBONES = {name: {"default_size": d, "min_size": m, "preprocess": p} for name, (d, m, p) in _FAMILIES.items()}
BACKBONES["scratch"] = {"default_size": 32, "min_size": 8, "preprocess": "card"}

# keras.applications constructors that take a width multiplier
WIDTH_MULTIPLIER = {"MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large"}


def check_backbone(name, input_size=()):
    """Raise a ValueError (turned into a card error) for an unknown name or a too-small input."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    minimum = BACKBONES[name]["min_size"]
    if input_size and min(input_size) < minimum:
        raise ValueError(
            f"input_size {list(input_size)} is below the minimum of {name}: use at least {minimum}x{minimum}"
        )
