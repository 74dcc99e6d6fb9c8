"""Loader adapters: the dataset swap. Each turns a dataset card's `options` into `Sources`.

A registry of plain functions. Every adapter takes its card options as keyword arguments plus
`base` (the dataset card's folder, for relative paths) and `classes` (the card's optional class
list), and returns the same thing: image sources with integer labels and ordered class names.
"""

import importlib.util
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from project.config.layouts import number_name, subset_map_problem
from project.data.label_map import apply_label_map
from project.data.network import download_timeout
from project.errors import UserError
from project.paths import REPO_ROOT

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
SUBSET_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Sources:
    """items: file paths (str), encoded image bytes, or a uint8 array (N, H, W, C).
    ids: a stable name per item, written to split.csv. subsets: 'train'/'val'/'test' when pre-split.
    root: the dataset folder (files must not lead out of it). issues: (source, reason, detail) of the
    entries the adapter rejected, listed by the data check. class_folders: the folders the folder adapter
    read as classes (the data check's walk tells them from folders it did not read). columns: every
    column of a manifest by name, one value per item (split.group_by: column:NAME reads them)."""

    items: object
    labels: np.ndarray
    class_names: list
    ids: list
    subsets: np.ndarray | None = None
    kind: str = "files"  # files | encoded | array
    root: str | None = None
    issues: list = field(default_factory=list)
    class_folders: list = field(default_factory=list)  # the folder adapter's class folders with images
    columns: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.labels)


def _resolve(path, base):
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else Path(base) / path


def _require(path, option):
    if not path.exists():
        raise UserError(f"dataset option {option}: {path} does not exist")
    return path


