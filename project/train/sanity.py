"""`make sanity`: the course's babysitting checklist, automated, run before training.

1 initial loss ~ ln(C)          2 a large L2 raises the loss      3 overfit 20 examples
4 learning-rate sweep           5 activation statistics at init   6 preprocessed input ranges

Each check is a function of a Keras model and batches (tests hand it deliberately broken
models) and returns a result dict: name, title, status PASS / WARN / FAIL, its numbers, one
line of advice. `run_checks` builds the model and batches from the config; `cli` prints the
results, writes runs/<paper>__<dataset>/sanity.json and its plots, and returns 1 on a FAIL
(unless --force) so that `make all` stops before training.

What "regularisation off" means here: training.l2 0, head dropout 0, weight decay 0, label
smoothing 0, no augmentation (the card's copy used for the model of checks 1 to 5 and for their
batches; the sweep alone trains on the card's own augmented batches, and check 6 judges plain
batches and reports what augmentation does to them on a line of its own). training.l2 is an
L2 penalty on the kernels of the layers the template builds: the head's Dense layers and the
scratch CNN's convolutions. keras.applications backbones carry none (their weights are only
decayed through training.weight_decay, which acts in the optimizer, not in the loss).
"""

import contextlib
import itertools
import math
import time
from pathlib import Path

import keras
import numpy as np

from project import figures
from project.artifacts import atomic_write, run_root
from project.config.backbone_table import BACKBONES
from project.config.cards import with_values
from project.data import pipeline
from project.data.augment import build_augmentation
from project.data.augment_pool import augment_in_place, image_seeds
from project.data.prepare import prepare
from project.model.classifier import apply_stage, build_model
from project.records import Sanity
from project.train.runtime import set_determinism
from project.train.sweep import lr_sweep, read_sweep
from project.train.training import make_optimizer

INITIAL_LOSS_TOLERANCE = 0.25  # |loss / ln(C) - 1| above this: FAIL
L2_FACTOR = 1.0  # "large": the penalty of a freshly initialised head alone is several times ln(C)
OVERFIT_EXAMPLES, OVERFIT_EPOCHS, OVERFIT_LOSS = 20, 200, 0.05
SWEEP = dict(min_lr=1e-7, max_lr=10.0, steps=100)
SWEEP_STEPS_FROM_SCRATCH = 400  # ~50 per decade: a randomly initialised network needs tens of steps at a good rate
COLLAPSED_STD, DEAD_FRACTION, SATURATED_FRACTION = 1e-2, 0.95, 0.25
AUGMENT_SHIFT, AUGMENT_STD_RATIO = 0.25, 1.25  # augmentation "moves" the inputs beyond these

TITLES = {
    "initial_loss": "1 initial loss vs ln(C)",
    "regularisation": "2 large L2 raises the loss",
    "overfit": "3 overfit 20 training examples",
    "lr_sweep": "4 learning-rate sweep",
    "activations": "5 activation statistics at initialisation",
    "preprocessing": "6 preprocessed inputs vs what the backbone expects",
}


def result(name, status, numbers, advice, **extra):
    return {"name": name, "title": TITLES[name], "status": status, "numbers": numbers, "advice": advice, **extra}


@contextlib.contextmanager
def state_kept(model):
    """Forward passes in training mode move BatchNormalization statistics: put them back."""
    saved = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    try:
        yield
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


def cross_entropy(y, probabilities):
    return float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(y, probabilities))))


# ---------------------------------------------------------------- 1 initial loss


def check_initial_loss(model, batches, num_classes, tolerance=INITIAL_LOSS_TOLERANCE):
    """Mean data loss (no regularisation term) on a few batches before any update, in training
    mode as the first step sees it, against ln(C): a fresh classifier should be unsure."""
    losses, sums = [], []
    with state_kept(model):
        for x, y in batches:
            p = keras.ops.convert_to_numpy(model(x, training=True))
            losses.append(cross_entropy(y, p))
            sums.append(np.abs(p.sum(axis=-1) - 1).max())
    loss, expected = float(np.mean(losses)), math.log(num_classes)
    off = loss / expected - 1
    probabilities = bool(max(sums) < 1e-3)
    numbers = {
        "loss": loss,
        "ln_C": expected,
        "relative_difference": off,
        "tolerance": tolerance,
        "batches": len(losses),
        "outputs_are_probabilities": probabilities,
    }
    if not probabilities:
        return result(
            "initial_loss",
            "FAIL",
            numbers,
            "the outputs are not probabilities (logits?): end the model with softmax, or compute the loss from_logits",
        )
    if abs(off) <= tolerance:
        return result(
            "initial_loss",
            "PASS",
            numbers,
            f"the loss starts at chance level ({loss:.3f} vs ln({num_classes}) = {expected:.3f})",
        )
    if off > 0:
        return result(
            "initial_loss",
            "FAIL",
            numbers,
            "the untrained model is confidently wrong: initialise the output layer "
            "small (e.g. zeros or stddev 0.01), check that labels match the classes",
        )
    return result(
        "initial_loss",
        "FAIL",
        numbers,
        "the loss starts below chance: labels may leak into the inputs, or logits and probabilities are mixed up",
    )


