"""The card library: `make list`, `make new-paper` and `make new-dataset`.

`new-paper` renders project/templates/paper_card.yaml (every field commented with what to look for
in the paper) from a starter recipe or from an existing card; every recipe value it writes is
pre-marked as assumed until the team finds it in its paper. `new-dataset` scans the data through
the card's adapter and writes a dataset card with what it found. Both refuse to overwrite a card.
Nothing here imports TensorFlow unless an adapter needs it (keras, tfds).
"""

import datetime
import os
import re
from collections import Counter
from pathlib import Path

import yaml

from project import logs
from project.config import cards
from project.config.backbone_table import BACKBONES, WIDTH_MULTIPLIER
from project.config.schema import Dataset, Paper
from project.errors import UserError

log = logs.get(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# A generic transfer-learning recipe: the starting point of `new-paper` without --from.
STARTER = {
    "citation": {
        "title": "TODO: exact title of the paper",
        "authors": ["TODO: First Author", "Second Author"],
        "venue": "TODO: journal volume(issue):pages, or conference",
        "year": 2020,
        "link": "TODO: https://doi.org/... or https://arxiv.org/abs/...",
    },
    "summary": "TODO: in two sentences, the method of the paper and what this card reproduces.",
    "model": {
        "backbone": "ResNet50",
        "weights": "imagenet",
        "input_size": 224,
        "head": {"pooling": "avg", "dropout": 0.2},
    },
    "training": {
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 32,
        "early_stopping": {"monitor": "val_accuracy", "patience": 5},
        "stages": [
            {"name": "head", "epochs": 5, "unfreeze": 0},
            {"name": "fine_tune", "epochs": 10, "unfreeze": "all", "learning_rate": 0.00001},
        ],
    },
    "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
    "search": {
        "space": {
            "learning_rate": {"min": 0.00001, "max": 0.01, "sampling": "log"},
            "dropout": {"min": 0.0, "max": 0.5},
            "batch_size": {"choices": [16, 32, 64]},
        },
    },
}

# Recipe keys of a new card: all assumed until the team finds them in its paper.
RECIPE_KEYS = [
    "model.backbone",
    "model.weights",
    "model.input_size",
    "model.preprocessing",
    "model.head",
    "training.optimizer",
    "training.learning_rate",
    "training.schedule",
    "training.batch_size",
    "training.weight_decay",
    "training.l2",
    "training.label_smoothing",
    "training.class_weight",
    "training.early_stopping",
    "training.stages",
    "augmentation",
]

# The option of each adapter that `new-dataset --path` fills in.
PATH_OPTION = {"folder": "path", "csv": "manifest", "npz": "path", "keras": "name", "tfds": "name", "digits": None}

# keras.datasets name -> what keras.datasets caches under $KERAS_HOME/datasets
KERAS_CACHE = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar-10-batches-py-target",
    "cifar100": "cifar-100-python-target",
}


# ------------------------------------------------------------------ list


def new_card_path(folder, name, command, example):
    """Where a new card goes; refuses an existing one (new cards never overwrite)."""
    name = card_name(name, command, example)
    target = Path(folder) / f"{name}.yaml"
    if target.exists():
        raise UserError(
            f"{target} already exists; {command} never overwrites a card: choose another NAME, or edit that card"
        )
    return name, target


def card_name(name, command, example):
    """A new card's name: letters, digits, _ . - ; no '__' (it separates paper and dataset in run names)."""
    name = (name or "").strip()
    if not name:
        raise UserError(f"{command} needs a card name: {example}")
    if name.endswith((".yaml", ".yml")) or not NAME.match(name) or "__" in name:
        raise UserError(
            f"{command}: {name!r} is not a usable card name; use letters, digits, '_', '.', '-' "
            f"(no '__', no .yaml), e.g. smith2021_resnet"
        )
    return name


