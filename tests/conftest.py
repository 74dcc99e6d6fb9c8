"""Shared fixtures: tiny cards, generated image folders and an environment that keeps runs in tmp_path.

Everything here is real (files, TensorFlow, scikit-learn); the cards are tiny so that a training
run takes seconds on two CPU cores.

    def test_x(tiny_paper_card, digits_card, tmp_path):
        config = load_config(tiny_paper_card(tmp_path, **{"training.batch_size": 16}), digits_card)
"""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# No network, deterministically: downloads go through a proxy on a closed local port and are refused
# at once (urllib, and so keras.utils.get_file, honour these variables).
OFFLINE = {
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
}

# A scratch CNN with one block of 8 filters at 16x16: one epoch on digits takes a few seconds.
TINY_PAPER = {
    "citation": {"title": "A tiny test CNN", "authors": ["Test Author"], "venue": "pytest", "year": 2020},
    "reported": [{"dataset": "digits", "metric": "accuracy", "value": 0.9, "where": "Table 1"}],
    "seed": 1,
    "model": {
        "backbone": "scratch",
        "weights": "none",
        "input_size": 16,
        "scratch": {"blocks": [8], "convs_per_block": 1, "normalization": "batch"},
        "head": {"pooling": "avg", "hidden": [], "dropout": 0.0},
    },
    "training": {
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 32,
        "stages": [{"name": "train", "epochs": 1, "unfreeze": "all"}],
    },
    "augmentation": [],
    "assumed": ["training.batch_size"],
}

# The search section of a tiny card: one coarse and one fine trial of one epoch over the learning rate.
TINY_SEARCH = {
    "seed": 3,
    "top_k": 1,
    "coarse": {"trials": 1, "epochs": 1},
    "fine": {"trials": 1, "epochs": 1},
    "space": {"learning_rate": {"min": 0.01, "max": 0.1, "sampling": "log"}},
}

DIGITS_DATASET = {
    "description": "scikit-learn digits (test copy)",
    "adapter": "digits",
    "options": {},
    "split": {"val": 0.15, "test": 0.2, "seed": 0},
}


def _merge(base, overrides):
    """Nested dicts merge; a dotted key ("training.batch_size") sets one value; anything else replaces."""
    from project.config.cards import set_dotted

    data = copy.deepcopy(base)
    for key, value in overrides.items():
        if "." in key:
            set_dotted(data, key, copy.deepcopy(value))
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = _merge(data[key], value)
        else:
            data[key] = copy.deepcopy(value)
    return data


