"""Checks 1 to 4 of `make sanity` (project.train.sanity), what the loss does: it starts at ln(C),
a large L2 raises it, 20 examples can be fitted to near zero, and a learning-rate sweep finds
where it falls. Each check is a function of a Keras model and batches (tests hand it deliberately
broken models) and returns a result dict: name, title, status PASS / WARN / FAIL, its numbers,
one line of advice.
"""

import contextlib
import itertools
import math

import keras
import numpy as np

from project.train.sweep import lr_sweep, read_sweep

INITIAL_LOSS_TOLERANCE = 0.25  # |loss / ln(C) - 1| above this: FAIL
L2_FACTOR = 1.0  # "large": the penalty of a freshly initialised head alone is several times ln(C)
OVERFIT_EXAMPLES, OVERFIT_EPOCHS, OVERFIT_LOSS = 20, 200, 0.05
SWEEP = dict(min_lr=1e-7, max_lr=10.0, steps=100)

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


def onehot_cross_entropy(y, probabilities):
    return float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(y, probabilities))))


# ---------------------------------------------------------------- 1 initial loss


def check_initial_loss(model, batches, num_classes, tolerance=INITIAL_LOSS_TOLERANCE):
    """Mean data loss (no regularisation term) on a few batches before any update, in training
    mode as the first step sees it, against ln(C): a fresh classifier should be unsure."""
    losses, sums = [], []
    with state_kept(model):
        for x, y in batches:
            p = keras.ops.convert_to_numpy(model(x, training=True))
            losses.append(onehot_cross_entropy(y, p))
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
        onehot_cross_entropy(y, model(x, training=False))
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
        in_backbone = len(backbone_kernels(model_l2, regularised))
        return result(
            "regularisation",
            "PASS",
            numbers,
            f"L2 {l2:g} raises the loss by {increase:.3g}; it acts on the {len(regularised)} trainable kernels "
            f"({in_backbone} of them in the backbone)",
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


def backbone_kernels(model, paths):
    """The `paths` that are variables of the model's backbone layer (none without one)."""
    layers = {layer.name: layer for layer in model.layers}
    inside = {v.path for v in layers["backbone"].trainable_weights} if "backbone" in layers else set()
    return [path for path in paths if path in inside]


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