def paper_rows(folder=None):
    rows = []
    for path in sorted(Path(folder or cards.PAPERS_DIR).glob("*.yaml")):
        try:
            paper = cards.validate(Paper, cards.read_yaml(path), path)
        except UserError as error:
            rows.append(
                {
                    "name": path.stem,
                    "paper": f"INVALID: {_first_error(error, path)}",
                    "year": "",
                    "backbone": "",
                    "reported": "",
                }
            )
            continue
        rows.append(
            {
                "name": path.stem,
                "paper": _short_citation(paper.citation),
                "year": str(paper.citation.year),
                "backbone": paper.model.backbone + (f" x{paper.model.width:g}" if paper.model.width != 1.0 else ""),
                "reported": _reported_text(paper.reported),
            }
        )
    return rows


def dataset_rows(folder=None):
    folder = Path(folder or cards.DATASETS_DIR)
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            card = cards.validate(Dataset, cards.read_yaml(path), path)
        except UserError as error:
            rows.append(
                {
                    "name": path.stem,
                    "adapter": "INVALID",
                    "classes": "",
                    "images": "",
                    "data": _first_error(error, path),
                }
            )
            continue
        classes = card.num_classes or (len(card.classes) if card.classes else None)
        rows.append(
            {
                "name": path.stem,
                "adapter": card.adapter,
                "classes": str(classes or "?"),
                "images": f"{card.num_images:,}" if card.num_images else "?",
                "data": data_status(card, path.parent, path.stem)[1],
            }
        )
    return rows


def _first_error(error, path):
    """The first problem of an invalid card, without the file name (the row names the card)."""
    return _clip(str(error).splitlines()[0].replace(f"{path}: ", "").replace(f"{path}:", ""), 70)


def _short_citation(citation):
    first = citation.authors[0].split()[-1] if citation.authors[0].split() else citation.authors[0]
    who = f"{first} et al." if len(citation.authors) > 1 else first
    return _clip(f"{who}: {citation.title}", 46)


def _reported_text(reported):
    if not reported:
        return "(none)"
    r = reported[0]
    value = f"{r.value * 100:.2f}".rstrip("0").rstrip(".") + "%" if 0 < r.value <= 1 else f"{r.value:g}"
    more = f" (+{len(reported) - 1} more)" if len(reported) > 1 else ""
    return _clip(f"{value} {r.metric}, {r.dataset}", 40) + more


