"""Loader adapters: every adapter returns the same Sources (items, integer labels, ordered class names)."""

import shutil
import sys
import uuid

import numpy as np
import pytest

from project.data.adapters import REPO_ROOT, Sources, load_sources
from project.errors import UserError


def user_error(adapter, options, base, classes=None):
    with pytest.raises(UserError) as caught:
        load_sources(adapter, options, base, classes)
    return str(caught.value)


# ------------------------------------------------------------------ folder


def test_folder_flat(tmp_path, image_folder):
    root = image_folder(tmp_path / "pets", {"dog": 3, "cat": 2, "bird": 4})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    image_folder(tmp_path / "pets" / ".hidden", {"ghost": 2})
    sources = load_sources("folder", {"path": "pets"}, tmp_path)
    assert sources.class_names == ["bird", "cat", "dog"]
    assert sources.kind == "files" and sources.subsets is None
    assert np.bincount(sources.labels).tolist() == [4, 2, 3]
    assert all(item.endswith(".png") for item in sources.items)
    assert sources.ids[0] == "bird/bird_0.png"
    for item, label in zip(sources.items, sources.labels):
        assert f"/{sources.class_names[label]}/" in item


def test_folder_classes_order_the_labels(tmp_path, image_folder):
    image_folder(tmp_path / "pets", {"dog": 2, "cat": 3})
    sources = load_sources("folder", {"path": str(tmp_path / "pets")}, "/elsewhere", classes=["dog", "cat"])
    assert sources.class_names == ["dog", "cat"] and np.bincount(sources.labels).tolist() == [2, 3]
    assert all(f"/{sources.class_names[label]}/" in item for item, label in zip(sources.items, sources.labels))
    # a class folder the card does not list is an error, not silently dropped
    message = user_error("folder", {"path": "pets"}, tmp_path, classes=["dog", "bird"])
    assert "['cat'] are not in the card's classes" in message


def test_folder_presplit(tmp_path, image_folder):
    root = image_folder(tmp_path / "data", {"a": 1, "b": 1}, presplit={"train": 4, "valid": 2, "test": 3})
    sources = load_sources("folder", {"path": str(root)}, tmp_path)
    assert sources.class_names == ["a", "b"]
    assert {s: int(np.sum(sources.subsets == s)) for s in ("train", "val", "test")} == {"train": 8, "val": 4, "test": 6}
    assert all(item.split("/")[-3] == {"val": "valid"}.get(s, s) for item, s in zip(sources.items, sources.subsets))


def test_folder_errors_name_the_path(tmp_path, image_folder):
    assert f"{tmp_path / 'nowhere'} does not exist" in user_error("folder", {"path": "nowhere"}, tmp_path)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert "no images" in user_error("folder", {"path": "empty"}, tmp_path)
    image_folder(tmp_path / "one", {"only": 3})
    assert "at least 2" in user_error("folder", {"path": "one"}, tmp_path)


# ------------------------------------------------------------------ csv


@pytest.fixture
def pictures(tmp_path, image_folder):
    return image_folder(tmp_path / "pics", {"x": 6})


def test_csv_with_header(tmp_path, pictures):
    (tmp_path / "list.csv").write_text("file,kind\n" + "".join(f"pics/x/x_{i}.png,{'ab'[i % 2]}\n" for i in range(6)))
    sources = load_sources("csv", {"manifest": "list.csv", "path_column": "file", "label_column": "kind"}, tmp_path)
    assert sources.class_names == ["a", "b"] and sources.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert sources.items[1] == str(tmp_path / "pics/x/x_1.png") and sources.ids[1] == "pics/x/x_1.png"
    assert sources.subsets is None


def test_csv_without_header_by_position(tmp_path, pictures):
    (tmp_path / "list.csv").write_text("".join(f"{'ba'[i % 2]};x/x_{i}.png\n" for i in range(6)))
    options = {"manifest": "list.csv", "header": False, "sep": ";", "path_column": 1, "label_column": 0, "root": "pics"}
    sources = load_sources("csv", options, tmp_path)
    assert len(sources) == 6  # the first line is data, not a header
    assert sources.class_names == ["a", "b"] and sources.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert sources.items[0] == str(tmp_path / "pics/x/x_0.png")


def test_csv_whitespace_separator(tmp_path, pictures):
    lines = ["path   label", *(f"pics/x/x_{i}.png \t\t {['cat', 'dog'][i % 2]}" for i in range(6))]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    sources = load_sources(
        "csv", {"manifest": "list.txt", "sep": "whitespace", "path_column": "path", "label_column": "label"}, tmp_path
    )
    assert sources.class_names == ["cat", "dog"] and sources.labels.tolist() == [0, 1] * 3
    assert sources.items[5] == str(tmp_path / "pics/x/x_5.png")


