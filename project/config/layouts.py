"""The dataset card's layout keys, checked before any file is read: the built-in adapters'
{subset: path} options (folder `subsets`, csv `manifests`) and `label_map` (a mapping raw label
-> class, or a list of bins grading numeric labels; project/data/label_map.py applies it).
Used by the Dataset schema (project/config/schema.py) and by the adapters."""

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SUBSETS = ("train", "val", "test")
DROP = "_drop"  # a label_map target: leave these images out


class Bin(BaseModel):
    """One grade of numeric labels: the values above the previous bin's max, up to this max."""

    model_config = ConfigDict(extra="forbid")
    max: float = Field(description="the largest value in this grade (inclusive)")
    name: str = Field(min_length=1, description=f"the class of these values, or {DROP} to leave them out")


def subset_map_problem(option, value):
    """What is wrong with a {subset: path} adapter option (folder `subsets`, csv `manifests`), or ''."""
    if not isinstance(value, dict) or not value:
        return f"{option}: give a mapping of subset to path, e.g. {{train: train_folder, test: test_folder}}"
    unknown = [key for key in value if key not in SUBSETS]
    if unknown:
        return f"{option}: unknown subset {', '.join(map(repr, unknown))}; accepted: {', '.join(SUBSETS)}"
    if "train" not in value:
        return f"{option}: needs a train entry (the images to train on); accepted subsets: {', '.join(SUBSETS)}"
    for key, path in value.items():
        if not isinstance(path, str) or not path.strip():
            return f"{option}.{key}: give a path relative to the card's folder, got {path!r}"
    return ""


def options_problem(adapter, options):
    """What is wrong with the built-in adapters' {subset: path} options, or ''."""
    if adapter == "csv" and "manifest" in options and "manifests" in options:
        return (
            "manifest and manifests are both set; give manifest (one file for every image) or manifests "
            "(one file per subset, e.g. {train: train.csv, test: test.csv}), not both"
        )
    if adapter == "csv" and "manifests" in options and options.get("split_column") is not None:
        return "manifests and split_column are both set: with manifests the file a row is in is its subset"
    option = {"folder": "subsets", "csv": "manifests"}.get(adapter)
    return subset_map_problem(option, options[option]) if option in options else ""


def read_label_map(value):
    """A card's label_map as the adapters name raw labels (a YAML number 1.0 is the label '1'):
    a dict of text, or a list of Bin in rising order. ValueError says what is wrong."""
    if value is None:
        return None
    if isinstance(value, dict):
        if not value:
            raise ValueError("empty; give raw label: class pairs, or remove label_map")
        mapped = {label_text(k): label_text(v) for k, v in value.items()}
        if any(not v for v in mapped.values()):
            raise ValueError(f"every raw label needs a class name (or {DROP}); got {value}")
        return mapped
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"give a mapping (raw label: class, or {DROP}) or a list of bins [{{max: 0.5, name: low}}, ...]"
        )
    bins = [_bin(i, item) for i, item in enumerate(value)]
    maxes = [b.max for b in bins]
    if maxes != sorted(set(maxes)):
        raise ValueError(f"bins must rise: each max above the one before, got {maxes}")
    named = [b.name for b in bins if b.name != DROP]
    if len(set(named)) != len(named):
        raise ValueError(f"bin names must differ (except {DROP}), got {named}")
    return bins


def mapped_classes_problem(label_map, classes):
    """What is wrong with the classes a label_map produces (fewer than 2, or not the card's), or ''."""
    targets = [b.name for b in label_map] if isinstance(label_map, list) else label_map.values()
    produced = set(targets) - {DROP}
    if len(produced) < 2:
        return f"it leaves {len(produced)} class(es) ({', '.join(produced)}); a classifier needs 2"
    if classes is not None and set(classes) != produced:
        return (
            f"the card's classes must list the mapped classes, in the order wanted: {sorted(produced)}; got {classes}"
        )
    return ""


def _bin(index, item):
    try:
        return Bin.model_validate(item)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"bin {index}{f' {where}' if where else ''}: {first['msg']} (got {item!r})") from None


def number_name(value):
    """A number as a label's name, as the adapters and label_map write it: 1.0 -> '1', 0.5 -> '0.5'."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def label_text(value):
    """A label as text: numbers in their shortest form (YAML reads 1.0 and 1 as numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).strip() if value is not None else ""
    return number_name(value)
