"""Checks 5 and 6 of `make sanity` (project.train.sanity), what flows forward through a fresh
model: activation statistics layer by layer, and the preprocessed inputs against what the
backbone expects (with what the card's augmentation does to them). Same result dicts as
project.train.sanity_loss_checks.
"""

import keras
import numpy as np

from project.config.backbone_table import BACKBONES
from project.data.augment import build_augmentation
from project.data.augment_pool import augment_in_place, image_seeds
from project.train.sanity_loss_checks import result, state_kept

COLLAPSED_STD, DEAD_FRACTION, SATURATED_FRACTION = 1e-2, 0.95, 0.25
AUGMENT_SHIFT, AUGMENT_STD_RATIO = 0.25, 1.25  # augmentation "moves" the inputs beyond these


# ---------------------------------------------------------------- 5 activation statistics


def activation_kind(layer):
    """relu / tanh / sigmoid / other for a layer that applies a nonlinearity, else None."""
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU)):
        return "other"
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if name in ("linear", "softmax", "log_softmax"):
        return None
    return {"relu": "relu", "relu6": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "hard_sigmoid": "sigmoid"}.get(
        name, "other"
    )


def _call_input(layer):
    # the tensor a nested model receives inside its parent graph (Keras has no public accessor)
    return layer._inbound_nodes[0].input_tensors[0]