# ---------------------------------------------------------------- 2 regularisation


def total_loss(model, batches):
    """Data loss plus the model's own losses (its regularisation penalties), as Keras adds them
    in compute_loss; inference mode, so both models see exactly the same function."""
    values = [
        cross_entropy(y, model(x, training=False))
        + float(sum(keras.ops.convert_to_numpy(term) for term in model.losses))
        for x, y in batches
    ]
    return float(np.mean(values))


def check_regularisation(model, model_l2, batches, l2=L2_FACTOR):
    """`model` without and `model_l2` with a large L2 factor, same weights: the loss must rise."""
    regularised = [v.path for v in model_l2.trainable_weights if getattr(v, "regularizer", None) is not None]
    without, with_l2 = total_loss(model, batches), total_loss(model_l2, batches)
    increase = with_l2 - without
    numbers = {
        "loss_without": without,
        "loss_with_l2": with_l2,
        "increase": increase,
        "l2": l2,
        "regularised_weights": regularised,
    }
    if increase > 0.01 * max(without, 1e-6):
        return result(
            "regularisation",
            "PASS",
            numbers,
            f"L2 {l2:g} raises the loss by {increase:.3g}; it acts on {len(regularised)} kernels (the head and any "
            f"scratch convolutions; keras.applications backbones only get training.weight_decay)",
        )
    if not regularised:
        return result(
            "regularisation",
            "FAIL",
            numbers,
            "no weight carries a regularizer: training.l2 never reaches the loss; "
            "attach kernel_regularizer when the layers are built",
        )
    return result(
        "regularisation",
        "FAIL",
        numbers,
        "weights carry a regularizer but the loss does not rise: the penalty is not wired into the loss (model.losses)",
    )


# ---------------------------------------------------------------- 3 overfit a tiny subset