def write_card(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_tiny_paper_card(folder, name="tiny", **overrides):
    """Write `folder/<name>.yaml`, the tiny scratch-CNN paper card with `overrides` applied:
    nested sections merge (model={"input_size": 24}), dotted keys set one value
    (**{"training.stages.0.epochs": 2}), other keys replace."""
    return write_card(Path(folder) / f"{name}.yaml", _merge(TINY_PAPER, overrides))


def write_dataset_card(folder, name="data", **card):
    return write_card(Path(folder) / f"{name}.yaml", card)


def make_image_folder(root, classes=None, size=(12, 10), mode="RGB", fmt="png", presplit=None, seed=0):
    """Generate a folder dataset with Pillow: root/<class>/<i>.<fmt> (or root/<subset>/<class>/...
    when `presplit` maps subset -> images per class). Each class has its own base colour plus noise,
    so a model can learn it. Returns root."""
    from PIL import Image

    classes = classes or {"cat": 6, "dog": 6}
    rng = np.random.default_rng(seed)
    width, height = size
    layouts = {s: {c: n for c in classes} for s, n in presplit.items()} if presplit else {None: classes}
    for subset, counts in layouts.items():
        for k, (name, count) in enumerate(counts.items()):
            folder = Path(root) / (subset or "") / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([40 + 80 * k, 200 - 60 * k, 100], dtype=float) % 256
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").convert(mode).save(folder / f"{name}_{i}.{fmt}")
    return Path(root)


@pytest.fixture
def tiny_paper_card():
    """A function (folder, name="tiny", **overrides) -> path of the written tiny paper card."""
    return write_tiny_paper_card


@pytest.fixture
def digits_card(tmp_path):
    """Path of a digits dataset card (val 0.15, test 0.2, seed 0); its name is `digits`."""
    return write_dataset_card(tmp_path / "cards", "digits", **DIGITS_DATASET)


@pytest.fixture
def image_folder():
    """make_image_folder(root, classes={"cat": 6, "dog": 6}, size=(w, h), mode="RGB", fmt="png", presplit=None)."""
    return make_image_folder


@pytest.fixture
def tiny_config(tmp_path, digits_card):
    """The tiny paper card on digits, as a validated Config."""
    from project.config.cards import load_config

    return load_config(str(write_tiny_paper_card(tmp_path / "cards")), str(digits_card))


class ProjectEnv:
    """Runs and reports under tmp_path; `run(...)` calls `python -m project` in a subprocess."""

    def __init__(self, tmp_path):
        self.runs = tmp_path / "runs"
        self.reports = tmp_path / "reports"
        self.env = dict(os.environ)
        self.env.update(
            {
                "PROJECT_RUNS": str(self.runs),
                "PYTHONPATH": str(ROOT),
                "NO_ALBUMENTATIONS_UPDATE": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for name in ("PAPER", "DATASET", "SEEDS"):
            self.env.pop(name, None)

    def run(self, *args, timeout=600, env=None, cwd=None):
        return subprocess.run(
            [sys.executable, "-m", "project", *map(str, args)],
            cwd=cwd or ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code, timeout=600, env=None):
        """Run Python code in a fresh interpreter (e.g. with its own KERAS_HOME)."""
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def project_env(tmp_path, monkeypatch):
    """PROJECT_RUNS points to tmp_path/runs (in this process and in subprocesses)."""
    env = ProjectEnv(tmp_path)
    monkeypatch.setenv("PROJECT_RUNS", str(env.runs))
    return env


# What needs a fresh interpreter with an empty KERAS_HOME and no network (Keras reads KERAS_HOME once,
# at import): the keras dataset adapter and ImageNet weights. One interpreter for both, because
# importing TensorFlow is most of the cost.
OFFLINE_SCRIPT = """
import json, os, time
import numpy as np
from project.data.adapters import load_sources
from project.errors import UserError
from project.model.classifier import backbone_of, build_model
from project.config.schema import Paper

out = {}
start = time.time()
try:
    load_sources("keras", {"name": "mnist"}, None)
except UserError as error:
    out["dataset_error"] = str(error)
out["dataset_seconds"] = time.time() - start

BASE = json.loads(os.environ["TINY_PAPER_JSON"])
FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"


def card(**model):
    data = dict(BASE)
    data["model"] = {**BASE["model"], "backbone": "MobileNetV2", "width": 0.35, "input_size": 96, **model}
    return Paper.model_validate(data).model


def same(model, reference):
    pairs = list(zip(backbone_of(model).get_weights(), reference.get_weights()))
    return len(pairs) == len(reference.get_weights()) and all(np.array_equal(a, b) for a, b in pairs)


start = time.time()
try:
    build_model(card(weights="imagenet"), 3)
except UserError as error:
    out["weights_error"] = str(error)
out["weights_seconds"] = time.time() - start
model, out["fallback"] = build_model(card(weights="imagenet", weights_fallback="random"), 3)

# weights no initialiser produces, saved under the exact name keras.applications looks for
reference = backbone_of(model)
rng = np.random.default_rng(7)
reference.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in reference.get_weights()])
reference.save(os.path.join(os.environ["KERAS_HOME"], "models", FILE))  # the legacy HDF5 layout of the published files
model, out["imagenet"] = build_model(card(weights="imagenet"), 3)
out["imagenet_equal"] = same(model, reference)
mine = os.path.join(os.environ["KERAS_HOME"], "mine.weights.h5")
reference.save_weights(mine)
model, out["file"] = build_model(card(weights=mine), 3)
out["file_equal"] = same(model, reference)
print("RESULT " + json.dumps(out, default=str))  # a WeightsSource as its display text
"""


@pytest.fixture(scope="session")
def offline_keras(tmp_path_factory):
    """OFFLINE_SCRIPT run once with an empty KERAS_HOME and every download refused:
    {"home": KERAS_HOME, "out": its results, "stdout": ..., "stderr": ..., "seconds": wall time}."""
    home = tmp_path_factory.mktemp("keras_home")
    env = ProjectEnv(tmp_path_factory.mktemp("offline"))
    start = time.monotonic()
    result = env.python(
        OFFLINE_SCRIPT, timeout=600, env={"KERAS_HOME": str(home), "TINY_PAPER_JSON": json.dumps(TINY_PAPER), **OFFLINE}
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {"home": home, "out": out, "stdout": result.stdout, "stderr": result.stderr, "seconds": seconds}
