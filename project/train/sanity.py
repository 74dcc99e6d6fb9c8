"""`make sanity`: the course's babysitting checklist, automated, run before training.

1 initial loss ~ ln(C)          2 a large L2 raises the loss      3 overfit 20 examples
4 learning-rate sweep           5 activation statistics at init   6 preprocessed input ranges

Each check (project.train.sanity_loss_checks: 1 to 4, project.train.sanity_signal_checks: 5
and 6) is a function of a Keras model and batches (tests hand it deliberately broken models)
and returns a result dict: name, title, status PASS / WARN / FAIL, its numbers, one line of
advice. Here, `run_checks` builds the model and batches from the config; `cli` prints the
results, writes runs/<paper>__<dataset>/sanity.json and its plots, and returns 1 on a FAIL
(unless --force) so that `make all` stops before training.

What "regularisation off" means here: training.l2 0, head dropout 0, weight decay 0, label
smoothing 0, no augmentation (the card's copy used for the model of checks 1 to 5 and for their
batches; the sweep alone trains on the card's own augmented batches, and check 6 judges plain
batches and reports what augmentation does to them on a line of its own). training.l2 is an
L2 penalty in the loss on the kernel of every Conv and Dense layer, a keras.applications backbone's
included (project.model.backbones.regularize_kernels); only trainable kernels count, so check 2 sees
the backbone's when the first stage trains it. training.weight_decay, by contrast, acts in the
optimizer, not in the loss.
"""

import time
from pathlib import Path

import keras
import numpy as np

from project import figures, logs
from project.artifacts import atomic_write, run_root
from project.config.cards import with_values
from project.data import pipeline
from project.data.prepare import prepare
from project.model.classifier import apply_stage, build_model
from project.records import Sanity
from project.train.runtime import set_determinism
from project.train.sanity_loss_checks import (
    L2_FACTOR,
    OVERFIT_EXAMPLES,
    SWEEP,
    TITLES,
    check_initial_loss,
    check_lr_sweep,
    check_overfit,
    check_regularisation,
    stratified,
)
from project.train.sanity_signal_checks import augmented_copy, check_activations, check_preprocessing, expected_mode
from project.train.training import feed_of, make_optimizer, training_stats

log = logs.get(__name__)

SWEEP_STEPS_FROM_SCRATCH = 400  # ~50 per decade: a randomly initialised network needs tens of steps at a good rate

PLOTS = {"lr_sweep": figures.lr_sweep, "activations": figures.activations, "overfit": figures.overfit}


# ---------------------------------------------------------------- the runner


