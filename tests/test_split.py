"""The split: stratified, deterministic, written once as split.csv and reused (or refused when stale)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from project.config.schema import Split
from project.data.adapters import Sources
from project.data.split import load_or_make_split, make_split
from project.errors import UserError


def sources(counts=(60, 30, 15), names=("a", "b", "c")):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(labels)
    ids = [f"img_{i:03d}.png" for i in range(len(labels))]
    return Sources(items=[f"/data/{i}" for i in ids], labels=labels, class_names=list(names), ids=ids)


def test_split_is_stratified():
    s = sources()
    subsets = make_split(s.labels, Split(val=0.2, test=0.2, seed=0))
    assert sorted(set(subsets)) == ["test", "train", "val"]
    for subset, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = np.bincount(s.labels[subsets == subset], minlength=3)
        assert np.all(np.abs(counts - fraction * np.array([60, 30, 15])) <= 1), (subset, counts)


def test_split_is_deterministic_per_seed():
    s = sources()
    first = make_split(s.labels, Split(seed=3))
    assert np.array_equal(first, make_split(s.labels, Split(seed=3)))
    assert not np.array_equal(first, make_split(s.labels, Split(seed=4)))


def test_too_few_images_to_stratify_falls_back_with_a_warning():
    labels = np.array([0] * 10 + [1])  # class 1 has one image: cannot be in every subset
    with pytest.warns(UserWarning, match="too few images to stratify"):
        subsets = make_split(labels, Split(val=0.2, test=0.2))
    assert len(subsets) == 11 and set(subsets) <= {"train", "val", "test"}


def test_stratified_split_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_split(sources().labels, Split(val=0.2, test=0.2))


def test_provided_split_keeps_test_and_carves_val_when_missing():
    labels = np.array([0, 1] * 20)
    presplit = np.array(["train"] * 30 + ["test"] * 10)
    subsets = make_split(labels, Split(provided=True, val=0.2), presplit)
    assert np.array_equal(subsets[30:], presplit[30:])  # the test set is never touched
    assert np.sum(subsets == "val") == 6 and np.sum(subsets == "train") == 24
    assert np.bincount(labels[subsets == "val"]).tolist() == [3, 3]


def test_provided_split_keeps_val_unless_asked():
    labels = np.array([0, 1] * 20)
    presplit = np.array(["train"] * 20 + ["val"] * 10 + ["test"] * 10)
    assert np.array_equal(make_split(labels, Split(provided=True), presplit), presplit)
    carved = make_split(labels, Split(provided=True, val=0.25, val_from_train=True), presplit)
    assert np.array_equal(carved[30:], presplit[30:]) and np.sum(carved == "val") == 8


def test_provided_split_errors():
    labels = np.array([0, 1] * 5)
    with pytest.raises(UserError, match="no test subset"):
        make_split(labels, Split(provided=True), np.array(["train"] * 8 + ["val"] * 2))
    with pytest.raises(UserError, match="returned no subsets"):
        make_split(labels, Split(provided=True), None)


def test_split_csv_written_once_and_reused(tmp_path):
    s, split, path = sources(), Split(val=0.2, test=0.2, seed=1), tmp_path / "split.csv"
    subsets = load_or_make_split(path, s, split)
    table = pd.read_csv(path)
    assert list(table.columns) == ["source", "label", "subset"]
    assert table["source"].tolist() == s.ids and table["label"].tolist() == [s.class_names[i] for i in s.labels]
    assert table["subset"].tolist() == subsets.tolist()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["split"]["seed"] == 1 and sum(meta["counts"]["a"].values()) == 60

    # the saved file is the truth: edit it and the edit is what comes back
    table.loc[0, "subset"] = "test" if table.loc[0, "subset"] != "test" else "train"
    table.to_csv(path, index=False)
    reused = load_or_make_split(path, s, split)
    assert reused[0] == table.loc[0, "subset"] and reused.tolist() == table["subset"].tolist()


def test_split_csv_refused_when_the_card_split_changed(tmp_path):
    s, path = sources(), tmp_path / "split.csv"
    load_or_make_split(path, s, Split(seed=1))
    with pytest.raises(UserError) as caught:
        load_or_make_split(path, s, Split(seed=2))
    message = str(caught.value)
    assert str(path) in message and "'seed': 1" in message and "'seed': 2" in message and "move" in message


def test_split_csv_refused_when_the_data_changed(tmp_path):
    s, path = sources(), tmp_path / "split.csv"
    load_or_make_split(path, s, Split())
    s.labels[5] = (s.labels[5] + 1) % 3
    with pytest.raises(UserError, match="does not match the dataset any more"):
        load_or_make_split(path, s, Split())
    with pytest.raises(UserError, match="does not match the dataset any more"):
        load_or_make_split(path, sources(counts=(60, 30, 14)), Split())
