"""Deterministic runs: the same code, cards, data and seed on the same machine give identical
numbers, with augmentation on, in tf.data's threads and in worker processes alike."""

import json

import numpy as np
import pytest
from conftest import DIGITS_DATASET, write_card, write_tiny_paper_card

from project.commands.cli import main
from project.data import augment_pool
from project.data.augment import build_augmentation
from project.train.training import TIMING_FIELDS

AFFINE = [{"name": "Affine", "translate_percent": [-0.1, 0.1], "rotate": [-15, 15], "p": 0.9}]


def without_timing(metrics):
    """metrics.json less the fields TIMING_FIELDS names."""
    metrics = dict(metrics)
    for field in TIMING_FIELDS:
        if field.startswith("stages.*."):
            key = field.split(".")[-1]
            metrics["stages"] = [{k: v for k, v in s.items() if k != key} for s in metrics["stages"]]
        else:
            metrics.pop(field)
    return metrics


def train(folder, workers, monkeypatch, seed=None, **card):
    monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", str(workers))
    paper = write_tiny_paper_card(
        folder, augmentation=AFFINE, **{"training.stages.0.epochs": 2, "model.head.dropout": 0.3}, **card
    )
    digits = write_card(folder / "digits.yaml", DIGITS_DATASET)
    args = ["train", "--paper", str(paper), "--dataset", str(digits), "--runs-dir", str(folder / "runs"), "--quiet"]
    assert main(args + (["--set", f"seed={seed}"] if seed is not None else [])) == 0
    run = folder / "runs" / "tiny__digits" / "baseline"
    return {name: (run / name).read_bytes() for name in ("predictions.csv", "history.csv")} | {
        "metrics": json.loads((run / "metrics.json").read_text())
    }


@pytest.mark.parametrize("workers", [1, 2], ids=["threads", "processes"])
def test_two_trainings_with_augmentation_are_identical_and_another_seed_differs(tmp_path, monkeypatch, workers):
    first = train(tmp_path / "a", workers, monkeypatch)
    second = train(tmp_path / "b", workers, monkeypatch)
    assert first["predictions.csv"] == second["predictions.csv"]
    assert first["history.csv"] == second["history.csv"]
    assert without_timing(first["metrics"]) == without_timing(second["metrics"])
    assert first["metrics"]["deterministic"] is True and first["metrics"]["runtime"]["deterministic"] is True
    other = train(tmp_path / "c", workers, monkeypatch, seed=2)
    assert other["predictions.csv"] != first["predictions.csv"]


def test_augmentation_depends_on_the_key_not_on_the_number_of_workers(monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)
    compose = build_augmentation(AFFINE + [{"name": "HorizontalFlip"}], seed=0)
    results = {}
    for workers in (1, 2, 3):
        monkeypatch.setenv("PROJECT_AUGMENT_WORKERS", str(workers))
        apply = augment_pool.batch_function(compose)
        results[workers] = (apply(images, [1, 0, 0]), apply(images, [1, 0, 0]), apply(images, [1, 1, 0]))
    for same, again, other_epoch in results.values():
        assert np.array_equal(same, again) and not np.array_equal(same, other_epoch)
        assert np.array_equal(same, results[1][0])
