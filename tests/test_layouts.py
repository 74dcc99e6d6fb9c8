"""The layouts of real datasets: subset folders under other names (folder `subsets`), one manifest
per subset (csv `manifests`), and the card's `label_map` (rename, merge, drop, grade numbers).
Real files in tmp_path; no TensorFlow."""

from argparse import Namespace

import numpy as np
import pandas as pd
import pytest
from conftest import make_image_folder, write_card, write_tiny_paper_card
from PIL import Image

from project.commands import new_dataset
from project.commands.cli import main
from project.config import cards
from project.config.schema import Dataset
from project.data.adapters import load_sources
from project.data.split import make_split
from project.errors import UserError

INTEL = {"train": "seg_train/seg_train", "test": "seg_test/seg_test"}


def intel_like(root, per_class=(8, 3)):
    """Kaggle's Intel Image Classification as it unzips: seg_train/seg_train/<class>/,
    seg_test/seg_test/<class>/ and unlabelled images in seg_pred/seg_pred/."""
    for seed, (subset, count) in enumerate(zip(INTEL, per_class)):
        make_image_folder(root / INTEL[subset], classes={"forest": count, "sea": count, "street": count}, seed=seed)
    (root / "seg_pred" / "seg_pred").mkdir(parents=True)
    for n in range(5):
        Image.new("RGB", (10, 10), (n, 0, 0)).save(root / "seg_pred" / "seg_pred" / f"{n}.jpg")
    return root


def error_of(*args, **kwargs):
    with pytest.raises(UserError) as caught:
        load_sources(*args, **kwargs)
    return str(caught.value)


def card_error(data):
    with pytest.raises(UserError) as caught:
        cards.validate(Dataset, data, "card.yaml")
    return str(caught.value)


def check_data(tmp_path, dataset):
    """`check-data` in this process (no TensorFlow): exit status and the data_issues.csv it wrote."""
    paper = write_tiny_paper_card(tmp_path / "cards")
    card = write_card(tmp_path / "cards" / "data.yaml", dataset)
    status = main(["check-data", "--paper", str(paper), "--dataset", str(card), "--runs-dir", str(tmp_path / "runs")])
    issues = tmp_path / "runs" / "tiny__data" / "data_issues.csv"
    return status, pd.read_csv(issues) if issues.exists() else None


# ------------------------------------------------------------------ folder: subsets


def test_folder_subsets_read_intel_like_seg_train_and_seg_test(tmp_path):
    intel_like(tmp_path / "intel")
    sources = load_sources("folder", {"path": "intel", "subsets": INTEL}, tmp_path)
    assert sources.class_names == ["forest", "sea", "street"]
    assert {s: int((sources.subsets == s).sum()) for s in ("train", "test")} == {"train": 24, "test": 9}
    assert sources.ids[0] == "seg_train/seg_train/forest/forest_0.png"
    assert not any("seg_pred" in item for item in sources.items)
    split = Dataset.model_validate({"adapter": "folder", "split": {"provided": True, "val": 0.25}}).split
    subsets = make_split(sources.labels, split, sources.subsets)
    assert (subsets == "test").sum() == 9 and (subsets == "val").sum() == 6, "test kept, val carved from train"
    # without subsets the same tree would be read as three classes named after the subset folders
    assert load_sources("folder", {"path": "intel"}, tmp_path).class_names == ["seg_pred", "seg_test", "seg_train"]


def test_the_data_check_lists_the_folder_it_does_not_read(tmp_path):
    intel_like(tmp_path / "intel")
    card = {"adapter": "folder", "options": {"path": str(tmp_path / "intel"), "subsets": INTEL}, "split": "provided"}
    status, issues = check_data(tmp_path, card)
    assert status == 0
    assert issues[["source", "reason", "action"]].values.tolist() == [["seg_pred/", "folder_not_read", "warning"]]


def test_folder_subsets_errors_name_the_option_and_what_exists(tmp_path):
    intel_like(tmp_path / "intel")
    message = error_of("folder", {"path": "intel", "subsets": {"train": "seg_train/seg_trian"}}, tmp_path)
    assert "subsets.train" in message and "'seg_train/seg_trian'" in message
    assert "folders there: seg_train/seg_train" in message
    message = error_of("folder", {"path": "intel", "subsets": {"train": "seg_tarin", "test": "seg_test"}}, tmp_path)
    assert "folders there: seg_pred, seg_test, seg_train" in message
    message = error_of("folder", {"path": "intel", "subsets": {"training": "seg_train"}}, tmp_path)
    assert "unknown subset 'training'; accepted: train, val, test" in message
    message = error_of(
        "folder", {"path": "intel", "subsets": {"train": "seg_train", "test": "seg_train/seg_train"}}, tmp_path
    )
    assert "train and test overlap" in message
    assert "inside" in error_of("folder", {"path": "intel", "subsets": {"train": "../intel"}}, tmp_path)


