"""Training: the card's stages with Keras callbacks, evaluation on val and test, and the
artifacts of a run (model.keras, history.csv, predictions.csv, metrics.json, config.resolved.yaml).

A killed run resumes: each stage keeps a resume state and a CSV log (project.train.callbacks), and a
finished stage leaves its best weights and a marker, so a rerun skips it.
"""

import contextlib
import platform
import re
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from project import logs
from project.artifacts import archive, atomic_write, is_complete, mark_complete, read_json, save_keras, write_json
from project.config.cards import recipe, resolved_yaml
from project.data.prepare import Feed, prepare
from project.errors import UserError
from project.model.backbones import WeightsSource
from project.model.classifier import apply_stage, backbone_layers, backbone_of, build_model, count_params
from project.paths import REPO_ROOT
from project.records import History, Metrics
from project.train import runtime
from project.train.averaging import ema_callbacks
from project.train.callbacks import kill_points, resume_log, resume_state, seed_states, set_seed_states, stage_callbacks
from project.train.knobs import ScheduledRate, decoupled_weight_decay, set_knobs, smoothed_crossentropy
from project.train.metrics import class_weights, classification_metrics
from project.train.monitors import diagnose, monitor_callbacks, ratio_summary
from project.train.schedules import conversion_text, plain_schedule, stage_epochs, warmup_steps
from project.train.tta import tta_scores

log = logs.get(__name__)

# metrics.json keys that measure time, the only ones two deterministic runs may differ in (stages.*: each stage's)
TIMING_FIELDS = ["wall_seconds", "train_images_per_second", "stages.*.seconds", "stages.*.images_per_second"]
RANDOM_WEIGHTS = WeightsSource("random")  # fit_stages' default: BatchNormalization trains with the layers


def make_optimizer(t, learning_rate, steps_per_epoch, epochs, knobs=None, warmup_steps=0, scale=None):
    """The card's optimizer with its learning-rate schedule (plateau is a callback instead), gradient
    clipping (clipnorm) and the weights' moving average (ema: project.train.averaging).
    With `knobs` (a tuner trial, project.train.knobs) the schedule and the weight decay read variables,
    so a later trial sets its own values without retracing. `warmup_steps`: optimizer steps of the
    warmup (project.train.schedules.warmup_steps). `scale` multiplies the whole schedule (one part's
    lr multiplier: a number, or with knobs the Knobs variable)."""
    if knobs is not None:
        lr = (
            float(learning_rate)
            if t.schedule in ("constant", "plateau")
            else ScheduledRate(t.schedule, knobs, t.step_every, t.decay, scale)
        )
        wd = knobs.weight_decay
    else:
        base = learning_rate * scale if scale is not None else learning_rate
        lr = plain_schedule(t, base, steps_per_epoch, epochs, warmup_steps)
        wd = decoupled_weight_decay(t) if t.optimizer == "adamw" else t.weight_decay or None
    options = {"weight_decay": wd, "clipnorm": t.clipnorm}
    if t.ema is not None:
        options.update(use_ema=True, ema_momentum=t.ema)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, **options)
    if t.optimizer in ("momentum", "nesterov"):
        return keras.optimizers.SGD(lr, momentum=t.momentum, nesterov=t.optimizer == "nesterov", **options)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=0.9, momentum=t.momentum, **options)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, **options)
    return keras.optimizers.Adam(lr, **options)


def stage_optimizer(model, t, learning_rate, steps_per_epoch, epochs, knobs=None, multipliers=None, warmup_steps=0):
    """The optimizer of a stage: the card's, or with `multipliers` (the stage's lr_multipliers)
    Keras' MultiOptimizer over two of them, "backbone" for the variables of the backbone layer and
    "head" for the rest, each at the stage's schedule times its factor and with its own state. So the
    rates truly differ (scaling gradients would do nothing under Adam, which divides the scale away),
    decoupled weight decay follows each part's rate, and fit, BackupAndRestore (the inner optimizers'
    variables are the MultiOptimizer's), ReduceLROnPlateau and TensorBoard handle it as Keras does."""
    if multipliers is None:
        return make_optimizer(t, learning_rate, steps_per_epoch, epochs, knobs, warmup_steps)
    parts = {}
    for part in ("backbone", "head"):
        factor = getattr(multipliers, part)
        scale = factor if knobs is None else getattr(knobs, f"lr_{part}")
        parts[part] = make_optimizer(t, learning_rate, steps_per_epoch, epochs, knobs, warmup_steps, scale)
        parts[part].name, parts[part].lr_multiplier = part, factor  # lr_multiplier: read by the monitors
    backbone = {id(v) for v in backbone_of(model).weights}
    # the head's variables by exact path (escaped: OptimizerMap reads keys as patterns), the rest default
    head = {re.escape(v.path): parts["head"] for v in model.weights if id(v) not in backbone}
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(parts["backbone"], head))