def test_csv_numeric_labels_become_classes(tmp_path, pictures):
    values = ["1.0", "0.0", "0.333", "0.333", "0.0", "1.0"]
    (tmp_path / "m.csv").write_text("path,grade\n" + "".join(f"pics/x/x_{i}.png,{v}\n" for i, v in enumerate(values)))
    options = {"manifest": "m.csv", "path_column": "path", "label_column": "grade"}
    plain = load_sources("csv", options, tmp_path)
    assert plain.class_names == ["0", "0.333", "1"] and plain.labels.tolist() == [2, 0, 1, 1, 0, 2]
    named = load_sources("csv", options, tmp_path, classes=["healthy", "mild", "severe"])
    assert named.class_names == ["healthy", "mild", "severe"] and named.labels.tolist() == [2, 0, 1, 1, 0, 2]
    assert "3 numeric labels" in user_error("csv", options, tmp_path, classes=["no", "yes"])


def test_csv_split_column(tmp_path, pictures):
    subsets = ["train", "Train", "validation", "val", "test", "TEST"]
    rows = "".join(f"pics/x/x_{i}.png,{'ab'[i % 2]},{s}\n" for i, s in enumerate(subsets))
    (tmp_path / "m.csv").write_text("p,l,fold\n" + rows)
    options = {"manifest": "m.csv", "path_column": "p", "label_column": "l", "split_column": "fold"}
    assert load_sources("csv", options, tmp_path).subsets.tolist() == ["train", "train", "val", "val", "test", "test"]
    (tmp_path / "m.csv").write_text("p,l,fold\n" + rows + "pics/x/other.png,a,holdout\n")
    message = user_error("csv", options, tmp_path)
    assert "split_column" in message and "holdout" in message and "train" in message


def test_csv_errors_name_the_column_and_file(tmp_path, pictures):
    (tmp_path / "m.csv").write_text("p,l\npics/x/x_0.png,a\npics/x/x_1.png,b\n")
    message = user_error("csv", {"manifest": "m.csv", "path_column": "path", "label_column": "l"}, tmp_path)
    assert "path_column" in message and "'path'" in message and "['p', 'l']" in message
    message = user_error("csv", {"manifest": "m.csv", "header": False, "label_column": 5}, tmp_path)
    assert "label_column" in message and "column 5" in message
    assert f"{tmp_path / 'gone.csv'} does not exist" in user_error("csv", {"manifest": "gone.csv"}, tmp_path)
    # rows whose label the card's classes do not list are left out, each with its reason
    (tmp_path / "m.csv").write_text("p,l\npics/x/x_0.png,a\npics/x/x_1.png,b\npics/x/x_2.png,c\n")
    sources = load_sources("csv", {"manifest": "m.csv"}, tmp_path, classes=["a", "c"])
    assert sources.class_names == ["a", "c"] and sources.ids == ["pics/x/x_0.png", "pics/x/x_2.png"]
    (issue,) = sources.issues
    assert issue[:2] == ("pics/x/x_1.png", "unknown_label") and "line 3" in issue[2]


# ------------------------------------------------------------------ arrays


def test_npz_uint8_and_float(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(12) % 3)
    sources = load_sources("npz", {"path": "a.npz"}, tmp_path)
    assert sources.kind == "array" and sources.items.shape == (12, 5, 6, 3)
    assert np.array_equal(sources.items, x) and sources.class_names == ["0", "1", "2"]
    assert sources.labels.tolist() == (np.arange(12) % 3).tolist() and len(set(sources.ids)) == 12

    grey = rng.random((8, 4, 4)).astype(np.float32)  # floats in 0-1, no channel axis
    np.savez(tmp_path / "b.npz", images=grey, targets=np.array([0, 1] * 4, dtype=np.float64).reshape(-1, 1))
    sources = load_sources("npz", {"path": "b.npz", "x": "images", "y": "targets"}, tmp_path, classes=["no", "yes"])
    assert sources.items.dtype == np.uint8 and sources.items.shape == (8, 4, 4, 1)
    assert np.array_equal(sources.items[..., 0], np.round(grey * 255).astype(np.uint8))
    assert sources.labels.dtype == np.int64 and sources.labels.tolist() == [0, 1] * 4
    assert sources.class_names == ["no", "yes"]


def test_npz_missing_array_lists_the_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 1]))
    message = user_error("npz", {"path": "a.npz"}, tmp_path)
    assert "no array 'x'" in message and "images" in message


def test_digits():
    sources = load_sources("digits", {}, None)
    assert len(sources) == 1797 and sources.kind == "array"
    assert sources.items.shape == (1797, 8, 8, 1) and sources.items.dtype == np.uint8
    assert sources.items.max() == 255 and sources.items.min() == 0
    assert sources.class_names == [str(d) for d in range(10)] and np.bincount(sources.labels).min() >= 170
    assert sources.ids[0] == "digits:0000" and len(set(sources.ids)) == 1797


