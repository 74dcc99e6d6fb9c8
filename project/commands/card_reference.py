"""`make card-reference`: every key a paper card and a dataset card may hold, as Markdown tables
generated from the card schema (project/config/schema.py: types, ranges, defaults, descriptions)
and the built-in adapters' signatures, written into README.md between two markers.

The tables are never edited by hand: tests/test_card_reference.py fails while the README differs
from what this module generates, so a new key is documented by running `make card-reference`.
Nothing here imports TensorFlow.
"""

import inspect
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from project import logs
from project.artifacts import atomic_write
from project.config.schema import ADAPTER_NAMES, SEARCHABLE, Dataset, Paper, Recorded, model_in
from project.errors import UserError
from project.paths import REPO_ROOT

log = logs.get(__name__)

START = "<!-- card-reference:start -->"
END = "<!-- card-reference:end -->"
README = REPO_ROOT / "README.md"

# What a key accepts when its type alone does not say (a name checked against a table)
ACCEPTED = {
    "adapter": f"{', '.join(f'`{n}`' for n in ADAPTER_NAMES)}, or `path/to/file.py:function` inside the repository",
    "search.objective": ", ".join(f"`{n}`" for n in typing.get_args(Recorded)),
    "search.space": "hyperparameter name -> range: " + ", ".join(f"`{n}`" for n in SEARCHABLE),
}

# The built-in adapters' options (their keyword arguments): adapter -> option -> description
ADAPTER_OPTIONS = {
    "folder": {
        "path": "the folder: one sub-folder per class, or train/ val/ test/ each with class folders",
        "subsets": "subset -> folder under path holding its class folders ({train: seg_train/seg_train, test: ...}); "
        "other folders are not read",
    },
    "csv": {
        "manifest": "the manifest file (one row per image)",
        "manifests": "one manifest per subset ({train: trainval.txt, test: test.txt}), each read with the other "
        "options; not with manifest or split_column",
        "sep": "column separator (any pandas separator), or `whitespace` for runs of spaces and tabs",
        "header": "whether the first line names the columns",
        "path_column": "the column of image paths: a name, or a position from 0",
        "label_column": "the column of labels: a name, or a position from 0; numeric labels become classes in sorted order",
        "split_column": "a column of train / val / test per row (then split: provided)",
        "root": "the folder image paths are relative to (default: the manifest's folder)",
        "comment": "lines starting with this text are skipped",
        "path_suffix": "appended to every path (e.g. `.jpg` for lists that omit the extension)",
    },
    "npz": {
        "path": "the .npz file",
        "x": "the array of images (N, H, W[, C]), uint8 0-255 or float 0-1",
        "y": "the array of integer labels (N)",
    },
    "keras": {"name": "mnist, fashion_mnist, cifar10 or cifar100 (keras.datasets)"},
    "tfds": {
        "name": "a TensorFlow Datasets name",
        "splits": "subset -> TFDS split name ({train: train, val: validation, test: test}); default: those that exist",
        "data_dir": "where TFDS keeps its files (default: ~/tensorflow_datasets)",
    },
}

NAMES = {int: "integer", float: "number", str: "text", bool: "true / false", typing.Any: "any value"}


def accepted(annotation):
    """What a type accepts, in words: `avg`, `max`; integer or text; list of integers."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        parts = [accepted(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or `null`" if type(None) in args else "")
    if origin is list:
        return f"list of {_plural(accepted(args[0]))}"
    if origin is dict:
        return f"mapping of {accepted(args[0])} to {accepted(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (keys below)"
    return NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text):
    plurals = {
        "integer": "integers",
        "number": "numbers",
        "any value": "values",
        "mapping (keys below)": "mappings (keys below)",
    }
    return plurals.get(text, text)


def value_range(field):
    """'0 <= value < 1', 'at least 1 item', ... from the field's constraints."""
    kinds = ("ge", "gt", "le", "lt", "min_length")
    bounds = {kind: getattr(item, kind) for item in field.metadata for kind in kinds if hasattr(item, kind)}
    lower = f"{bounds['ge']:g} <= " if "ge" in bounds else f"{bounds['gt']:g} < " if "gt" in bounds else ""
    upper = f" <= {bounds['le']:g}" if "le" in bounds else f" < {bounds['lt']:g}" if "lt" in bounds else ""
    text = f"{lower}value{upper}" if lower or upper else ""
    if "min_length" in bounds:
        text = (
            f"at least {bounds['min_length']} {'item' if typing.get_origin(field.annotation) is list else 'character'}"
        )
    return text