def stratified(labels, size=OVERFIT_EXAMPLES, seed=0):
    """Indices of `size` examples taking classes in turn (as balanced as the classes allow)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in rng.permutation(np.unique(labels))]
    picked = [i for group in itertools.zip_longest(*by_class) for i in group if i is not None]
    return np.array(picked[:size])


def check_overfit(model, batches, epochs=OVERFIT_EPOCHS, target_loss=OVERFIT_LOSS):
    """Train a compiled model on the same few examples until 100% training accuracy and a loss
    near zero. `batches` is iterated once per epoch (so a test can change the labels)."""
    history = []
    for epoch in range(epochs):
        logs = [(model.train_on_batch(x, y, return_dict=True), len(x)) for x, y in batches]
        count = sum(n for _, n in logs)
        loss = sum(float(log["loss"]) * n for log, n in logs) / count
        accuracy = sum(float(log["accuracy"]) * n for log, n in logs) / count
        history.append({"epoch": epoch + 1, "loss": loss, "accuracy": accuracy})
        if (accuracy >= 1.0 and loss <= target_loss) or not math.isfinite(loss):
            break
    best = max(h["accuracy"] for h in history)
    reached = next((h["epoch"] for h in history if h["accuracy"] >= 1.0), None)
    numbers = {
        "examples": count,
        "epochs_run": len(history),
        "epochs_to_100": reached,
        "final_accuracy": history[-1]["accuracy"],
        "final_loss": history[-1]["loss"],
        "best_accuracy": best,
    }
    extra = {"history": history}
    if history[-1]["accuracy"] >= 1.0 and history[-1]["loss"] <= target_loss:
        return result(
            "overfit",
            "PASS",
            numbers,
            f"memorised {count} examples in {len(history)} epochs: model, labels and optimisation can learn",
            **extra,
        )
    if reached:
        return result(
            "overfit",
            "WARN",
            numbers,
            f"100% accuracy but the loss stays at {history[-1]['loss']:.3g}: "
            f"the learning rate may be too low or the output saturated",
            **extra,
        )
    return result(
        "overfit",
        "FAIL",
        numbers,
        f"cannot fit {count} examples in {len(history)} epochs (best accuracy {best:.2f}): check that labels match "
        f"images, that the learning rate is not 0, and that the layers are trainable",
        **extra,
    )


# ---------------------------------------------------------------- 4 learning-rate sweep


def check_lr_sweep(model, batches, current_lr=None, held=None, **sweep_options):
    """WARN when no rate lowers the held loss by 10%, when the card's rate is at or past where the loss
    explodes, or more than a decade below the suggested range (the loss barely moves there)."""
    options = {**SWEEP, **sweep_options}
    sweep = lr_sweep(model, batches, held=held, **options)
    found = read_sweep(sweep)
    low, high = found["suggested_range"]
    numbers = {
        k: found[k]
        for k in (
            "start_loss",
            "min_loss",
            "lr_falls_from",
            "lr_steepest",
            "falls_fastest",
            "lr_at_min",
            "lr_explodes",
            "suggested_range",
        )
    }
    numbers.update(steps=len(sweep["loss"]), card_lr=current_lr)
    extra = {
        "curve": {
            "lr": sweep["lr"],
            "loss": sweep["loss"],
            "step_loss": sweep["step_loss"],
            "smoothed": found["smoothed"],
        }
    }
    span = f"[{low:.1e}, {high:.1e}]"
    if not found["fell"]:
        return result(
            "lr_sweep",
            "WARN",
            numbers,
            f"no learning rate in {options['min_lr']:g}..{options['max_lr']:g} lowered the loss by 10% in "
            f"{len(sweep['loss'])} steps (measured on a held batch): check data, labels and trainable layers; if the "
            f"overfit check passed, the network may need more steps than the sweep has (the suggested range is then "
            f"a guess)",
            **extra,
        )
    if current_lr is None:
        return result("lr_sweep", "PASS", numbers, f"search learning_rate in {span} (log sampling)", **extra)
    if found["lr_explodes"] is not None and current_lr >= found["lr_explodes"]:
        return result(
            "lr_sweep",
            "WARN",
            numbers,
            f"the card's learning rate {current_lr:g} is at or beyond where the loss explodes "
            f"({found['lr_explodes']:.2g}): lower it; search in {span}",
            **extra,
        )
    if current_lr < low / 10:
        return result(
            "lr_sweep",
            "WARN",
            numbers,
            f"the card's learning rate {current_lr:g} lies far below {span}, where the loss barely moves: "
            f"training will crawl; raise it (search in {span})",
            **extra,
        )
    where = "inside it" if low <= current_lr <= high else ("below it" if current_lr < low else "above it")
    return result(
        "lr_sweep",
        "PASS",
        numbers,
        f"search learning_rate in {span} (log sampling); the card's {current_lr:g} lies {where}",
        **extra,
    )


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
    "centred": {"text": "zero-centred, about unit std", "centred": True},
}


def expected_mode(paper):
    """What the backbone expects: its own mode when it carries pretrained weights, else the
    card's normalisation (preprocessing: none on a from-scratch network -> zero-centred)."""
    m = paper.model
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


def augmented_copy(images, paper):
    """The same images through the card's augmentation as the training pipeline applies it (None
    without augmentation)."""
    compose = build_augmentation([t.model_dump() for t in paper.augmentation], paper.augmentation_strength, paper.seed)
    if compose is None:
        return None
    out = np.asarray(images).astype(np.uint8)
    augment_in_place(compose, out, 0, len(out), image_seeds([paper.seed, 0, 0], len(out)))
    return out.astype("float32")


PLOTS = {"lr_sweep": figures.lr_sweep, "activations": figures.activations, "overfit": figures.overfit}


# ---------------------------------------------------------------- the runner


def clean_config(config):
    """The card with regularisation, dropout and augmentation off, and a constant learning rate."""
    return with_values(
        config,
        {
            "training.l2": 0.0,
            "training.weight_decay": 0.0,
            "training.label_smoothing": 0.0,
            "training.schedule": "constant",
            "model.head.dropout": 0.0,
            "augmentation": [],
        },
    )


def _numpy_batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def reset(model, weights):
    """Back to the initial weights and a fresh optimizer state, keeping the compiled step."""
    model.set_weights(weights)
    for variable in model.optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


def tiny_batch(data, paper, size=OVERFIT_EXAMPLES):
    """One batch of `size` stratified training examples, no augmentation."""
    index = data.indices("train")[stratified(data.labels("train"), size, paper.seed)]
    items = data.sources.items
    tiny = pipeline.make_dataset(
        items[index] if isinstance(items, np.ndarray) else [items[i] for i in index],
        data.sources.labels[index],
        data.sources.kind,
        size=paper.model.input_size,
        num_classes=data.num_classes,
        batch_size=len(index),
        cache="none",
    )
    return _numpy_batches(tiny, 1)[0]