def test_subset_options_are_checked_with_the_card(tmp_path):
    base = {"adapter": "folder", "options": {"path": "x"}}
    message = card_error({**base, "options": {"path": "x", "subsets": {"train": "a", "holdout": "b"}}})
    assert message == "card.yaml: options: subsets: unknown subset 'holdout'; accepted: train, val, test"
    assert "needs a train entry" in card_error({**base, "options": {"path": "x", "subsets": {"test": "b"}}})
    assert "give a mapping of subset to path" in card_error({**base, "options": {"path": "x", "subsets": "a"}})
    assert "subsets.test: give a path" in card_error(
        {**base, "options": {"path": "x", "subsets": {"train": "a", "test": 3}}}
    )
    message = card_error({"adapter": "csv", "options": {"manifest": "a.csv", "manifests": {"train": "a.csv"}}})
    assert "options: manifest and manifests are both set" in message
    message = card_error({"adapter": "csv", "options": {"manifests": {"train": "a.csv"}, "split_column": "s"}})
    assert "manifests and split_column are both set" in message
    assert "unknown subset 'dev'" in card_error({"adapter": "csv", "options": {"manifests": {"dev": "a.csv"}}})


# ------------------------------------------------------------------ csv: manifests


def two_manifests(root):
    """images/<class>/..., train.csv and test.csv beside them (header path,label)."""
    images = make_image_folder(root / "images", classes={"cat": 8, "dog": 8})
    files = sorted(images.rglob("*.png"))
    rows = [(f"images/{p.parent.name}/{p.name}", p.parent.name) for p in files]
    train = [r for r in rows if int(r[0].rsplit("_", 1)[1][:-4]) < 6]
    test = [r for r in rows if r not in train]
    for name, part in (("train.csv", train), ("test.csv", test)):
        (root / name).write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in part))
    return train, test


def test_csv_one_manifest_per_subset(tmp_path):
    train, test = two_manifests(tmp_path / "pets")
    options = {"manifests": {"train": "pets/train.csv", "test": "pets/test.csv"}}
    sources = load_sources("csv", {**options, "path_column": "path", "label_column": "label"}, tmp_path)
    assert sources.class_names == ["cat", "dog"] and len(sources) == 16
    assert sources.ids == [p for p, _ in train + test], "ids as the manifests write them"
    assert sources.subsets.tolist() == ["train"] * 12 + ["test"] * 4
    assert np.array(sources.class_names)[sources.labels].tolist() == [label for _, label in train + test]


def test_a_file_listed_in_two_manifests_is_kept_once_and_listed(tmp_path):
    train, _ = two_manifests(tmp_path / "pets")
    with open(tmp_path / "pets" / "test.csv", "a") as handle:
        handle.write(f"{train[0][0]},{train[0][1]}\n")
    sources = load_sources("csv", {"manifests": {"train": "pets/train.csv", "test": "pets/test.csv"}}, tmp_path)
    assert len(sources) == 16 and sources.ids.count(train[0][0]) == 1
    (issue,) = sources.issues
    assert issue[:2] == (train[0][0], "duplicate_row") and issue[2] == "test.csv line 6 repeats train.csv line 2"


def test_csv_manifests_errors(tmp_path):
    two_manifests(tmp_path / "pets")
    both = {"manifest": "pets/train.csv", "manifests": {"train": "pets/train.csv"}}
    assert "manifest and manifests are both set" in error_of("csv", both, tmp_path)
    assert "needs option manifest (or manifests" in error_of("csv", {}, tmp_path)
    message = error_of("csv", {"manifests": {"train": "pets/train.csv", "test": "pets/tset.csv"}}, tmp_path)
    assert "manifests.test" in message and "tset.csv does not exist" in message
    message = error_of("csv", {"manifests": {"train": "pets/train.csv", "eval": "pets/test.csv"}}, tmp_path)
    assert "unknown subset 'eval'" in message


def test_make_list_looks_for_every_manifest(tmp_path):
    from project.commands.library import data_status

    card = Dataset.model_validate(
        {"adapter": "csv", "options": {"manifests": {"train": "p/train.csv", "test": "p/test.csv"}}}
    )
    assert data_status(card, tmp_path) == (False, f"no: expected at {tmp_path / 'p' / 'train.csv'}")
    two_manifests(tmp_path / "p")
    (tmp_path / "p" / "test.csv").unlink()
    assert data_status(card, tmp_path) == (False, f"no: expected at {tmp_path / 'p' / 'test.csv'}")
    two_manifests(tmp_path / "p")
    assert data_status(card, tmp_path)[0]