def test_keras_dataset_name_is_checked():
    message = user_error("keras", {"name": "mnist2"}, None)
    assert "'mnist2'" in message and "fashion_mnist" in message and "cifar100" in message


def test_keras_offline_fails_fast_with_a_clear_message(offline_keras):
    message = offline_keras["out"]["dataset_error"]
    assert "keras.datasets.mnist" in message and "could not be downloaded" in message
    assert str(offline_keras["home"] / "datasets") in message and "make download" in message
    assert offline_keras["out"]["dataset_seconds"] < 60  # a refused connection, not a hang


def test_tfds_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if it were not installed
    assert "pip install tensorflow-datasets" in user_error("tfds", {"name": "mnist"}, None)


# ------------------------------------------------------------------ custom adapters and the registry

LOADER = '''
import numpy as np

def load(path, base, size=4, classes=None):
    """Two classes of constant images; plain lists for labels and ids."""
    images = np.stack([np.full((size, size, 3), 40 * (i % 2), np.uint8) for i in range(10)])
    return {"items": images, "labels": [i % 2 for i in range(10)], "class_names": classes or ["dark", "light"],
            "ids": [f"{path}:{i}" for i in range(10)], "kind": "array"}

def not_a_function():
    pass

value = 3
'''


@pytest.fixture
def loader_in_repo():
    """A custom adapter file inside the repository (datasets/<random>/ is git-ignored); removed after."""
    folder = REPO_ROOT / "datasets" / f"_pytest_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "loader.py").write_text(LOADER)
    yield folder.relative_to(REPO_ROOT).as_posix() + "/loader.py"
    shutil.rmtree(folder)


def test_custom_adapter_inside_the_repository(loader_in_repo, tmp_path):
    sources = load_sources(f"{loader_in_repo}:load", {"path": "somewhere", "size": 5}, tmp_path)
    assert isinstance(sources, Sources) and sources.kind == "array" and sources.items.shape == (10, 5, 5, 3)
    assert sources.labels.dtype == np.int64 and sources.labels.tolist() == [0, 1] * 5
    assert sources.class_names == ["dark", "light"] and sources.ids[3] == "somewhere:3"
    assert load_sources(f"{loader_in_repo}:load", {"path": "p"}, tmp_path, ["a", "b"]).class_names == ["a", "b"]


def test_custom_adapter_errors(loader_in_repo, tmp_path):
    assert "has no function 'missing'" in user_error(f"{loader_in_repo}:missing", {}, tmp_path)
    assert "has no function 'value'" in user_error(f"{loader_in_repo}:value", {}, tmp_path)
    message = user_error(f"{loader_in_repo}:load", {"path": "p", "colour": 1}, tmp_path)
    assert "unknown option colour" in message and "accepted: path, size" in message
    assert "needs option path" in user_error(f"{loader_in_repo}:load", {}, tmp_path)
    assert "does not exist" in user_error("datasets/no_such_loader.py:load", {}, tmp_path)


def test_custom_adapter_outside_the_repository_is_refused(tmp_path):
    outside = tmp_path / "loader.py"
    outside.write_text(LOADER)
    for spec in (f"{outside}:load", "../outside/loader.py:load"):
        message = user_error(spec, {"path": "p"}, tmp_path)
        assert "lies outside the repository" in message


def test_custom_adapter_results_are_checked(tmp_path, loader_in_repo):
    broken = REPO_ROOT / loader_in_repo.replace("loader.py", "broken.py")
    broken.write_text(
        "def load():\n"
        "    return {'items': ['a.png', 'b.png', 'c.png'], 'labels': [0, 1], 'class_names': ['x', 'y'], 'ids': ['a', 'b', 'c']}\n"
        "def load_range():\n"
        "    return {'items': ['a.png', 'b.png'], 'labels': [0, 2], 'class_names': ['x', 'y'], 'ids': ['a', 'b']}\n"
    )
    spec = loader_in_repo.replace("loader.py", "broken.py")
    assert "3 items, 2 labels, 3 ids" in user_error(f"{spec}:load", {}, tmp_path)
    assert "labels must lie in 0..1" in user_error(f"{spec}:load_range", {}, tmp_path)


def test_unknown_adapter_lists_the_accepted_ones(tmp_path):
    message = user_error("foldr", {}, tmp_path)
    for name in ("folder", "csv", "digits", "npz", "keras", "tfds", "path/to/file.py:function"):
        assert name in message


def test_adapter_options_are_checked(tmp_path):
    message = user_error("digits", {"limit": 10}, tmp_path)
    assert "unknown option limit" in message and "adapter digits" in message
    assert "needs option path" in user_error("folder", {}, tmp_path)