def _clip(text, width):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def data_status(card, base, name="..."):
    """(present, text): whether a dataset card's data is on this machine, without loading it."""
    options = card.options
    if card.adapter == "digits":
        return True, "yes (bundled with scikit-learn)"
    if card.adapter == "keras":
        name = options.get("name", "")
        cached = Path(_keras_home()) / "datasets" / KERAS_CACHE.get(name, name)
        return (
            (True, f"yes (cached: {cached})")
            if cached.exists()
            else (False, f"no: `make download DATASET={name}` fetches it to {cached.parent}")
        )
    if card.adapter == "tfds":
        root = Path(
            os.path.expanduser(options.get("data_dir") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
        )
        prepared = root / str(options.get("name", "")).split(":")[0]
        return (
            (True, f"yes (prepared: {prepared})")
            if prepared.exists()
            else (False, f"no: `make download DATASET={name}` prepares it in {root}")
        )
    option = PATH_OPTION.get(card.adapter)
    if option is None or option not in options:
        return False, "? (custom adapter: run `make check-data`)"
    path = Path(os.path.expanduser(str(options[option])))
    path = path if path.is_absolute() else Path(base) / path
    if path.is_dir() and any(path.iterdir()) or path.is_file():
        return True, f"yes ({_display(path)})"
    return False, f"no: expected at {_display(path)}"


def _keras_home():
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _display(path):
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def format_table(rows, columns):
    """Plain left-aligned columns: header, rule, one line per row."""
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def list_cli(args, papers_dir=None, datasets_dir=None):
    papers, datasets = paper_rows(papers_dir), dataset_rows(datasets_dir)
    log.info(f"Paper cards ({len(papers)}) in {_display(papers_dir or cards.PAPERS_DIR)}:")
    log.info(format_table(papers, ["name", "paper", "year", "backbone", "reported"]))
    log.info(f"\nDataset cards ({len(datasets)}) in {_display(datasets_dir or cards.DATASETS_DIR)}:")
    log.info(format_table(datasets, ["name", "adapter", "classes", "images", "data"]))
    log.info(
        "\nmake all PAPER=<paper> DATASET=<dataset>  |  make new-paper NAME=x [FROM=card]  |  make new-dataset NAME=y DATA=path"
    )
    return 0


# ------------------------------------------------------------------ new-paper


def new_paper_cli(args, papers_dir=None):
    papers_dir = Path(papers_dir or cards.PAPERS_DIR)
    name, target = new_card_path(papers_dir, args.name, "new-paper", "make new-paper NAME=smith2021 [FROM=kermany2018]")
    source = _source_card(args.from_card, papers_dir) if getattr(args, "from_card", None) else None
    text = paper_card_text(name, source)
    _write_new(target, text)
    origin = f"the recipe of {source.stem}" if source else "the template's starter recipe"
    log.info(f"wrote {_display(target)} from {origin}")
    log.info("next: fill in citation and reported from the paper, correct the recipe, and delete from `assumed`")
    log.info(
        f"every key you find stated in the paper; then `make validate PAPER={name}` and `make train PAPER={name} DATASET=...`"
    )
    return 0


def _source_card(name_or_path, papers_dir):
    """--from: a path, or a card name in the target folder or else in the shipped library."""
    error = None
    for folder in dict.fromkeys([Path(papers_dir), cards.PAPERS_DIR]):
        try:
            return cards.find_card(name_or_path, folder, "paper")
        except UserError as problem:
            error = problem
    raise error


def paper_card_text(name, source=None):
    """The commented card text: the starter recipe, or the recipe of the card at `source`."""
    import jinja2

    starter = cards.validate(Paper, STARTER, "the starter recipe").model_dump(mode="json")
    if source is None:
        values = starter
        origin = "the template's starter recipe (a generic two-stage transfer-learning setup)"
    else:
        paper = cards.validate(Paper, cards.read_yaml(source), source)
        values = paper.model_dump(mode="json")
        origin = f"the recipe of {source.stem} ({_short_citation(paper.citation)}, {paper.citation.year})"
        keep_out = ("citation", "summary", "intended_use", "target_accuracy")  # the other paper's, not the recipe
        values.update({key: starter[key] for key in keep_out}, caveats=[])
        values["search"] = values["search"] or starter["search"]
    for param in values["search"]["space"].values():
        if param.get("sampling") == "linear":  # the default: keep the card short
            del param["sampling"]
    values["reported"] = []
    values["assumed"] = _new_assumed(values)
    covered = {
        "citation",
        "reported",
        "summary",
        "caveats",
        "intended_use",
        "seed",
        "model",
        "training",
        "augmentation",
        "augmentation_strength",
        "target_accuracy",
        "search",
        "assumed",
    }
    extra = {k: v for k, v in values.items() if k not in covered}  # sections added to the schema later
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        finalize=_yaml_value,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    text = environment.get_template("paper_card.yaml").render(
        name=_Raw(name),
        origin=_Raw(origin),
        date=_Raw(datetime.date.today().isoformat()),
        backbones=_Raw(", ".join(sorted(BACKBONES))),
        extra=extra,
        **values,
    )
    cards.validate(Paper, yaml.safe_load(text), f"new card {name} (a bug in project/templates/paper_card.yaml)")
    return text


def _new_assumed(values):
    keys = list(RECIPE_KEYS)
    if values["model"]["backbone"] == "scratch":
        keys.insert(keys.index("model.head") + 1, "model.scratch")
    if values["model"]["backbone"] in WIDTH_MULTIPLIER:
        keys.insert(keys.index("model.input_size") + 1, "model.width")
    if values["training"]["optimizer"] in ("momentum", "nesterov", "rmsprop"):
        keys.insert(keys.index("training.learning_rate") + 1, "training.momentum")
    covered = lambda key: any(key == k or key.startswith(k + ".") for k in keys)  # noqa: E731
    return keys + [k for k in values.get("assumed", []) if not covered(k)]


class _Raw(str):
    """Text the template inserts as is, e.g. in comments (everything else is written as YAML)."""


def _yaml_value(value):
    """A value as inline (flow-style) YAML, for the template's {{ ... }}."""
    if isinstance(value, _Raw):
        return value
    dumped = yaml.safe_dump(
        [_without_none(value)], default_flow_style=True, width=10**6, allow_unicode=True, sort_keys=False
    )
    return dumped.strip()[1:-1]


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _write_new(target, text):
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "x", encoding="utf-8") as handle:  # "x": fails if it appeared meanwhile
            handle.write(text)
    except FileExistsError:
        raise UserError(f"{target} already exists; the command never overwrites a card") from None