# ------------------------------------------------------------------ label_map


XRAY = {"BACTERIA": 6, "NORMAL": 7, "VIRUS": 5, "unsure": 2}


def test_label_map_merges_renames_and_drops(tmp_path):
    make_image_folder(tmp_path / "xray", classes=XRAY)
    label_map = {"NORMAL": "normal", "BACTERIA": "pneumonia", "VIRUS": "pneumonia", "unsure": "_drop"}
    card = Dataset.model_validate({"adapter": "folder", "label_map": label_map})
    sources = load_sources("folder", {"path": "xray"}, tmp_path, None, card.label_map)
    assert sources.class_names == ["normal", "pneumonia"], "in the order the map names them"
    assert np.bincount(sources.labels).tolist() == [7, 11] and len(sources.ids) == 18
    assert all(("/NORMAL/" in item) == (label == 0) for item, label in zip(sources.items, sources.labels))
    assert [i[:2] for i in sources.issues] == [
        ("unsure/unsure_0.png", "dropped_label"),
        ("unsure/unsure_1.png", "dropped_label"),
    ]
    ordered = load_sources("folder", {"path": "xray"}, tmp_path, ["pneumonia", "normal"], card.label_map)
    assert ordered.class_names == ["pneumonia", "normal"] and np.bincount(ordered.labels).tolist() == [11, 7]


def test_check_data_lists_the_dropped_images_and_no_empty_class(tmp_path):
    make_image_folder(tmp_path / "xray", classes=XRAY)
    label_map = {"NORMAL": "normal", "BACTERIA": "pneumonia", "VIRUS": "pneumonia", "unsure": "_drop"}
    card = {"adapter": "folder", "options": {"path": str(tmp_path / "xray")}, "label_map": label_map}
    status, issues = check_data(tmp_path, card)
    assert status == 0
    assert issues["source"].tolist() == ["unsure/unsure_0.png", "unsure/unsure_1.png"]
    assert set(issues["reason"]) == {"dropped_label"} and set(issues["action"]) == {"excluded"}


def test_label_map_bins_grade_probabilities(tmp_path):
    images = make_image_folder(tmp_path / "img", classes={"x": 8})
    probabilities = ["0.05", "0.2", "0.33", "0.34", "0.5", "0.66", "0.9", "1.0"]
    rows = "".join(f"img/x/x_{i}.png,{p}\n" for i, p in enumerate(probabilities))
    (tmp_path / "m.csv").write_text("path,p\n" + rows)
    bins = [{"max": 0.33, "name": "low"}, {"max": 0.66, "name": "medium"}, {"max": 1, "name": "high"}]
    card = Dataset.model_validate({"adapter": "csv", "label_map": bins})
    sources = load_sources("csv", {"manifest": "m.csv"}, tmp_path, None, card.label_map)
    assert sources.class_names == ["low", "medium", "high"] and images.exists()
    assert np.array(sources.class_names)[sources.labels].tolist() == ["low"] * 3 + ["medium"] * 3 + ["high"] * 2
    card = Dataset.model_validate({"adapter": "csv", "label_map": [*bins[:2], {"max": 0.9, "name": "high"}]})
    assert "raw label 1 is above the last bin's max (0.9)" in error_of(
        "csv", {"manifest": "m.csv"}, tmp_path, None, card.label_map
    )


def test_label_map_errors_name_the_raw_label(tmp_path):
    make_image_folder(tmp_path / "xray", classes=XRAY)

    def mapped(label_map, classes=None):
        card = Dataset.model_validate({"adapter": "folder", "label_map": label_map, "classes": classes})
        return error_of("folder", {"path": "xray"}, tmp_path, classes, card.label_map)

    every = {"NORMAL": "normal", "BACTERIA": "pneumonia", "VIRUS": "pneumonia", "unsure": "_drop"}
    message = mapped({**every, "VIRSU": "pneumonia"})
    assert "raw label 'VIRSU' is not in the data" in message and "BACTERIA, NORMAL, VIRUS, unsure" in message
    message = mapped({k: v for k, v in every.items() if k != "unsure"})
    assert "raw label 'unsure' has no entry" in message and "_drop" in message
    assert "bins grade numeric labels, but raw label 'BACTERIA'" in mapped(
        [{"max": 1, "name": "a"}, {"max": 2, "name": "b"}]
    )
    np.savez(tmp_path / "arrays.npz", x=np.zeros((6, 8, 8), np.uint8), y=np.array([0, 0, 1, 1, 3, 3]))
    card = Dataset.model_validate({"adapter": "npz", "label_map": {"0": "a", "1": "b", "2": "c", "3": "b"}})
    message = error_of("npz", {"path": "arrays.npz"}, tmp_path, None, card.label_map)
    assert "class 'c' gets no images" in message and "0, 1, 3" in message


