"""One validation of the cards, run by every command that takes them before anything heavy:
whatever a later stage would refuse that can be decided without building the model.

load_config has already applied the schema (types, ranges, known keys), the backbone table
(name, minimum input size) and the adapter name; this adds the checks of the other layers.
"""

from project import logs
from project.config.cards import load_config
from project.data.augment import build_augmentation
from project.tune.search_check import check_search

log = logs.get(__name__)


def validate(config):
    """Raise a UserError naming the file and key of the first problem; return the config."""
    transforms = [t.model_dump() for t in config.paper.augmentation]
    build_augmentation(transforms, 1.0, source=config.paper_file)  # names and arguments, by albumentations itself
    check_search(config, required=False)  # the search space as tune will run it
    return config


def load(paper, dataset, overrides=()):
    """The cards as a validated config (no TensorFlow)."""
    return validate(load_config(paper, dataset, overrides))


def cli(config, args):
    log.info(f"ok: {config.paper_file} and {config.dataset_file} are valid")
    return 0