def run_checks(config, root, log=print):
    """All six checks on one model built from the card, trainable as in its first stage (and at
    that stage's learning rate); returns the results in checklist order.

    The sweep trains on the card's own (augmented) batches and measures on a held batch of plain
    ones. Its length follows Smith (2017), who runs the range test for several epochs: fastai's 100
    steps suit pretrained weights, whose loss answers at once; from random initialisation the loss
    first rises for tens of steps even at a rate that trains well, so it gets SWEEP_STEPS_FROM_SCRATCH."""
    paper, clean = config.paper, clean_config(config)
    keras.utils.set_random_seed(paper.seed)
    set_determinism(paper.runtime.deterministic)
    data = prepare(config, root)
    stats = data.stats(paper) if paper.model.preprocessing in ("per_channel_mean", "mean_image") else None
    model, weights_used = build_model(clean.paper, data.num_classes, stats)
    first = next(s for s in paper.training.stages if s.epochs > 0)
    pretrained = not weights_used.startswith("random")
    apply_stage(model, first.unfreeze, pretrained)  # train what the first stage trains
    initial = model.get_weights()
    plain = _numpy_batches(data.dataset("train", clean.paper, training=True), 3)
    held = tuple(np.concatenate(parts) for parts in zip(*plain))
    results = {}

    def timed(name, function, *args, **kwargs):
        start = time.perf_counter()
        results[name] = {**function(*args, **kwargs), "seconds": round(time.perf_counter() - start, 2)}
        log(format_result(results[name]))

    timed("initial_loss", check_initial_loss, model, plain, data.num_classes)
    l2_model, _ = build_model(with_values(clean, {"training.l2": L2_FACTOR}).paper, data.num_classes, stats)
    apply_stage(l2_model, first.unfreeze, pretrained)
    l2_model.set_weights(initial)
    timed("regularisation", check_regularisation, model, l2_model, plain[:2])
    del l2_model

    # one compiled model for the overfit and the sweep, reset in between: a model traces its
    # training step once (and once more for a second batch size)
    t = clean.paper.training
    lr = first.learning_rate or t.learning_rate
    model.compile(optimizer=make_optimizer(t, lr, 1, 1), loss="categorical_crossentropy", metrics=["accuracy"])
    timed("overfit", check_overfit, model, [tiny_batch(data, paper)])
    reset(model, initial)
    steps = SWEEP["steps"] if pretrained else SWEEP_STEPS_FROM_SCRATCH
    epochs = -(-steps // data.steps("train", paper.training.batch_size))
    real = data.dataset("train", paper, epochs=(0, epochs))  # the card's first training batches, augmentation included
    timed("lr_sweep", check_lr_sweep, model, real, current_lr=lr, held=held, steps=steps)
    reset(model, initial)
    timed("activations", check_activations, model, plain[0][0], fail_fraction=None if pretrained else 0.5)
    timed("preprocessing", check_preprocessing, model, held[0], expected_mode(paper), augmented_copy(held[0], paper))
    return [results[name] for name in TITLES], weights_used


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) <= 4:
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def format_result(check):
    hidden = ("regularised_weights", "channel_mean", "channel_std") if check["name"] != "preprocessing" else ()
    numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in check["numbers"].items() if k not in hidden and v is not None)
    note = f"\n      -> {check['augmentation']}" if check.get("augmentation") else ""
    return f"{check['status']:<4}  {check['title']}: {numbers}\n      -> {check['advice']}{note}"


def write_results(folder, config, checks, weights_used, seconds):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for check in checks:
        if check["name"] in PLOTS:
            path = folder / f"sanity_{check['name']}.png"
            atomic_write(path, figures.png_bytes(PLOTS[check["name"]](check)))
            check["plot"] = path.name
    statuses = {c["status"] for c in checks}
    status = "FAIL" if "FAIL" in statuses else ("WARN" if "WARN" in statuses else "PASS")
    summary = {
        "paper": config.paper_name,
        "dataset": config.dataset_name,
        "status": status,
        "weights_used": weights_used,
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checks": checks,
    }
    Sanity.model_validate(summary).write(folder / "sanity.json")
    return summary


def cli(config, args):
    start = time.perf_counter()
    root = run_root(config, args.runs_dir)
    if not args.quiet:
        print(
            f"sanity checks on {config.paper_name} x {config.dataset_name} "
            f"(regularisation, dropout and augmentation off unless stated)"
        )
    checks, weights_used = run_checks(config, root)
    summary = write_results(root, config, checks, weights_used, time.perf_counter() - start)
    print(f"sanity: {summary['status']} in {summary['seconds']:.0f}s -> {root / 'sanity.json'}")
    return verdict(checks, args.force)


def verdict(checks, force=False):
    """The exit code: 1 on a FAIL (its advice printed) unless forced, so `make all` stops."""
    failed = [c for c in checks if c["status"] == "FAIL"]
    for c in failed:
        print(f"FAIL {c['title']}: {c['advice']}")
    if failed and not force:
        print("fix the failed checks before training, or go on anyway with --force (make all FORCE=1)")
        return 1
    if failed:
        print("going on despite the failed checks (--force)")
    return 0