def _is_image(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _hidden(path, root):
    return any(part.startswith(".") or part.startswith("__") for part in path.relative_to(root).parts)


def _names_from_classes(found, classes, origin):
    """Order and select class names: the card's `classes` when given, else sorted."""
    if classes is None:
        return sorted(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{origin}: labels {unknown[:10]} are not in the card's classes: {classes}")
    return list(classes)


# ------------------------------------------------------------------ adapters


def folder(path, base, classes=None, subsets=None):
    """One sub-folder per class; or train/ val/ test/ each holding class folders (pre-split); or
    `subsets` naming the folder of each subset under `path` ({train: seg_train/seg_train, test: ...}),
    other folders then being left alone (Kaggle's unlabelled seg_pred/)."""
    root = _require(_resolve(path, base), "path")
    if subsets is not None:
        root = Path(os.path.normpath(root))
        parts = _subset_folders(root, subsets)
    else:
        children = [p for p in sorted(root.iterdir()) if p.is_dir() and not _hidden(p, root)]
        presplit = bool(children) and all(p.name.lower() in SUBSET_NAMES for p in children)
        parts = [(SUBSET_NAMES[p.name.lower()], p) for p in children] if presplit else [(None, root)]
    records, class_folders = [], []
    for subset, top in parts:
        for class_dir in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = [
                (str(file), class_dir.name, subset, file.relative_to(root).as_posix())
                for file in sorted(class_dir.rglob("*"))
                if file.is_file() and _is_image(file) and not _hidden(file, root)
            ]
            records += found
            class_folders += [str(class_dir)] if found else []
    if not records:
        where = ", ".join(str(top) for _, top in parts)
        raise UserError(
            f"dataset option path: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in class folders under {where}"
        )
    names = _names_from_classes({r[1] for r in records}, classes, f"folder {root}")
    records = [r for r in records if r[1] in names]
    index = {n: i for i, n in enumerate(names)}
    return Sources(
        items=[r[0] for r in records],
        labels=np.array([index[r[1]] for r in records], dtype=np.int64),
        class_names=names,
        ids=[r[3] for r in records],
        subsets=np.array([r[2] for r in records]) if parts[0][0] is not None else None,
        root=str(root),
        class_folders=class_folders,
    )


def _subset_folders(root, subsets):
    """[(subset, folder)] of the folder adapter's `subsets` option: each an existing folder inside
    `root`, no two overlapping (one image in two subsets would leak)."""
    problem = subset_map_problem("subsets", subsets)
    if problem:
        raise UserError(f"dataset option {problem}")
    parts = []
    for subset, name in subsets.items():
        folder = Path(os.path.normpath(root / name))
        if not folder.is_relative_to(root) or folder == root:
            raise UserError(f"dataset option subsets.{subset}: {name!r} must name a folder inside {root}")
        if not folder.is_dir():
            raise UserError(
                f"dataset option subsets.{subset}: no folder {name!r} under {root}; folders there: {_folders_near(root, folder)}"
            )
        for other, known in parts:
            if folder.is_relative_to(known) or known.is_relative_to(folder):
                raise UserError(
                    f"dataset option subsets: {other} and {subset} overlap ({known.relative_to(root)}, {name}): "
                    f"an image must belong to one subset"
                )
        parts.append((subset, folder))
    return parts


def _folders_near(root, missing):
    """The folders beside the deepest existing parent of `missing` (paths relative to `root`)."""
    parent = next(p for p in missing.parents if p.is_dir())
    folders = sorted(
        p.relative_to(root).as_posix() for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    return ", ".join(folders) or "(none)"


def csv_manifest(
    manifest=None,
    base=None,
    classes=None,
    sep=",",
    header=True,
    path_column=0,
    label_column=1,
    split_column=None,
    root=None,
    comment=None,
    path_suffix="",
    manifests=None,
):
    """A manifest read with pandas: a path column and a label column (by name or position); or
    `manifests`, one manifest per subset ({train: trainval.txt, test: test.txt}), each read the same way.

    sep: any pandas separator; "whitespace" for runs of spaces/tabs. comment: lines starting with
    it are skipped. Numeric labels become classes (sorted by value, renamed in that order by the
    card's `classes`). Paths are relative to `root` (default: the manifest's folder), with
    `path_suffix` appended (for lists that name images without their extension).
    """
    import pandas as pd

    files = _manifest_files(manifest, manifests, split_column, base)
    read = {"sep": sep, "header": header, "comment": comment}
    columns = {"path_column": path_column, "label_column": label_column}
    if split_column is not None:
        columns["split_column"] = split_column
    tables = [(subset, file, _manifest_columns(file, read, columns)) for subset, file in files]
    numeric = _numeric_labels(pd.concat([t["label_column"].str.strip() for _, _, t in tables]))
    kept, issues, seen = [], [], {}
    for subset, file, picked in tables:
        folder_root = Path(os.path.abspath(_resolve(root, file.parent) if root else file.parent))
        keep, found = _manifest_rows(
            picked["path_column"].str.strip(),
            picked["label_column"].str.strip(),
            (folder_root, classes, numeric, seen, file if len(files) > 1 else None),
            2 if header else 1,
        )
        issues += found
        rows = pd.DataFrame({option: column.iloc[keep].reset_index(drop=True) for option, column in picked.items()})
        rows["path"] = rows["path_column"].str.strip() + path_suffix
        rows["item"] = [str(_resolve(p, folder_root)) for p in rows["path"]]
        rows["subset"] = subset if subset else _split_values(rows, file) if split_column is not None else None
        kept.append((folder_root, rows))
    table = pd.concat([rows for _, rows in kept], ignore_index=True)
    names, labels = _manifest_labels(table["label_column"].str.strip(), classes, files[0][1])
    roots = sorted({str(folder_root) for folder_root, _ in kept})
    common = roots[0] if len(roots) == 1 else os.path.commonpath(roots)
    return Sources(
        items=table["item"].tolist(),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=names,
        ids=table["path"].tolist()
        if len(roots) == 1
        else [Path(os.path.relpath(i, common)).as_posix() for i in table["item"]],
        subsets=None if table["subset"].isna().all() else table["subset"].to_numpy().astype(str),
        root=common,
        issues=issues,
        columns={
            key.removeprefix("column:"): table[key].fillna("").astype(str).str.strip().tolist()
            for key in table.columns
            if key.startswith("column:")
        },
    )


def _manifest_files(manifest, manifests, split_column, base):
    """[(subset or None, file)]: the one manifest, or one per subset (`manifests`)."""
    if manifest is not None and manifests is not None:
        raise UserError(
            "dataset options manifest and manifests are both set; give manifest (one file for every image) "
            "or manifests (one file per subset, e.g. {train: train.csv, test: test.csv}), not both"
        )
    if manifests is None:
        if manifest is None:
            raise UserError("dataset card options: adapter csv needs option manifest (or manifests, one per subset)")
        return [(None, _require(_resolve(manifest, base), "manifest"))]
    problem = subset_map_problem("manifests", manifests)
    if problem:
        raise UserError(f"dataset option {problem}")
    if split_column is not None:
        raise UserError(
            "dataset options manifests and split_column are both set: with manifests the file a row comes from is its subset"
        )
    return [(subset, _require(_resolve(name, base), f"manifests.{subset}")) for subset, name in manifests.items()]


def _manifest_columns(file, read, columns):
    """The manifest's columns the options name ({option: Series of str})."""
    import pandas as pd

    sep, header = read["sep"], read["header"]
    table = pd.read_csv(
        file,
        sep=r"\s+" if sep == "whitespace" else sep,
        header=0 if header else None,
        dtype=str,
        keep_default_na=False,
        comment=read["comment"],
    )
    picked = {}
    for option, column in columns.items():
        if isinstance(column, int) and not header:
            if column >= table.shape[1]:
                raise UserError(
                    f"dataset option {option}: column {column} does not exist in {file} ({table.shape[1]} columns)"
                )
            picked[option] = table.iloc[:, column]
        elif column in table.columns:
            picked[option] = table[column]
        elif isinstance(column, int) and column < table.shape[1]:
            picked[option] = table.iloc[:, column]
        else:
            raise UserError(f"dataset option {option}: no column {column!r} in {file}; columns: {list(table.columns)}")
    picked.update({f"column:{name}": table[name] for name in table.columns})  # every column, for split.group_by
    return picked


def _split_values(rows, file):
    mapped = rows["split_column"].str.strip().str.lower().map(SUBSET_NAMES)
    if mapped.isna().any():
        bad = sorted(set(rows["split_column"][mapped.isna()]))[:5]
        raise UserError(f"dataset option split_column: values {bad} in {file}; accepted: {', '.join(SUBSET_NAMES)}")
    return mapped


def _manifest_labels(raw, classes, file):
    """Class names and integer labels: numbers sorted by value (renamed by `classes`), else names."""
    import pandas as pd

    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        values = sorted(numeric.unique())
        if classes is not None and len(classes) != len(values):
            raise UserError(f"dataset card classes: {len(classes)} names for {len(values)} numeric labels {values}")
        names = list(classes) if classes is not None else [number_name(v) for v in values]
        return names, np.searchsorted(np.array(values), numeric.to_numpy())
    names = _names_from_classes(set(raw), classes, f"manifest {file}")
    index = {n: i for i, n in enumerate(names)}
    return names, raw.map(index).to_numpy()


def _manifest_rows(paths, labels, context, first_line):
    """Which manifest rows to keep; the others as (source, reason, detail): blank path or label,
    a label not in the card's classes, a path leading out of the manifest's folder, a repeated path
    (`seen` is shared by the manifests of one card, so a file listed in two subsets is caught)."""
    folder_root, classes, numeric, seen, file = context
    keep, issues = [], []
    for row, (path, label) in enumerate(zip(paths, labels)):
        line = f"{file.name} line {row + first_line}" if file else f"line {row + first_line}"
        resolved = os.path.normpath(_resolve(path, folder_root)) if path else ""
        if not path:
            issues.append((f"({line})", "blank_path", f"{line}: no file path"))
        elif not label:
            issues.append((path, "blank_label", f"{line}: no label"))
        elif classes is not None and not numeric and label not in classes:
            issues.append(
                (path, "unknown_label", f"{line}: label {label!r} is not in the card's classes: {list(classes)}")
            )
        elif not Path(resolved).is_relative_to(folder_root):
            issues.append((path, "path_outside_root", f"{line}: {resolved} lies outside {folder_root}"))
        elif resolved in seen:
            first, first_label = seen[resolved]
            same = "" if first_label == label else f" with label {label!r} (kept: {first_label!r})"
            issues.append((path, "duplicate_row", f"{line} repeats {first}{same}"))
        else:
            seen[resolved] = (line, label)
            keep.append(row)
    return keep, issues


def _numeric_labels(labels):
    """True when every non-blank label is a number (numeric labels are renamed by `classes`)."""
    import pandas as pd

    filled = labels[labels != ""]
    return bool(len(filled)) and bool(pd.to_numeric(filled, errors="coerce").notna().all())


def digits(base=None, classes=None):
    """scikit-learn's bundled handwritten digits: 1,797 8x8 grey images, 10 classes, no network."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return _arrays(images, data.target, classes or [str(d) for d in range(10)], "digits")


def npz(path, base, classes=None, x="x", y="y"):
    """Arrays in a .npz file: images (N, H, W[, C]) as uint8 0-255 or float 0-1; labels (N) as
    integers 0..C-1, or as strings, which are the class names (sorted, as folder names are; the
    card's `classes` orders them and must hold every one)."""
    file = _require(_resolve(path, base), "path")
    with np.load(file) as data:  # allow_pickle stays off: loading a pickle can run code
        arrays = {}
        for option, key in (("x", x), ("y", y)):
            if key not in data:
                raise UserError(f"dataset option {option}: no array {key!r} in {file}; arrays: {list(data.keys())}")
            try:
                arrays[option] = data[key]
            except ValueError:  # an object array: only pickle reads it
                raise UserError(
                    f"dataset option {option}: array {key!r} in {file} holds Python objects, which only pickle "
                    f"can read (refused: it can run code); save it as a number or string array, "
                    f"e.g. np.array(names, dtype=str)"
                ) from None
    images, labels = arrays["x"], arrays["y"].reshape(-1)
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() <= 1.0 else 1.0
        images = np.clip(np.round(images * scale), 0, 255).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    if labels.dtype.kind in "US":
        names, labels = _string_labels(labels, classes, f"npz {file} array {y!r}")
    else:
        names = classes or [str(i) for i in range(int(labels.max()) + 1)]
    return _arrays(images, labels, names, file.stem)


def _string_labels(labels, classes, origin):
    """String (or bytes, read as UTF-8) labels -> (class names, integer labels)."""
    try:
        text = np.char.decode(labels, "utf-8") if labels.dtype.kind == "S" else labels.astype(str)
    except UnicodeDecodeError as error:
        raise UserError(f"{origin}: labels are bytes but not UTF-8 ({error}); save them as str") from None
    blank = np.flatnonzero(np.char.strip(text) == "")
    if len(blank):
        raise UserError(
            f"{origin}: blank label at index {', '.join(map(str, blank[:5]))}; every image needs a class name"
        )
    names = _names_from_classes(set(text.tolist()), classes, origin)
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[t] for t in text.tolist()], dtype=np.int64)


KERAS_CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "cifar100": [f"class_{i:02d}" for i in range(100)],
}


def keras_dataset(name, base=None, classes=None):
    """keras.datasets mnist / fashion_mnist / cifar10 / cifar100: downloaded once into ~/.keras/datasets."""
    if name not in KERAS_CLASSES:
        raise UserError(f"dataset option name: {name!r} is not a keras dataset; accepted: {', '.join(KERAS_CLASSES)}")
    import keras as K

    try:
        with download_timeout():
            (x_train, y_train), (x_test, y_test) = getattr(K.datasets, name).load_data()
    except Exception as error:
        cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "datasets")
        raise UserError(
            f"keras.datasets.{name} is not cached in {cache} and could not be downloaded ({str(error)[:200]}). "
            f"On a machine with network run `make download DATASET=...`, then copy its datasets folder to {cache}"
        ) from None
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train.reshape(-1), y_test.reshape(-1)])
    sources = _arrays(images if images.ndim == 4 else images[..., None], labels, classes or KERAS_CLASSES[name], name)
    sources.subsets = np.array(["train"] * len(x_train) + ["test"] * len(x_test))
    return sources