def compile_model(
    model, paper, learning_rate, steps_per_epoch, epochs, jit_compile=False, knobs=None, stage=None, warmup_steps=0
):
    """Compile for one `stage` (its lr_multipliers; None: one optimizer for everything)."""
    t = paper.training
    multipliers = stage.lr_multipliers if stage is not None else None
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing)
        if knobs is None
        else smoothed_crossentropy(knobs)
    )
    model.compile(
        optimizer=stage_optimizer(model, t, learning_rate, steps_per_epoch, epochs, knobs, multipliers, warmup_steps),
        loss=loss,
        # macro-F1 over the epoch (argmax predictions): what an imbalanced dataset is better judged by
        metrics=["accuracy", keras.metrics.F1Score(average="macro", name="macro_f1")],
        jit_compile=jit_compile,
    )
    # Built now, not inside the first traced train step (Keras' default without a strategy): variables
    # created while tracing leave two cond functions each in TensorFlow's global function library,
    # never freed (~640 per MobileNetV2 model), and make that trace slower.
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    if knobs is not None:
        set_knobs(model, knobs, t, learning_rate, steps_per_epoch, epochs, multipliers, warmup_steps)


def feed_of(paper):
    """What the card says about feeding images (project.data.prepare.Feed)."""
    return Feed(
        size=tuple(paper.model.input_size),
        batch_size=paper.training.batch_size,
        seed=paper.seed,
        augmentation=tuple(t.model_dump() for t in paper.augmentation),
        strength=paper.augmentation_strength,
        cache=paper.runtime.cache,
        mixup=paper.training.mixup,
        cutmix=paper.training.cutmix,
    )


def training_stats(data, paper):
    """Training-set statistics when the card's preprocessing subtracts a mean, else None."""
    return (
        data.stats(paper.model.input_size) if paper.model.preprocessing in ("per_channel_mean", "mean_image") else None
    )