def activation_outputs(model, x, prefix=""):
    """[(layer name, kind, output array)] for every layer with an activation, nested models
    included, in training mode (as the first step sees them)."""
    direct = [(layer, activation_kind(layer)) for layer in model.layers]
    direct = [(layer, kind) for layer, kind in direct if kind]
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    outputs = [layer.output for layer, _ in direct] + [_call_input(layer) for layer in nested]
    if not outputs:
        return []
    values = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, outputs)(x, training=True)
    values = [keras.ops.convert_to_numpy(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    found = [(prefix + layer.name, kind, value) for (layer, kind), value in zip(direct, values)]
    for layer, value in zip(nested, values[len(direct) :]):
        found += activation_outputs(layer, value, prefix=f"{prefix}{layer.name}/")
    order = {name: i for i, name in enumerate(_layer_order(model))}
    return sorted(found, key=lambda item: order.get(item[0], 0))


def _layer_order(model, prefix=""):
    for layer in model.layers:
        yield prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from _layer_order(layer, f"{prefix}{layer.name}/")


def activation_stats(name, kind, a):
    a = np.asarray(a, dtype="float64")
    row = {
        "layer": name,
        "kind": kind,
        "mean": float(a.mean()),
        "std": float(a.std()),
        "zero_fraction": None,
        "dead_units": None,
        "saturated_fraction": None,
        "flags": [],
    }
    if kind == "relu":
        row["zero_fraction"] = float(np.mean(a == 0))
        row["dead_units"] = float(np.mean(np.all(a.reshape(-1, a.shape[-1]) == 0, axis=0)))
        if row["zero_fraction"] > DEAD_FRACTION or row["dead_units"] > 0.5:
            row["flags"].append("dead")
    elif kind == "tanh":
        row["saturated_fraction"] = float(np.mean(np.abs(a) > 0.99))
    elif kind == "sigmoid":
        row["saturated_fraction"] = float(np.mean((a < 0.01) | (a > 0.99)))
    if row["saturated_fraction"] is not None and row["saturated_fraction"] > SATURATED_FRACTION:
        row["flags"].append("saturated")
    if row["std"] < COLLAPSED_STD:
        row["flags"].append("collapsed")
    return row


def check_activations(model, x, fail_fraction=0.5):
    """Per-layer activation statistics on a real batch at initialisation. A layer is flagged
    when its std collapses (< 0.01), its units are mostly dead (> 95% zeros, or over half of the
    channels never fire) or saturated (> 25% of tanh/sigmoid units at the rails). WARN on any
    flag, FAIL when at least `fail_fraction` of the layers are flagged (None: never FAIL)."""
    with state_kept(model):
        rows = [activation_stats(name, kind, a) for name, kind, a in activation_outputs(model, x)]
    flagged = [r for r in rows if r["flags"]]
    counts = {flag: sum(flag in r["flags"] for r in rows) for flag in ("collapsed", "dead", "saturated")}
    numbers = {
        "layers": len(rows),
        "flagged": len(flagged),
        **counts,
        "std_first": rows[0]["std"] if rows else None,
        "std_last": rows[-1]["std"] if rows else None,
    }
    extra = {"layers": rows, "collapsed_std": COLLAPSED_STD}
    if not rows:
        return result("activations", "WARN", numbers, "no layer with an activation was found", **extra)
    if not flagged:
        return result(
            "activations",
            "PASS",
            numbers,
            "every layer keeps a healthy spread: no collapsed, dead or saturated layers",
            **extra,
        )
    worst = max(counts, key=counts.get)
    advice = {
        "collapsed": "activations shrink toward zero layer by layer: the weights are initialised too small "
        "(use he_normal for ReLU, glorot for tanh) or add normalization",
        "dead": "most ReLU units never fire: lower the learning rate, check the bias/initialisation, or use leaky_relu",
        "saturated": "tanh/sigmoid units sit at the rails (no gradient): the weights are initialised too large (use glorot), "
        "or add normalization",
    }[worst]
    names = ", ".join(r["layer"] for r in flagged[:4]) + (" ..." if len(flagged) > 4 else "")
    status = "FAIL" if fail_fraction is not None and len(flagged) >= fail_fraction * len(rows) else "WARN"
    return result(
        "activations", status, numbers, f"{len(flagged)}/{len(rows)} layers flagged ({names}): {advice}", **extra
    )


# ---------------------------------------------------------------- 6 preprocessing


# what the first backbone layer expects, per preprocessing mode: value range with some slack,
# or zero-centred unit-scale inputs; min_std catches images scaled twice (e.g. [0, 1] -> [-1, -0.99])
EXPECTED = {
    "tf": {"text": "values in [-1, 1]", "range": (-1.0, 1.0), "min_std": 0.02},
    "torch": {"text": "ImageNet-normalised values in about [-2.2, 2.7]", "range": (-2.2, 2.7), "min_std": 0.05},
    "caffe": {"text": "BGR minus the ImageNet mean, about [-124, 152]", "range": (-124.0, 152.0), "min_std": 5.0},
    "builtin": {"text": "raw 0-255 (the backbone rescales itself)", "range": (0.0, 255.0), "min_std": 2.0},
    "rescale": {"text": "values in [0, 1] (x / 255)", "range": (0.0, 1.0), "min_std": 0.004},
    "centred": {"text": "zero-centred, about unit std", "centred": True},
}


def expected_mode(m):
    """What the backbone of the card's model section `m` expects: its own mode when it carries
    pretrained weights, else the card's normalisation (preprocessing: none on a from-scratch
    network -> zero-centred)."""
    own = BACKBONES[m.backbone]["preprocess"]
    if m.backbone != "scratch" and m.weights.lower() != "none":
        return own
    mode = own if m.preprocessing == "backbone" else m.preprocessing
    return "centred" if mode in ("per_channel_mean", "mean_image", "none", "card") else mode


def preprocessed(model, x):
    """The model's input after its leading weight-free layers (Rescaling, Normalization, the
    frozen RGB->BGR swap): what reaches the first layer that learns."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) or layer.trainable_weights:
            break
        x = layer(x)
    return keras.ops.convert_to_numpy(x)


def channel_stats(v):
    axes = tuple(range(v.ndim - 1))
    return v.mean(axis=axes), v.std(axis=axes)


def augmentation_shift(model, x, augmented):
    """How the card's augmentation moves what reaches the network, on the same images: the largest
    shift of a channel mean in units of that channel's plain std, and the std ratio furthest from 1."""
    plain_mean, plain_std = channel_stats(preprocessed(model, x).astype("float64"))
    mean, std = channel_stats(preprocessed(model, augmented).astype("float64"))
    scale = np.maximum(plain_std, 1e-12)
    ratios = np.maximum(std, 1e-12) / scale
    return {
        "augmented_channel_mean": mean.tolist(),
        "augmented_channel_std": std.tolist(),
        "augmentation_mean_shift": float(np.max(np.abs(mean - plain_mean) / scale)),
        "augmentation_std_ratio": float(ratios[np.argmax(np.abs(np.log(ratios)))]),
    }


def augmentation_note(shift, x):
    """One line on what augmentation does to the input statistics, with advice when it moves them."""
    moved, ratio = shift["augmentation_mean_shift"], shift["augmentation_std_ratio"]
    if moved <= AUGMENT_SHIFT and 1 / AUGMENT_STD_RATIO <= ratio <= AUGMENT_STD_RATIO:
        return f"augmentation keeps the input statistics (means move by {moved:.2f} std, stds x{ratio:.2f})"
    colour = np.round(np.asarray(x, dtype="float64").mean(axis=tuple(range(np.ndim(x) - 1)))).astype(int).tolist()
    return (
        f"augmentation moves the inputs (means by {moved:.2f} std, stds x{ratio:.2f}), which test images never see; "
        f"if it is the constant fill at the borders of Affine/Rotate/ShiftScaleRotate, set border_mode: 4 "
        f"(cv2.BORDER_REFLECT_101) in the transform, or fill: {colour} (the images' mean colour)"
    )


def check_preprocessing(model, x, mode, augmented=None):
    """What reaches the first layer that learns, on un-augmented images `x` (raw 0-255 RGB), against what
    the backbone expects: PASS or WARN on the preprocessing alone. With `augmented` (the same images
    through the card's augmentation) it also says, on its own line (`augmentation`), whether augmentation
    moves the statistics (a mean by more than AUGMENT_SHIFT std, a std by more than x/÷ AUGMENT_STD_RATIO),
    e.g. the black fill of a large rotation on grey images. That never changes the status: the model's
    preprocessing is right or wrong whatever the augmentation, and blaming it for the fill misleads."""
    v = preprocessed(model, x).astype("float64")
    mean, std = channel_stats(v)
    numbers = {
        "expected": EXPECTED[mode]["text"],
        "mode": mode,
        "channel_mean": mean.tolist(),
        "channel_std": std.tolist(),
        "min": float(v.min()),
        "max": float(v.max()),
    }
    extra = {}
    if augmented is not None:
        shift = augmentation_shift(model, x, augmented)
        numbers.update(shift)
        extra["augmentation"] = augmentation_note(shift, x)
    spec = EXPECTED[mode]
    problems = []
    if spec.get("centred"):
        if np.any(np.abs(mean) > 0.5):
            problems.append(f"channel means {np.round(mean, 2).tolist()} are not near 0")
        if np.any((std < 0.3) | (std > 3.0)):
            problems.append(f"channel stds {np.round(std, 2).tolist()} are far from 1")
    else:
        low, high = spec["range"]
        slack = 0.05 * (high - low)
        if v.min() < low - slack or v.max() > high + slack:
            problems.append(f"values span [{v.min():.3g}, {v.max():.3g}]")
        if np.all(std < spec["min_std"]):
            problems.append(f"channel stds {np.round(std, 4).tolist()} are tiny (scaled twice?)")
    if not problems:
        return result(
            "preprocessing", "PASS", numbers, f"inputs reach the backbone as it expects: {spec['text']}", **extra
        )
    hint = "images still 0-255? " if v.max() > 20 and not spec.get("range", (0, 0))[1] > 20 else ""
    return result(
        "preprocessing",
        "WARN",
        numbers,
        f"{'; '.join(problems)} but the backbone expects {spec['text']}: {hint}check model.preprocessing and that the "
        f"pipeline feeds raw 0-255 RGB",
        **extra,
    )


def augmented_copy(images, feed):
    """The same images through the augmentation of `feed` (project.data.prepare.Feed) as the training
    pipeline applies it to its first batch (None without augmentation)."""
    compose = build_augmentation(list(feed.augmentation), feed.strength, feed.seed)
    if compose is None:
        return None
    out = np.asarray(images).astype(np.uint8)
    augment_in_place(compose, out, 0, len(out), image_seeds([feed.seed, 0, 0], len(out)))
    return out.astype("float32")
