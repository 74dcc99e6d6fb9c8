"""The card library: `make list` and `make new-paper` (`make new-dataset` is in new_dataset.py).

`new-paper` renders project/commands/templates/paper_card.yaml (every field commented with what to look for
in the paper) from a starter recipe or from an existing card; every recipe value it writes is
pre-marked as assumed until the team finds it in its paper. New cards never overwrite one.
Nothing here imports TensorFlow.
"""

import datetime
import os
import re
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

# The option of each adapter that holds the data's location (`new-dataset --path` fills it in).
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
    if card.adapter == "csv" and isinstance(options.get("manifests"), dict):  # one manifest per subset
        paths = [_card_path(manifest, base) for manifest in options["manifests"].values()]
        missing = [path for path in paths if not path.is_file()]
        return (
            (False, f"no: expected at {display(missing[0])}") if missing else (True, f"yes ({display(paths[0])}, ...)")
        )
    option = PATH_OPTION.get(card.adapter)
    if option is None or option not in options:
        return False, "? (custom adapter: run `make check-data`)"
    path = _card_path(options[option], base)
    if path.is_dir() and any(path.iterdir()) or path.is_file():
        return True, f"yes ({display(path)})"
    return False, f"no: expected at {display(path)}"


def _card_path(value, base):
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else Path(base) / path


def _keras_home():
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def display(path):
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
    log.info(f"Paper cards ({len(papers)}) in {display(papers_dir or cards.PAPERS_DIR)}:")
    log.info(format_table(papers, ["name", "paper", "year", "backbone", "reported"]))
    log.info(f"\nDataset cards ({len(datasets)}) in {display(datasets_dir or cards.DATASETS_DIR)}:")
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
    write_new(target, text)
    origin = f"the recipe of {source.stem}" if source else "the template's starter recipe"
    log.info(f"wrote {display(target)} from {origin}")
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
    cards.validate(
        Paper, yaml.safe_load(text), f"new card {name} (a bug in project/commands/templates/paper_card.yaml)"
    )
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


def write_new(target, text):
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "x", encoding="utf-8") as handle:  # "x": fails if it appeared meanwhile
            handle.write(text)
    except FileExistsError:
        raise UserError(f"{target} already exists; the command never overwrites a card") from None