# ------------------------------------------------------------------ new-dataset


def new_dataset_cli(args, datasets_dir=None):
    datasets_dir = Path(datasets_dir or cards.DATASETS_DIR)
    name, target = new_card_path(
        datasets_dir, args.name, "new-dataset", "make new-dataset NAME=mydata DATA=path/to/images [ADAPTER=folder]"
    )
    adapter = args.adapter or "folder"
    options = dataset_options(adapter, args.path, getattr(args, "overrides", []), datasets_dir)
    scan = scan_dataset(adapter, options, datasets_dir)
    text = dataset_card_text(name, adapter, options, scan)
    _write_new(target, text)
    log.info(summary_text(scan))
    log.info(f"\nwrote {_display(target)}: fill in description, source and license, check `split`, then")
    log.info(f"`make check-data DATASET={name}` and `make all PAPER=... DATASET={name}`")
    return 0


def dataset_options(adapter, path, overrides, datasets_dir):
    """The adapter options: --path as the adapter's path option (relative to the card's folder when
    inside it), plus `--set key=value` for any other option (e.g. sep=whitespace, header=false)."""
    if adapter not in PATH_OPTION:
        raise UserError(
            f"new-dataset --adapter {adapter!r}: accepted: {', '.join(PATH_OPTION)} "
            f"(a custom adapter's card is written by hand: see datasets/README.md)"
        )
    options = {}
    option = PATH_OPTION[adapter]
    if option == "name":
        if not path:
            raise UserError(
                f"new-dataset --adapter {adapter} needs the dataset's name as --path (make new-dataset NAME=y ADAPTER={adapter} DATA=cifar10)"
            )
        options["name"] = path
    elif option:
        if not path:
            raise UserError(
                f"new-dataset needs the data's location: make new-dataset NAME=y DATA=path/to/{'images' if adapter == 'folder' else 'file'}"
            )
        resolved = Path(os.path.expanduser(path)).resolve()
        if not resolved.exists():
            raise UserError(f"new-dataset --path {path}: {resolved} does not exist")
        try:
            options[option] = resolved.relative_to(Path(datasets_dir).resolve()).as_posix()
        except ValueError:
            options[option] = str(resolved)
    for text in overrides or []:
        key, value = cards.parse_override(text)
        options[key.removeprefix("options.")] = value
    return options


