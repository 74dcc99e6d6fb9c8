"""The card's search section checked as the search will run it, without TensorFlow: `validate`
(every command that takes cards) and `tune` share this one check."""

from typing import get_args

from project.config.cards import with_values
from project.config.schema import SEARCHABLE, Recorded, accepted_range
from project.errors import UserError
from project.tune.search_space import card_space, card_values, decode

OBJECTIVES = get_args(Recorded)  # what every trial's history holds


def check_search(config, required=True):
    """(search, space): the card's search section as a space, every end of every range checked
    against the schema. A card without a search section is an error when `required`, else (None, {})."""
    search, source = config.paper.search, config.paper_file
    if search is None:
        if not required:
            return None, {}
        raise UserError(
            f"{source}: the paper card has no search section (objective, coarse, fine and space; see project/papers/demo.yaml)"
        )
    if search.objective not in OBJECTIVES:
        raise UserError(
            f"{source}: search.objective {search.objective!r} is not recorded per epoch; accepted: {', '.join(OBJECTIVES)}"
        )
    try:
        space = card_space(search)  # refuses ranges for categorical and fractions for whole-number hyperparameters
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    for name, entry in space.items():
        for value in ends(entry):
            _check_end(config, space, name, decode(entry, value), value)
    trial_folds(config)
    return search, space


def trial_folds(config):
    """How many of the split's folds score a trial (search.folds; default 1: fold 1's split), checked
    against the dataset card's split.folds."""
    wanted, folds = config.paper.search.folds, config.dataset.split.folds
    if wanted is None:
        return 1
    if not folds:
        raise UserError(
            f"{config.paper_file}: search.folds is {wanted}, but the dataset card {config.dataset_file} has no "
            f"split.folds: set split.folds (e.g. --set split.folds={wanted}), or drop search.folds"
        )
    if wanted > folds:
        raise UserError(
            f"{config.paper_file}: search.folds is {wanted}, more than the {folds} folds of the dataset card's "
            f"split.folds; accepted: 2 to {folds}"
        )
    return wanted


def require_test(config):
    """The search chooses hyperparameters on val, so only a test subset apart from every fold judges
    the tuned model fairly: refused with split.test 0."""
    if not config.dataset.split.has_test:
        raise UserError(
            f"{config.dataset_file}: split.test is 0, so there is no held-out test subset, and make tune needs one: "
            f"the folds choose checkpoints and hyperparameters, so only a test subset kept apart can judge the tuned "
            f"model. Set split.test (e.g. --set split.test=0.2), or train and report without tuning (make train, "
            f"make report)"
        )


def ends(entry):
    """The values a space entry reaches at its ends, as the space holds them (mixed choices as YAML text)."""
    if entry["type"] == "choice":
        return list(entry["choices"])
    if entry["type"] == "fixed":
        return [entry["value"]]
    return [entry["min"], entry["max"]]


def _check_end(config, space, name, shown, value):
    """One end of a range (or one choice), set on the card as a trial would set it."""
    values = card_values(space, {name: value}, len(config.paper.model.head.hidden))
    try:
        with_values(config, values)
    except UserError as error:
        key = SEARCHABLE[name]
        bounds = accepted_range(key)
        detail = str(error).splitlines()[0].split(f"(with {values}): ", 1)[-1].split(": ", 1)[-1]
        raise UserError(
            f"{config.paper_file}: search.space.{name}: {shown!r} is not a valid {key} "
            f"({f'accepted: {bounds}' if bounds else detail})"
        ) from None