def default_text(field):
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(keys below)"
    return f"`{_flow(value)}`"


def _flow(value):
    """A value as a card would write it (YAML flow style), shortened when long."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list):
        text = "[" + ", ".join(_flow(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    elif value is None or isinstance(value, bool):
        text = {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, str):
        text = value if value else '""'
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def description(field, model):
    """The field's description, else the first sentence of its section's docstring."""
    if field.description:
        return field.description
    doc = inspect.cleandoc(model.__doc__ or "") if model is not None else ""
    return " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".") if doc else ""


def rows(model, prefix=""):
    """(key, accepted, default, description) of every key of `model`, sections before their keys."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = model_in(field.annotation)
        kinds = ACCEPTED.get(key) or accepted(field.annotation)
        limits = value_range(field)
        yield key, f"{kinds}; {limits}" if limits else kinds, default_text(field), description(field, section)
        if section is not None:
            yield from rows(section, key + _joint(field.annotation))


def _joint(annotation):
    """How a section's keys continue its key: `.` (a mapping), `[].` (a list), `.<name>.` (named entries)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _joint(next(a for a in args if model_in(a) is not None))
    if origin is list:
        return "[]."
    if origin is dict:
        return ".<name>."
    return "."


def table(header, lines):
    cells = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells)


def adapter_rows():
    """(adapter, option, default, description) of every built-in adapter's options."""
    from project.data.adapters import ADAPTERS

    for adapter, function in ADAPTERS.items():
        for name, parameter in inspect.signature(function).parameters.items():
            if name in ("base", "classes"):
                continue
            default = "required" if parameter.default is inspect.Parameter.empty else f"`{_flow(parameter.default)}`"
            yield f"`{adapter}`", f"`options.{name}`", default, ADAPTER_OPTIONS.get(adapter, {}).get(name, "")


def reference(paper=Paper, dataset=Dataset):
    """The Markdown that goes between the README's markers."""
    header = ["key", "accepts", "default", "what it is"]

    def keyed(model):
        return [(f"`{key}`", *rest) for key, *rest in rows(model)]

    return "\n\n".join(
        [
            "Generated from `project/config/schema.py` by `make card-reference`; do not edit by hand. "
            "`a[].b`: key `b` of each item of the list `a`; `a.<name>.b`: of each named entry.",
            "**Paper card** (`project/papers/<name>.yaml`)",
            table(header, keyed(paper)),
            "**Dataset card** (`datasets/<name>.yaml`)",
            table(header, keyed(dataset)),
            "**Adapter options** (the dataset card's `options`; a custom adapter takes its function's keyword arguments)",
            table(["adapter", "option", "default", "what it is"], list(adapter_rows())),
        ]
    )


def undocumented(paper=Paper, dataset=Dataset):
    """Keys and adapter options without a description."""
    keys = [key for model in (paper, dataset) for key, _, _, text in rows(model) if not text]
    return keys + [
        f"options.{option.strip('`').split('.', 1)[1]} ({a.strip('`')})"
        for a, option, _, text in adapter_rows()
        if not text
    ]


def section(text, path):
    """The part of `text` between the markers (exclusive); a UserError naming `path` without them."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise UserError(f"{path}: needs one {START} line and, after it, one {END} line around the card reference")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n")


def write(path=README):
    """Replace the README's card reference with the generated one; True when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    section(text, path)
    start, end = text.index(START) + len(START), text.index(END)
    updated = f"{text[:start]}\n\n{reference()}\n\n{text[end:]}"
    if updated == text:
        return False
    atomic_write(path, updated)
    return True


def cli(args):
    path = Path(args.output or README)
    changed = write(path)
    log.info(f"{'updated' if changed else 'already up to date:'} the card reference in {path}")
    return 0