def scan_dataset(adapter, options, base):
    """Load the data through its adapter and look at every image: classes, counts, formats, sizes, problems."""
    from project.data.adapters import load_sources

    sources = load_sources(adapter, options, base)
    names = sources.class_names
    labels = sources.labels
    scan = {
        "adapter": adapter,
        "classes": list(names),
        "kind": sources.kind,
        "subsets": None,
        "problems": [],
        "notes": [],
        "formats": Counter(),
        "modes": Counter(),
        "sizes": [],
    }
    readable = _scan_images(sources, scan)
    labels = labels[readable]
    scan["num_images"] = int(len(labels))
    scan["counts"] = {n: int((labels == i).sum()) for i, n in enumerate(names)}
    if sources.subsets is not None:
        subsets = sources.subsets[readable]
        scan["subsets"] = {
            s: {n: int(((labels == i) & (subsets == s)).sum()) for i, n in enumerate(names)}
            for s in ("train", "val", "test")
            if (subsets == s).any()
        }
    if adapter == "folder":
        _scan_folder(
            Path(options["path"]) if Path(options["path"]).is_absolute() else Path(base) / options["path"], names, scan
        )
    _check_counts(scan)
    return scan


def _scan_images(sources, scan):
    """Open every image with Pillow (header only); returns a mask of the readable ones."""
    import io

    import numpy as np
    from PIL import Image

    readable = np.ones(len(sources.labels), dtype=bool)
    if sources.kind == "array":
        images = sources.items
        scan["formats"]["array"] = len(images)
        scan["modes"][f"{images.shape[-1]} channel(s)"] = len(images)
        scan["sizes"] = [(images.shape[2], images.shape[1])]
        return readable
    unreadable = []
    for index, (item, ident) in enumerate(zip(sources.items, sources.ids)):
        if sources.kind == "files":
            scan["formats"][Path(item).suffix.lower()] += 1
        try:
            with Image.open(item if sources.kind == "files" else io.BytesIO(item)) as image:
                scan["sizes"].append(image.size)
                scan["modes"][image.mode] += 1
                if sources.kind == "encoded":
                    scan["formats"][(image.format or "?").lower()] += 1
        except Exception:  # Pillow raises many kinds for a broken or non-image file
            unreadable.append(str(ident))
            readable[index] = False
    if unreadable:
        scan["problems"].append(
            f"{len(unreadable)} unreadable image(s), not counted (Pillow cannot open them; "
            f"training skips them): " + ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        )
    return readable


def _scan_folder(root, names, scan):
    from project.data.adapters import IMAGE_EXTENSIONS, SUBSET_NAMES

    children = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    presplit = bool(children) and all(p.name.lower() in SUBSET_NAMES for p in children)
    tops = children if presplit else [root]
    empty = []
    for top in tops:
        for class_dir in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in class_dir.rglob("*")):
                empty.append(class_dir.relative_to(root).as_posix() + "/")
    if empty:
        scan["problems"].append(f"{len(empty)} class folder(s) without images (ignored): {', '.join(empty[:10])}")
    skipped = Counter(
        f.suffix.lower() or "(no extension)"
        for f in root.rglob("*")
        if f.is_file() and f.suffix.lower() not in IMAGE_EXTENSIONS and not f.name.startswith(".")
    )
    if skipped:
        scan["notes"].append(
            f"{sum(skipped.values())} non-image file(s) skipped: "
            + ", ".join(f"{ext} {n}" for ext, n in skipped.most_common(5))
        )
    scan["layout"] = (
        "train/ val/ test/ sub-folders, each with one folder per class" if presplit else "one folder per class"
    )


def _check_counts(scan):
    counts = scan["counts"]
    small = [n for n, c in counts.items() if c < 10]
    if small:
        scan["problems"].append(
            f"{len(small)} class(es) with fewer than 10 images (too few to split and evaluate): {', '.join(small[:10])}"
        )
    low, high = min(counts.values()), max(counts.values())
    if low and high / low >= 3:
        scan["notes"].append(
            f"imbalanced: the largest class has {high / low:.1f}x the images of the smallest "
            f"(compare macro F1; training.class_weight: auto is an option)"
        )
    subsets = scan["subsets"]
    if subsets is not None:
        if "test" not in subsets:
            scan["problems"].append(
                "pre-split data without a test subset: the split section needs val/test fractions instead"
            )
        val = subsets.get("val")
        if val is None:
            scan["notes"].append("no val subset: val is carved from train")
        elif min(val.values()) < 10:
            scan["val_from_train"] = True
            scan["notes"].append(
                f"the provided val subset is tiny ({sum(val.values())} images): "
                f"split.val_from_train carves val from train instead"
            )


