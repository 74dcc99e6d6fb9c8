"""Use a saved run: `evaluate` recomputes its test metrics from model.keras and checks them against
metrics.json; `predict` classifies new images with it.

Only the saved model is used: it takes raw 0-255 RGB at its own input size and carries its own
preprocessing. It is loaded with `safe_mode=True` (no arbitrary code from the file).
"""

import glob
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from project import logs
from project.artifacts import atomic_write, read_json, require_complete
from project.config.cards import read_yaml, validate
from project.config.schema import Config
from project.data.adapters import IMAGE_EXTENSIONS
from project.errors import UserError

log = logs.get(__name__)

BATCH = 64
LOSS_TOLERANCE = 1e-5  # relative: the same model on the same images, up to float summation order


def open_run(path):
    """A complete run folder, or one clear error naming the command that makes it."""
    if not path:
        raise UserError("--run is required: a run folder, e.g. --run runs/demo__digits/tuned (make evaluate RUN=...)")
    run = Path(path)
    paper, _, dataset = run.parent.name.partition("__")
    cards = f"PAPER={paper} DATASET={dataset}" if dataset else "PAPER=... DATASET=..."
    command = f"make {'tune' if run.name.startswith('tuned') else 'train'} {cards}"
    require_complete(run, command)
    for name in ("model.keras", "metrics.json", "config.resolved.yaml"):
        if not (run / name).is_file():
            raise UserError(f"{run / name} is missing: the run is damaged; retrain it with `{command} FRESH=1`")
    return run


def load_model(run):
    import keras

    import project.model.classifier  # noqa: F401  registers the template's own layers (HeadDropout, ...)

    return keras.saving.load_model(run / "model.keras", compile=False, safe_mode=True)


def saved_config(run):
    path = run / "config.resolved.yaml"
    return validate(Config, read_yaml(path), path)


# ------------------------------------------------------------------ evaluate


def compare(stored, fresh):
    """(metric, stored, recomputed, equal) rows. Counts, accuracy and the confusion matrix must match
    exactly; loss and macro-F1 up to float rounding."""
    rows = []
    for key in ("count", "accuracy", "macro_f1", "loss", "confusion_matrix"):
        a, b = stored.get(key), fresh.get(key)
        if key in ("loss", "macro_f1") and a is not None:
            equal = math.isclose(a, b, rel_tol=LOSS_TOLERANCE, abs_tol=1e-7)
        else:
            equal = a == b
        rows.append((key, a, b, equal))
    return rows


def _show(value):
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, list):
        return f"{len(value)}x{len(value[0]) if value else 0} matrix"
    return str(value)


def evaluate_cli(args):
    from project.data.prepare import prepare
    from project.train.training import evaluate, feed_of
    from project.train.tta import tta_scores

    run = open_run(args.run)
    config = saved_config(run)
    stored = read_json(run / "metrics.json")
    data = prepare(config, run.parent, stored.get("fold"))  # a cross-validated run: its own fold
    if data.class_names != stored["class_names"]:
        raise UserError(
            f"the dataset's classes {data.class_names} differ from the run's {stored['class_names']} ({run / 'metrics.json'})"
        )
    model = load_model(run)
    subset = "val" if stored.get("test_subset") == "held_out_fold" else "test"  # split.test 0: the held-out fold
    fresh, _, _ = evaluate(model, data, config.paper, subset)
    rows = compare(stored["test"], fresh)
    if stored.get("tta"):  # evaluation.tta: the averaged views' figures too
        views = stored["tta"]["views"]
        again = tta_scores(model, data, feed_of(config.paper), views, subset)["test"]
        rows += [
            (f"tta_{key}", *rest) for key, *rest in compare(stored["tta"]["test"], again) if key != "confusion_matrix"
        ]
    where = f"held-out fold {stored['fold']}" if subset == "val" else "test subset"
    log.info(f"{run}: {where} of {run.parent / 'split.csv'}")
    log.info(f"{'metric':<18}{'metrics.json':>16}{'recomputed':>16}  equal")
    for key, a, b, equal in rows:
        log.info(f"{key:<18}{_show(a):>16}{_show(b):>16}  {'yes' if equal else 'NO'}")
    if all(equal for *_, equal in rows):
        log.info("ok: the saved model reproduces metrics.json")
        return 0
    log.warning("MISMATCH: the saved model does not reproduce metrics.json (changed data, split or model file?)")
    return 1


# ------------------------------------------------------------------ predict


def _is_image(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in path.parts)


def image_files(spec):
    """A folder (searched recursively), one file, a glob pattern, or several of these separated by spaces."""
    if not spec:
        raise UserError(
            "--images is required: a folder of images or image files, e.g. make predict RUN=... IMAGES=path/to/folder"
        )
    parts = [spec] if Path(spec).exists() else shlex.split(spec)
    files = []
    for part in parts:
        path = Path(part)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p.relative_to(path)))
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(part) and glob.glob(part):
            files += sorted(Path(p) for p in glob.glob(part) if Path(p).is_file())
        else:
            raise UserError(f"--images: {part} does not exist (give a folder, image files or a glob pattern)")
    if not files:
        raise UserError(f"--images: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {spec}")
    return files


def load_image(path, size):
    """The training pipeline's decode and resize: uint8 RGB at the model's input size, or an error text."""
    import tensorflow as tf

    from project.data.pipeline import decode, resize

    try:
        return resize(decode(tf.constant(str(path))), size).numpy(), ""
    except (tf.errors.OpError, ValueError) as error:
        message = re.sub(r"\{\{.*?\}\}\s*", "", str(error).splitlines()[0])
        return None, f"cannot decode: {message[:120].strip()}"


def predict_table(model, files, class_names):
    size = tuple(int(s) for s in model.input_shape[1:3])
    if model.output_shape[-1] != len(class_names):
        raise UserError(
            f"the model has {model.output_shape[-1]} outputs but metrics.json lists {len(class_names)} classes"
        )
    images, errors = zip(*(load_image(f, size) for f in files))
    good = [i for i, image in enumerate(images) if image is not None]
    probabilities = np.zeros((len(files), len(class_names)), dtype=np.float32)
    for start in range(0, len(good), BATCH):
        index = good[start : start + BATCH]
        batch = np.stack([images[i] for i in index]).astype("float32")
        probabilities[index] = np.asarray(model.predict_on_batch(batch))
    rows = []
    for i, file in enumerate(files):
        if errors[i]:
            rows.append({"file": str(file), "predicted": "", "probability": "", "top3": "", "error": errors[i]})
            continue
        order = np.argsort(-probabilities[i], kind="stable")[:3]
        rows.append(
            {
                "file": str(file),
                "predicted": class_names[order[0]],
                "probability": f"{probabilities[i, order[0]]:.6f}",
                "top3": "; ".join(f"{class_names[k]} ({probabilities[i, k]:.4f})" for k in order),
                "error": "",
            }
        )
    return pd.DataFrame(rows, columns=["file", "predicted", "probability", "top3", "error"])


def predict_cli(args):
    run = open_run(args.run)
    files = image_files(args.images)
    class_names = read_json(run / "metrics.json")["class_names"]
    table = predict_table(load_model(run), files, class_names)
    output = Path(args.output or "predictions.csv")
    if output.is_dir():
        output = output / "predictions.csv"
    atomic_write(output, table.to_csv(index=False))
    failed = int((table["error"] != "").sum())
    log.info(table.head(10).to_string(index=False))
    log.info(
        f"{len(table)} images -> {output}"
        + (f" ({failed} could not be decoded: see the error column)" if failed else "")
    )
    return 0