def tfds(name, base=None, classes=None, splits=None, data_dir=None):
    """Any TensorFlow Datasets name (needs `pip install tensorflow-datasets`); images stay encoded.

    splits: {train: 'train', val: 'validation', test: 'test'} (TFDS split names); default: the
    dataset's own train/validation/test splits that exist, re-split by the card when only train.
    """
    try:
        import tensorflow_datasets as tf_datasets
    except ImportError:
        raise UserError("the tfds adapter needs TensorFlow Datasets: pip install tensorflow-datasets") from None
    try:
        builder = tf_datasets.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
    except Exception as error:
        raise UserError(
            f"TFDS dataset {name!r} could not be prepared ({str(error)[:160]}); "
            f"prepare it on a machine with network (`make download DATASET=...`) and copy its data_dir"
        ) from None
    available = set(builder.info.splits)
    wanted = splits or {
        s: n for s, n in (("train", "train"), ("val", "validation"), ("test", "test")) if n in available
    }
    items, labels, subsets, ids = [], [], [], []
    label_key = "label" if "label" in builder.info.features else next(iter(builder.info.supervised_keys or ()), "label")
    for subset, split in wanted.items():
        data = builder.as_dataset(split=split, decoders={"image": tf_datasets.decode.SkipDecoding()})
        for i, example in enumerate(tf_datasets.as_numpy(data)):
            items.append(example["image"])
            labels.append(int(example[label_key]))
            subsets.append(subset)
            ids.append(f"{name}:{split}:{i}")
    names = classes or builder.info.features[label_key].names
    presplit = len(wanted) > 1
    return Sources(items, np.array(labels), list(names), ids, np.array(subsets) if presplit else None, kind="encoded")