def summary_text(scan):
    lines = [f"{scan['num_images']:,} images in {len(scan['classes'])} classes ({scan['adapter']} adapter)"]
    width = max(len(n) for n in scan["classes"])
    subsets = scan["subsets"]
    for name in scan["classes"][:50]:
        per = f"  ({', '.join(f'{s} {c[name]}' for s, c in subsets.items())})" if subsets else ""
        lines.append(f"  {name.ljust(width)}  {scan['counts'][name]:>7,}{per}")
    if len(scan["classes"]) > 50:
        lines.append(f"  ... and {len(scan['classes']) - 50} more classes")
    lines.append(f"formats: {_counter_text(scan['formats'])}; modes: {_counter_text(scan['modes'])}")
    lines.append(f"image sizes (width x height): {resolution_text(scan['sizes'])}")
    for problem in scan["problems"]:
        lines.append(f"PROBLEM: {problem}")
    for note in scan["notes"]:
        lines.append(f"note: {note}")
    if not scan["problems"]:
        lines.append("problems found: none")
    return "\n".join(lines)


def _counter_text(counter):
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common()) or "-"


def resolution_text(sizes):
    if not sizes:
        return "unknown"
    distinct = set(sizes)
    if len(distinct) == 1:
        w, h = sizes[0]
        return f"{w}x{h}"
    widths, heights = sorted(s[0] for s in sizes), sorted(s[1] for s in sizes)
    return (
        f"variable: width {widths[0]}-{widths[-1]}, height {heights[0]}-{heights[-1]} "
        f"(median {widths[len(widths) // 2]}x{heights[len(heights) // 2]})"
    )


def dataset_card_text(name, adapter, options, scan):
    """The dataset card: the scan's findings as card fields, TODOs for what a scan cannot know."""
    split = {"val": 0.15, "test": 0.15, "seed": 0}
    if scan["subsets"] is not None and "test" in scan["subsets"]:
        split = {"provided": True, "val": 0.1, "seed": 0}
        if scan.get("val_from_train"):
            split["val_from_train"] = True
    header = [
        f"# Dataset card written by `make new-dataset` on {datetime.date.today().isoformat()} from a scan of the data.",
        "# Fill in description, source and license; check `split`; `make check-data DATASET=" + name + "` scans again.",
        "#",
        *[f"# {line}" if line else "#" for line in summary_text(scan).splitlines()],
    ]
    fields = {
        "description": "TODO: what the images show, who made them, how they were labelled",
        "source": "TODO: where to download it (URL or DOI, version)",
        "license": "TODO: licence of the data, e.g. CC BY 4.0",
        "num_classes": len(scan["classes"]),
        "num_images": scan["num_images"],
        "resolution": resolution_text(scan["sizes"]),
        "layout": _layout_text(adapter, options, scan),
        "adapter": adapter,
        "options": options,
        "split": split,
        "classes": scan["classes"],
    }
    body = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)
    text = "\n".join(header) + "\n" + body
    cards.validate(Dataset, yaml.safe_load(text), f"new card {name}")
    return text


def _layout_text(adapter, options, scan):
    if adapter == "folder":
        return f"{options['path']}/: {scan.get('layout', 'one folder per class')}"
    if adapter == "csv":
        return f"manifest {options['manifest']}: one row per image (path, label)"
    if adapter == "npz":
        return f"{options['path']}: arrays x (images) and y (labels)"
    return f"no files to arrange ({adapter} dataset {options.get('name', '')})"