def clean_config(config):
    """The card with regularisation, dropout, augmentation, mixing and weight averaging off, and a
    constant learning rate (without a warmup)."""
    return with_values(
        config,
        {
            "training.l2": 0.0,
            "training.weight_decay": 0.0,
            "training.label_smoothing": 0.0,
            "training.schedule": "constant",
            "training.warmup_epochs": None,
            "training.warmup_steps": None,
            "training.mixup": None,
            "training.cutmix": None,
            "training.ema": None,
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


def tiny_batch(data, input_size, seed, size=OVERFIT_EXAMPLES):
    """One batch of `size` stratified training examples at `input_size`, no augmentation."""
    index = data.indices("train")[stratified(data.labels("train"), size, seed)]
    items = data.sources.items
    tiny = pipeline.make_dataset(
        items[index] if isinstance(items, np.ndarray) else [items[i] for i in index],
        data.sources.labels[index],
        data.sources.kind,
        size=input_size,
        num_classes=data.num_classes,
        batch_size=len(index),
        cache="none",
    )
    return _numpy_batches(tiny, 1)[0]


def run_checks(config, root):
    """All six checks on one model built from the card, trainable as in its first stage (and at
    that stage's learning rate, one rate for the whole model: the sweep needs one to sweep, so a
    stage's lr_multipliers are not applied here); returns the results in checklist order and the
    backbone's WeightsSource (pretrained weights get the shorter sweep and never FAIL on activations).

    The sweep trains on the card's own (augmented) batches and measures on a held batch of plain
    ones. Its length follows Smith (2017), who runs the range test for several epochs: fastai's 100
    steps suit pretrained weights, whose loss answers at once; from random initialisation the loss
    first rises for tens of steps even at a rate that trains well, so it gets SWEEP_STEPS_FROM_SCRATCH."""
    paper, clean = config.paper, clean_config(config)
    keras.utils.set_random_seed(paper.seed)
    set_determinism(paper.runtime.deterministic)
    data = prepare(config, root)
    stats = training_stats(data, paper)
    model, weights = build_model(clean.paper.model, data.num_classes, stats, l2=clean.paper.training.l2)
    first = next(s for s in paper.training.stages if s.epochs or s.steps)
    apply_stage(model, first.unfreeze, weights, first.train_batchnorm)  # train what the first stage trains
    initial = model.get_weights()
    plain = _numpy_batches(data.dataset("train", feed_of(clean.paper), training=True), 3)
    held = tuple(np.concatenate(parts) for parts in zip(*plain))
    results = {}

    def timed(name, function, *args, **kwargs):
        start = time.perf_counter()
        results[name] = {**function(*args, **kwargs), "seconds": round(time.perf_counter() - start, 2)}
        (log.info if results[name]["status"] == "PASS" else log.warning)(format_result(results[name]))

    timed("initial_loss", check_initial_loss, model, plain, data.num_classes)
    l2_model, _ = build_model(clean.paper.model, data.num_classes, stats, l2=L2_FACTOR)
    apply_stage(l2_model, first.unfreeze, weights, first.train_batchnorm)
    l2_model.set_weights(initial)
    timed("regularisation", check_regularisation, model, l2_model, plain[:2])
    del l2_model

    # one compiled model for the overfit and the sweep, reset in between: a model traces its
    # training step once (and once more for a second batch size)
    t = clean.paper.training
    lr = first.learning_rate or t.learning_rate
    model.compile(optimizer=make_optimizer(t, lr, 1, 1), loss="categorical_crossentropy", metrics=["accuracy"])
    timed("overfit", check_overfit, model, [tiny_batch(data, paper.model.input_size, paper.seed)])
    reset(model, initial)
    steps = SWEEP["steps"] if weights.pretrained else SWEEP_STEPS_FROM_SCRATCH
    epochs = -(-steps // data.steps("train", paper.training.batch_size))
    feed = feed_of(paper)
    real = data.dataset("train", feed, epochs=(0, epochs))  # the card's first training batches, augmentation included
    timed("lr_sweep", check_lr_sweep, model, real, current_lr=lr, held=held, steps=steps)
    reset(model, initial)
    timed("activations", check_activations, model, plain[0][0], fail_fraction=None if weights.pretrained else 0.5)
    timed(
        "preprocessing", check_preprocessing, model, held[0], expected_mode(paper.model), augmented_copy(held[0], feed)
    )
    return [results[name] for name in TITLES], weights


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
    log.info(
        f"sanity checks on {config.paper_name} x {config.dataset_name} "
        f"(regularisation, dropout and augmentation off unless stated)"
    )
    checks, weights_used = run_checks(config, root)
    summary = write_results(root, config, checks, weights_used.text, time.perf_counter() - start)
    log.info(f"sanity: {summary['status']} in {summary['seconds']:.0f}s -> {root / 'sanity.json'}")
    return verdict(checks, args.force)


def verdict(checks, force=False):
    """The exit code: 1 on a FAIL (its advice printed) unless forced, so `make all` stops."""
    failed = [c for c in checks if c["status"] == "FAIL"]
    for c in failed:
        log.warning(f"FAIL {c['title']}: {c['advice']}")
    if failed and not force:
        log.info("fix the failed checks before training, or go on anyway with --force (make all FORCE=1)")
        return 1
    if failed:
        log.warning("going on despite the failed checks (--force)")
    return 0