def _arrays(images, labels, class_names, prefix):
    width = len(str(len(labels)))
    return Sources(
        items=np.ascontiguousarray(images),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        class_names=list(class_names),
        ids=[f"{prefix}:{i:0{width}d}" for i in range(len(labels))],
        kind="array",
    )


# a card names an adapter by its key (project.config.schema.ADAPTER_NAMES lists the same keys)
ADAPTERS = {"folder": folder, "csv": csv_manifest, "digits": digits, "npz": npz, "keras": keras_dataset, "tfds": tfds}


def custom_adapter(spec):
    """'datasets/my_loader.py:load' -> that function; the file must lie inside the repository."""
    file_part, _, function = spec.rpartition(":")
    file = (REPO_ROOT / file_part).resolve()
    if not file.is_relative_to(REPO_ROOT):
        raise UserError(
            f"dataset card adapter: {file_part} lies outside the repository ({REPO_ROOT}); custom adapters must live inside it"
        )
    if not file.is_file():
        raise UserError(
            f"dataset card adapter: {file_part} does not exist (expected path/to/file.py:function, relative to {REPO_ROOT})"
        )
    module_spec = importlib.util.spec_from_file_location(f"custom_adapter_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, function, None)):
        raise UserError(f"dataset card adapter: {file_part} has no function {function!r}")
    return getattr(module, function)


def load_sources(adapter, options, base, classes=None, label_map=None):
    """Run the card's adapter, check what it returned, then apply the card's `label_map` (the
    adapter then sees no `classes`: they name the mapped classes, not the raw labels)."""
    if adapter in ADAPTERS:
        function = ADAPTERS[adapter]
    elif ".py:" in adapter:
        function = custom_adapter(adapter)
    else:
        raise UserError(
            f"dataset card adapter: unknown adapter {adapter!r}; accepted: {', '.join(ADAPTERS)} or path/to/file.py:function"
        )
    parameters = inspect.signature(function).parameters
    given = {k: v for k, v in (("base", base), ("classes", None if label_map else classes)) if k in parameters}
    accepted = [p for p in parameters if p not in given]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"dataset card options: unknown option {', '.join(unknown)} for adapter {adapter}; accepted: {', '.join(accepted) or '(none)'}"
        )
    missing = [p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in options]
    if missing:
        raise UserError(f"dataset card options: adapter {adapter} needs option {', '.join(missing)}")
    result = function(**given, **options)
    sources = result if isinstance(result, Sources) else Sources(**result)
    sources.labels = np.asarray(sources.labels, dtype=np.int64).reshape(-1)
    if not len(sources.items) == len(sources.labels) == len(sources.ids):
        raise UserError(
            f"dataset ({adapter}): {len(sources.items)} items, {len(sources.labels)} labels, {len(sources.ids)} ids; "
            f"each image needs one label and one id"
        )
    if len(sources.labels) and not 0 <= sources.labels.min() <= sources.labels.max() < len(sources.class_names):
        raise UserError(
            f"dataset ({adapter}): labels must lie in 0..{len(sources.class_names) - 1} "
            f"(one per class name), got {sources.labels.min()}..{sources.labels.max()}"
        )
    if label_map:
        sources = apply_label_map(sources, label_map, classes)
    if len(sources.class_names) < 2 or len(set(sources.labels.tolist())) < 2:
        raise UserError(
            f"dataset ({adapter}): found {len(set(sources.labels.tolist()))} class(es); a classifier needs at least 2"
        )
    return sources