def test_label_map_is_checked_with_the_card():
    base = {"adapter": "folder"}
    assert Dataset.model_validate({**base, "label_map": {1: "one", 2.0: "two"}}).label_map == {"1": "one", "2": "two"}
    assert "it leaves 1 class(es) (pneumonia)" in card_error({**base, "label_map": {"A": "pneumonia", "B": "_drop"}})
    message = card_error({**base, "label_map": {"A": "x", "B": "y"}, "classes": ["x", "z"]})
    assert "label_map: the card's classes must list the mapped classes" in message and "['x', 'y']" in message
    assert "bins must rise" in card_error({**base, "label_map": [{"max": 1, "name": "a"}, {"max": 0.5, "name": "b"}]})
    assert "bin 1 max" in card_error({**base, "label_map": [{"max": 1, "name": "a"}, {"max": "x", "name": "b"}]})
    assert "give a mapping" in card_error({**base, "label_map": "A: x"})
    assert "label_map: empty" in card_error({**base, "label_map": {}})
    assert "every raw label needs a class name" in card_error({**base, "label_map": {"A": "x", "B": None}})
    message = card_error({**base, "label_map": [{"max": 1, "name": "a"}, {"max": 2, "name": "a"}]})
    assert "bin names must differ" in message


# ------------------------------------------------------------------ the new-dataset wizard


def wizard(tmp_path, name, path, adapter="folder"):
    args = Namespace(name=name, path=str(path), adapter=adapter, overrides=[])
    new_dataset.new_dataset_cli(args, tmp_path)
    return cards.validate(Dataset, cards.read_yaml(tmp_path / f"{name}.yaml"), name)


def test_the_wizard_finds_intel_like_subset_folders(tmp_path, capsys):
    intel_like(tmp_path / "intel")
    card = wizard(tmp_path, "intel", tmp_path / "intel")
    assert card.options == {"path": "intel", "subsets": INTEL}
    assert card.split.provided and card.classes == ["forest", "sea", "street"] and card.num_images == 33
    assert "subset folders (train: seg_train/seg_train/, test: seg_test/seg_test/)" in card.layout
    assert "not read: seg_pred" in capsys.readouterr().out


def test_the_wizard_finds_one_manifest_per_subset(tmp_path):
    two_manifests(tmp_path / "pets")
    (tmp_path / "pets" / "notes.txt").write_text("not a manifest\n")
    card = wizard(tmp_path, "pets", tmp_path / "pets", "csv")
    assert card.options == {"manifests": {"train": "pets/train.csv", "test": "pets/test.csv"}}
    assert card.split.provided and card.num_images == 16
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "labels.csv").write_text("path,label\n")
    with pytest.raises(UserError, match="a folder with one manifest per subset.*found: labels.csv"):
        wizard(tmp_path, "flat", tmp_path / "flat", "csv")


# ------------------------------------------------------------------ a run


def test_a_run_trains_on_the_mapped_classes_of_the_subset_folders(tmp_path):
    """prepare() passes the card's label_map: the split and the model see the mapped classes, and the
    test subset is seg_test's images only."""
    from project.train.training import train_run

    intel_like(tmp_path / "intel", per_class=(12, 4))
    card = {
        "adapter": "folder",
        "options": {"path": str(tmp_path / "intel"), "subsets": INTEL},
        "split": {"provided": True, "val": 0.25},
        "label_map": {"forest": "nature", "sea": "nature", "street": "urban"},
        "classes": ["urban", "nature"],
    }
    paper = write_tiny_paper_card(tmp_path / "cards")
    config = cards.load_config(str(paper), str(write_card(tmp_path / "cards" / "data.yaml", card)))
    metrics = train_run(config, tmp_path / "runs" / config.run_name, verbose=0)
    assert metrics["num_classes"] == 2
    split = pd.read_csv(tmp_path / "runs" / config.run_name / "split.csv")
    assert split.groupby("subset")["label"].value_counts().to_dict() == {
        ("test", "nature"): 8,
        ("test", "urban"): 4,
        ("train", "nature"): 18,
        ("train", "urban"): 9,
        ("val", "nature"): 6,
        ("val", "urban"): 3,
    }
    assert split[split.subset == "test"]["source"].str.startswith("seg_test/seg_test/").all()