@contextlib.contextmanager
def out_of_memory_advice(batch_size):
    """An accelerator out of memory becomes one line naming the batch size and a smaller one."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.ResourceExhaustedError:
        raise UserError(
            f"out of memory while training with batch size {batch_size}: try "
            f"--set training.batch_size={max(1, batch_size // 2)} (or a smaller input size / backbone); "
            f"the run resumes from its last completed epoch"
        ) from None


def fit_stages(
    model,
    paper,
    data,
    folder,
    *,
    weights=RANDOM_WEIGHTS,
    epochs=None,
    batch_size=None,
    extra_callbacks=(),
    verbose=1,
    jit_compile=False,
    trial=False,
    compile_stage=compile_model,
):
    """Train every stage of the card in turn; after each, keep its best-on-val weights. `weights`
    (the backbone's WeightsSource) decides whether BatchNormalization stays frozen (apply_stage).
    trial=True (a tuner trial): no resume state, and the last stage's final weights stay in the
    model, unchecked (only the trial's logs are kept). compile_stage(model, paper,
    learning_rate, steps_per_epoch, epochs, jit_compile, stage=, warmup_steps=) prepares each stage (a tuner
    trial reuses a compiled model: project.tune.reuse). A stage in steps runs them as whole epochs
    at this batch size (project.train.schedules); `epochs` replaces every stage's length.

    Returns one info dict per stage (epochs run, seconds, images/s, parameter counts).
    """
    folder = Path(folder)
    for sub in ("checkpoints", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    t = paper.training
    batch_size = batch_size or t.batch_size
    feed = feed_of(paper)
    val = data.dataset("val", feed, batch_size=batch_size)
    steps = data.steps("train", batch_size)
    per_class = class_weights(data.labels("train"), data.num_classes) if t.class_weight == "auto" else None
    infos = []
    lengths = {s.name: stage_epochs(t, s, steps, batch_size) if epochs is None else epochs for s in t.stages}
    stages = [s for s in t.stages if lengths[s.name]]
    # every stage's warmup checked before the first one trains
    warmups = {s.name: warmup_steps(t, s, steps, batch_size, lengths[s.name]) for s in stages}
    offset = 0  # epochs are numbered across stages: each stage draws its own shuffles and augmentations
    for stage in stages:
        stage_length = lengths[stage.name]
        first_epoch, offset = offset, offset + stage_length
        last = stage is stages[-1]
        unfrozen = apply_stage(model, stage.unfreeze, weights, stage.train_batchnorm)
        params = count_params(model)
        best = folder / "checkpoints" / f"{stage.name}.weights.h5"
        done = folder / "checkpoints" / f"{stage.name}.done.json"
        if done.exists():  # finished before an interruption: reuse it
            if best.exists():  # a trial's last stage has none: only its logs count
                model.load_weights(best)
            info = read_json(done)  # json, not pandas: exact floats and plain ints
            set_seed_states(model, info.pop("seed_states", None))  # where the stage left dropout's draws
            infos.append(info)
            continue
        compile_stage(
            model,
            paper,
            stage.learning_rate or t.learning_rate,
            steps,
            stage_length,
            jit_compile,
            stage=stage,
            warmup_steps=warmups[stage.name],
        )
        if stage.steps is not None and epochs is None:
            log.info(f"[{stage.name}] {conversion_text(t, stage, steps, batch_size)}")
        state = None if trial else resume_state(folder, stage.name)
        resumed = state["epoch"] if state else 0
        resume_log(folder, stage.name, resumed)
        train = data.dataset(
            "train", feed, batch_size=batch_size, epochs=(first_epoch + resumed, first_epoch + stage_length)
        )
        start = time.perf_counter()
        with out_of_memory_advice(batch_size):
            history = model.fit(
                train,
                validation_data=val,
                epochs=stage_length,
                steps_per_epoch=steps,
                class_weight=per_class,
                shuffle=False,
                # monitors first: they add update_ratio to the epoch logs before CSVLogger writes them
                callbacks=kill_points(trial)
                + monitor_callbacks(stage.learning_rate or t.learning_rate)
                + ema_callbacks(model)
                + stage_callbacks(paper, folder, stage.name, not (trial and last), not trial, state)
                + list(extra_callbacks),
                verbose=verbose,
            )
        seconds = time.perf_counter() - start
        ran = len(history.epoch)
        if best.exists() and not (trial and last):
            model.load_weights(best)
        info = {
            "stage": stage.name,
            "epochs": resumed + ran,  # before and after an interruption: as if never interrupted
            "unfrozen_layers": unfrozen,
            "frozen_layers": len(backbone_layers(model)) - unfrozen,
            "seconds": round(seconds, 3),
            "images_per_second": round(len(data.indices("train")) * ran / seconds, 1) if ran else 0.0,
            "learning_rate": stage.learning_rate or t.learning_rate,
            **{f"params_{k}": v for k, v in params.items()},
            "planned_epochs": stage_length,
            "batch_size": batch_size,
            "steps": stage.steps,
            "steps_batch_size": t.steps_batch_size if stage.steps is not None else None,
            "warmup_steps": warmups[stage.name],
        }
        write_json(done, {**info, "seed_states": seed_states(model)})
        infos.append(info)
        log.info(
            f"[{stage.name}] {ran} epochs, {seconds:.1f}s, {info['images_per_second']:.0f} images/s, "
            f"val {history.history.get('val_accuracy', [float('nan')])[-1]:.4f} (trainable {params['trainable']:,})"
        )
    return infos


def combined_history(folder, stages):
    """history.csv: every stage's epochs, numbered continuously."""
    frames = []
    for stage in stages:
        log = Path(folder) / "logs" / f"history_{stage}.csv"
        if log.exists() and log.stat().st_size:
            frame = pd.read_csv(log)
            frame.insert(0, "stage", stage)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["stage", "epoch"])
    table = pd.concat(frames, ignore_index=True)
    table.insert(1, "global_epoch", np.arange(1, len(table) + 1))
    return table


def predict(model, data, paper, subset):
    """Probabilities of the images of `subset` the pipeline could decode and, row for row, their
    positions in the subset (`index`; data.skipped names the others): a file that fails to decode
    after the data check never shifts a row onto another image. model.predict, not a loop of
    predict_on_batch, so that it also works under a distribution strategy; the index pass first
    fills the cache that model.predict then reads."""
    dataset = data.dataset(subset, feed_of(paper), training=False, with_index=True)
    index = np.concatenate([np.zeros(0, np.int64), *dataset.map(lambda x, y, i: i).as_numpy_iterator()])
    if not len(index):
        raise UserError(f"no {subset} image could be decoded: run `make check-data` to see why")
    probabilities = np.asarray(model.predict(dataset.map(lambda x, y, i: x), verbose=0))
    if len(probabilities) != len(index):
        raise UserError(f"{subset} images changed while evaluated ({len(index)} decoded, then {len(probabilities)})")
    return probabilities, index


