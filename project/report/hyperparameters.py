"""The Hyperparameters section: every value the models were trained with, before and after, where
each baseline value comes from and which searched hyperparameter sets it."""

from pathlib import Path

from project.config.cards import read_yaml
from project.config.schema import SEARCHABLE
from project.report.blocks import MISSING, p, plain, table


def dotted(node, prefix=""):
    """{dotted key: value} of a card's nested sections; list items by index (training.stages.0.epochs),
    each augmentation transform whole (augmentation.0)."""
    flat = {}
    if isinstance(node, dict) and node:
        for key, value in node.items():
            flat.update(dotted(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, list) and node and all(isinstance(n, dict) for n in node):
        for i, item in enumerate(node):
            flat.update({f"{prefix}.{i}": item} if prefix == "augmentation" else dotted(item, f"{prefix}.{i}"))
    else:
        flat[prefix] = node
    return flat


def flatten(paper):
    """The trained-on values of a paper card (a resolved-config dict): seed, model, training, augmentation,
    evaluation (absent from runs made before it existed)."""
    model = dict(paper["model"])
    if model["backbone"] != "scratch":
        model.pop("scratch")
    return {
        "seed": paper["seed"],
        **dotted(model, "model"),
        **dotted(paper["training"], "training"),
        **dotted(paper["augmentation"], "augmentation"),
        "augmentation_strength": paper["augmentation_strength"],
        **dotted(paper.get("evaluation") or {}, "evaluation"),
    }


def _covers(keys, key):
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def card_keys(paper_file):
    """The dotted keys a paper card file sets itself (the rest are the template's defaults)."""
    return set(dotted(read_yaml(paper_file))) if paper_file and Path(paper_file).is_file() else set()


def override_keys(overrides):
    keys = set()
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        keys.add(key.split(".", 1)[1] if key.startswith("paper.") else key)
    return keys


def origin(key, assumed, in_card, overridden):
    """Where a baseline value comes from: a --set override, assumed (the card says so), the paper, or a default."""
    if _covers(overridden, key):
        return "override (--set)"
    if any(key == a or key.startswith(a + ".") for a in assumed):
        return "assumed"
    return "paper" if _covers(in_card, key) else "template default"


def searched_keys(paper):
    space = paper["search"]["space"] if paper["search"] else {}
    stages = len(paper["training"]["stages"])
    return {SEARCHABLE[name].replace(".-1.", f".{stages - 1}."): name for name in space}


def hyperparameters(runs, card, config, best):
    """(blocks, hyperparameters.json); `best`: the tuned run's trial (records.Candidate) or None."""
    before_paper = runs["baseline"][0]["config"]["paper"]
    before = flatten(before_paper)
    after = flatten(runs["tuned"][0]["config"]["paper"]) if runs["tuned"] else None
    keys = list(before) + [k for k in (after or {}) if k not in before]
    searched = searched_keys(before_paper)
    assumed = card.assumed
    in_card = card_keys(config.paper_file)
    overridden = override_keys(runs["baseline"][0]["config"]["overrides"])
    rows, marks, changed = [], [], []
    for key in keys:
        b = plain(before[key]) if key in before else "—"
        a = MISSING if after is None else (plain(after[key]) if key in after else "—")
        is_changed = after is not None and b != a
        if is_changed:
            changed.append(key)
        searched_name = next((n for k, n in searched.items() if key == k or key.startswith(k + ".")), "")
        rows.append([key, b, a, "yes" if is_changed else "", origin(key, assumed, in_card, overridden), searched_name])
        marks.append(is_changed)
    blocks = [
        p(
            "Every value the models were trained with, from each run's `config.resolved.yaml`. "
            "**Changed** rows differ between before and after; **origin** says where the baseline value comes from: "
            "the paper, assumed (the paper card's `assumed` list: the paper does not state it), a template default "
            "(the card does not set it), or a `--set` override; **searched** names "
            "the hyperparameter of the search space that sets it."
        ),
        table(["hyperparameter", "before", "after", "changed", "origin", "searched"], rows, marks),
        p(
            f"{len(changed)} of {len(keys)} values changed by optimisation."
            if after is not None
            else "No tuned run yet: the after column is missing."
        ),
    ]
    data = {
        "before": before,
        "after": after,
        "changed": changed,
        "origin": {k: origin(k, assumed, in_card, overridden) for k in keys},
        "searched": {k: n for k, n in sorted(searched.items())},
        "best_hyperparameters": best.dump() if best else None,
    }
    return blocks, data
