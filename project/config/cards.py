"""Cards -> config: find and read the YAML cards, apply `--set` overrides, validate.

Errors name the file, the dotted key and what would be accepted, in one line each.
"""

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from project.config.schema import Config, Dataset, Paper, Training, model_in
from project.errors import UserError
from project.paths import DATASETS_DIR, PAPERS_DIR


def available(folder):
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def find_card(name_or_path, folder, kind):
    """A card by name (`folder/<name>.yaml`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"{kind} card {path} does not exist")
        return path
    path = Path(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(
            f"no {kind} card named {name_or_path!r} in {folder}; available: {', '.join(available(folder)) or '(none)'}"
        )
    return path


def read_yaml(path):
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        if isinstance(error, yaml.constructor.ConstructorError):  # e.g. !!python/object: never constructed
            raise UserError(
                f"{path}:{where}: YAML tags that build objects are refused (cards are plain data, read "
                f"with yaml.safe_load): {getattr(error, 'problem', error)}"
            ) from None
        raise UserError(f"{path}:{where} is not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a card must be a YAML mapping of keys to values")
    return data


def parse_override(text):
    """'training.epochs=3' -> ('training.epochs', 3); the value is read as YAML, never evaluated."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. training.learning_rate=0.01")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(data, key, value):
    """Set data['a']['b'][0]... for 'a.b.0'; list indices may be negative."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, key)]
            continue
        if node.get(part) is None:  # absent, or an optional section that is off (null): a new section
            node[part] = {}
        if not isinstance(node[part], (dict, list)):
            raise UserError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    else:
        node[last] = value


def _index(items, part, key):
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise UserError(f"--set {key}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def validate(schema, data, source):
    """Validate a dict against a pydantic schema; one line per problem, naming the key."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise UserError(format_errors(error, schema, source)) from None


def format_errors(error, schema, source):
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _fields_at(schema, loc[:-1])
            message = f"unknown key; allowed here: {', '.join(allowed)}" if allowed else "unknown key"
        else:
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] not in ("missing",) and "input" in item and not isinstance(item["input"], (dict, list)):
                message += f" (got {item['input']!r})"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def _fields_at(schema, loc):
    model = schema
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            if part.isdigit():
                continue
            return []
        model = model_in(field.annotation)
    return sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def pin_steps_batch_size(paper_data):
    """A card that counts in steps counts them at its own batch size: pin it before any --set, so that
    `--set training.batch_size=64` keeps the paper's number of images seen (Training fills it otherwise)."""
    training = paper_data.get("training")
    if not isinstance(training, dict) or training.get("steps_batch_size") is not None:
        return
    stages = training.get("stages") if isinstance(training.get("stages"), list) else []
    if training.get("warmup_steps") or any(isinstance(s, dict) and s.get("steps") for s in stages):
        training["steps_batch_size"] = training.get("batch_size", Training.model_fields["batch_size"].default)


def load_config(paper="demo", dataset="digits", overrides=()):
    """Read both cards, apply overrides (`paper.` or `dataset.` prefix optional), validate; a
    weights file is resolved from the paper card's folder (with_weights_file)."""
    paper_path = find_card(paper, PAPERS_DIR, "paper")
    dataset_path = find_card(dataset, DATASETS_DIR, "dataset")
    paper_data, dataset_data = read_yaml(paper_path), read_yaml(dataset_path)
    pin_steps_batch_size(paper_data)
    paper_fields, dataset_fields = set(Paper.model_fields), set(Dataset.model_fields)
    for text in overrides:
        key, value = parse_override(text)
        head = key.split(".", 1)[0]
        if head == "dataset" and key.count("."):
            set_dotted(dataset_data, key.split(".", 1)[1], value)
        elif head == "paper" and key.count("."):
            set_dotted(paper_data, key.split(".", 1)[1], value)
        elif head in paper_fields:
            set_dotted(paper_data, key, value)
        elif head in dataset_fields:
            set_dotted(dataset_data, key, value)
        else:
            raise UserError(
                f"--set {key}: unknown key {head!r}; paper card keys: {', '.join(sorted(paper_fields))}; "
                f"dataset card keys (prefix with dataset.): {', '.join(sorted(dataset_fields))}"
            )
    where = " (after --set)" if overrides else ""
    return Config(
        paper_name=paper_path.stem,
        dataset_name=dataset_path.stem,
        paper_file=str(paper_path),
        dataset_file=str(dataset_path),
        paper=with_weights_file(validate(Paper, paper_data, f"{paper_path}{where}"), paper_path, where),
        dataset=validate(Dataset, dataset_data, f"{dataset_path}{where}"),
        overrides=list(overrides),
    )


def with_weights_file(paper, card_path, where=""):
    """model.weights naming a file: resolved from the paper card's folder (as a dataset card's
    paths are from its folder) to an absolute path, which every later step uses as it is; a file
    that is not there is refused now, naming the path looked at, before anything is built."""
    weights = paper.model.weights
    if weights == "imagenet" or weights.lower() == "none":
        return paper
    path = Path(os.path.expanduser(weights))
    path = Path(os.path.abspath(path if path.is_absolute() else Path(card_path).parent / path))
    if not path.is_file():
        raise UserError(
            f"{card_path}{where}: model.weights: weights file {path} does not exist (a relative path is read from "
            f"the paper card's folder; accepted: imagenet, none, or the path of a Keras weights file)"
        )
    return paper.model_copy(update={"model": paper.model.model_copy(update={"weights": str(path)})})


def with_values(config, values):
    """A copy of the config with paper-card keys replaced ({'training.batch_size': 64, ...})."""
    data = config.paper.model_dump(mode="json")
    for key, value in values.items():
        set_dotted(data, key, value)
    paper = validate(Paper, data, f"{config.paper_name} (with {values})")
    return config.model_copy(update={"paper": paper})


# what describes a card rather than what it trains: editing these never invalidates a run
DESCRIPTIVE = {
    "paper": {
        "citation",
        "reported",
        "summary",
        "caveats",
        "intended_use",
        "target_accuracy",
        "search",
        "assumed",
        "report",
    },
    "dataset": {"description", "source", "license", "num_classes", "num_images", "resolution", "layout"},
}


def recipe(resolved):
    """The part of a resolved config (as a dict) that decides what a training run produces. It is
    validated first, so a file written before a key existed has that key at its default, as now."""
    try:
        resolved = Config.model_validate(resolved).model_dump(mode="json")
    except ValidationError:
        pass  # compared as it is: a file this schema refuses never matches a valid config
    return {
        part: {k: v for k, v in resolved.get(part, {}).items() if k not in DESCRIPTIVE[part]}
        for part in ("paper", "dataset")
    }


def resolved_yaml(config):
    """The fully resolved configuration, as written next to every run's outputs."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