def evaluate(model, data, paper, subset):
    """Scores of `subset` over the images evaluated, their probabilities, and the rows they are of in
    the subset (index: data.ids(subset)[index] are their sources; the others were skipped)."""
    probabilities, index = predict(model, data, paper, subset)
    labels = data.labels(subset)[index]
    return classification_metrics(labels, probabilities, data.class_names), probabilities, index


def predictions_table(data, subset, probabilities, index):
    """One row per image evaluated, its source and true class looked up by its position in the subset
    (`index`); probabilities at float32 precision, not rounded: rounding can tie two classes and show a
    prediction its own row's probabilities contradict."""
    names = np.array(data.class_names)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    table = pd.DataFrame(
        {
            "source": np.asarray(data.ids(subset), dtype=object)[index],
            "true": names[data.labels(subset)[index]],
            "predicted": names[probabilities.argmax(axis=1)],
            "confidence": probabilities.max(axis=1),
        }
    )
    for i, name in enumerate(data.class_names):
        table[f"p_{name}"] = probabilities[:, i]
    return table


def versions():
    import albumentations
    import keras_tuner
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "albumentations": albumentations.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def git_commit():
    """The code's commit (with '+dirty' for uncommitted changes), or None outside a git checkout."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "project"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"type": "GPU", "name": details.get("device_name", gpus[0].name), "count": len(gpus)}
    return {"type": "CPU", "name": platform.processor() or platform.machine(), "count": 1}


def prepare_run_folder(folder, config_text, fresh=False):
    """Resume the same recipe; move a different (or --fresh) previous run aside. Descriptive card
    fields (citation, caveats, search, ...) and card paths may change without a retrain."""
    folder = Path(folder)
    saved = folder / "config.resolved.yaml"
    same = saved.exists() and recipe(yaml.safe_load(saved.read_text())) == recipe(yaml.safe_load(config_text))
    if folder.exists() and (fresh or not same):
        moved = archive(folder)
        log.info(f"previous run moved to {moved}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, config_text)


def train_run(config, root, name="baseline", seed=None, fresh=False, verbose=1, extra_callbacks=(), fold=None):
    """Train, evaluate once on test, write every artifact to root/name, then the COMPLETE marker.
    fold: the cross-validation fold whose val set this run validates on (split.folds; default 1).
    Without a test subset (split.test 0) the `test` figures are the held-out fold's, which also
    chose the checkpoint: metrics.json says so (test_subset: held_out_fold)."""
    paper = config.paper
    seed = paper.seed if seed is None else seed
    folder = Path(root) / name
    prepare_run_folder(folder, resolved_yaml(config), fresh)
    if is_complete(folder):
        log.info(f"{folder} is complete for this configuration (rerun with --fresh to train again)")
        return read_json(folder / "metrics.json")
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    data = prepare(config, root, fold)
    stats = training_stats(data, paper)
    r = paper.runtime
    settings, scope = runtime.apply(r.mixed_precision, r.jit_compile, r.distribution, r.deterministic)
    with scope:
        model, weights = build_model(paper.model, data.num_classes, stats, l2=paper.training.l2)
        weights_used = weights.text  # what metrics.json shows; what training does depends on weights.kind
        stages = fit_stages(
            model,
            paper,
            data,
            folder,
            weights=weights,
            verbose=verbose,
            extra_callbacks=extra_callbacks,
            batch_size=paper.training.batch_size * settings["replicas"],
            jit_compile=settings["jit_compile"],
        )
    val, val_probabilities, val_index = evaluate(model, data, paper, "val")
    scored = "test" if config.dataset.split.has_test else "val"  # no test subset (folds, test: 0): the held-out fold
    test, probabilities, index = (
        evaluate(model, data, paper, "test") if scored == "test" else (val, val_probabilities, val_index)
    )
    skipped = {"val": data.skipped("val", val_index), "test": data.skipped(scored, index)}
    tta = tta_scores(model, data, feed_of(paper), paper.evaluation.tta, scored)  # None without evaluation.tta
    wall = time.perf_counter() - start
    save_keras(folder / "model.keras", model.save)
    history = combined_history(folder, [s["stage"] for s in stages])
    History.from_frame(history).write(folder / "history.csv")
    atomic_write(folder / "predictions.csv", predictions_table(data, scored, probabilities, index).to_csv(index=False))
    # val's too: the report fits a calibration temperature on val only, never on test
    atomic_write(
        folder / "predictions_val.csv",
        predictions_table(data, "val", val_probabilities, val_index).to_csv(index=False),
    )
    data.record_skipped(name, skipped)
    train_seconds = sum(s["seconds"] for s in stages)
    metrics = {
        "run": name,
        "paper": config.paper_name,
        "dataset": config.dataset_name,
        "test_accuracy": test["accuracy"],
        "test_tta_accuracy": tta["test"]["accuracy"] if tta else None,
        "test_loss": test["loss"],
        "test_macro_f1": test["macro_f1"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "val_macro_f1": val["macro_f1"],
        "test": test,
        "val": {k: v for k, v in val.items() if k not in ("per_class", "confusion_matrix")},
        "per_class": test["per_class"],
        "confusion_matrix": test["confusion_matrix"],
        "tta": tta,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "counts": data.counts(),
        "skipped_images": skipped,
        "stages": stages,
        "weights_used": weights_used,
        "weights_kind": weights.kind,
        "seed": seed,
        "split_seed": config.dataset.split.seed,
        "fold": data.fold,
        "folds": config.dataset.split.folds,
        "test_subset": "test" if scored == "test" else "held_out_fold",
        "wall_seconds": round(wall, 2),
        "train_images_per_second": round(sum(s["images_per_second"] * s["seconds"] for s in stages) / train_seconds, 1)
        if train_seconds
        else 0.0,
        "device": device(),
        "versions": versions(),
        "runtime": settings,
        "deterministic": settings["deterministic"],
        "machine": runtime.fingerprint(),
        "git_commit": git_commit(),
        "timing_fields": TIMING_FIELDS,
    }
    metrics["update_ratio"] = ratio_summary(history.get("update_ratio_at_peak_lr", []))
    metrics["diagnosis"] = diagnose(history, target=paper.target_accuracy, frozen_layers=stages[-1]["frozen_layers"])
    Metrics.model_validate(metrics).write(folder / "metrics.json")
    mark_complete(folder)
    log.info(
        f"[{name}] test accuracy {test['accuracy']:.4f}"
        + (f" (with TTA {tta['test']['accuracy']:.4f})" if tta else "")
        + f" (val {val['accuracy']:.4f}), {wall:.0f}s -> {folder}"
    )
    for finding in metrics["diagnosis"]["findings"]:
        log.info(f"[{name}] diagnosis: {finding['problem']} ({finding['evidence']}): {finding['advice']}")
    return metrics


def seed_runs(name, seed, count):
    """(folder name, seed) for `count` seeds: the first keeps the plain name."""
    return [(name if k == 0 else f"{name}-seed{seed + k}", seed + k) for k in range(count)]


def fold_runs(name, seed, count, folds):
    """(folder name, seed, fold) of every run: `count` seeds (seed_runs), each on every fold 1..`folds`
    as <name>-fold<k> (baseline-fold1, baseline-seed43-fold1, ...); without folds (None) fold is None."""
    return [
        (f"{run}-fold{fold}" if folds else run, run_seed, fold)
        for run, run_seed in seed_runs(name, seed, count)
        for fold in (range(1, folds + 1) if folds else [None])
    ]


def cross_validation_line(name, results):
    """One line over a cross-validated group of runs: mean ± std of what each fold's run measured."""
    scored = results[0].get("test_subset", "test")
    label = "held-out-fold accuracy (chose the checkpoints too)" if scored == "held_out_fold" else "test accuracy"
    values = np.array([r["test_accuracy"] for r in results])
    return (
        f"[{name}] cross-validated over {len(results)} runs: {label} {values.mean():.4f} ± {values.std(ddof=1):.4f} "
        f"({', '.join(f'{v:.4f}' for v in values)})"
    )


def cli(config, args):
    from project.artifacts import run_root

    root = run_root(config, args.runs_dir)
    folds = config.dataset.split.folds
    results = [
        train_run(config, root, name, seed=seed, fresh=args.fresh, verbose=2 if args.quiet else 1, fold=fold)
        for name, seed, fold in fold_runs("baseline", config.paper.seed, args.seeds, folds)
    ]
    if folds:
        log.info(cross_validation_line("baseline", results))
