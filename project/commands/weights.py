"""`make weights` and `make download`: put what a card needs into the local caches, to prepare a
machine that will train offline (copy ~/.keras, or $KERAS_HOME, and ~/tensorflow_datasets over).

Weights are fetched the way training fetches them, by building the card's backbone with
weights="imagenet" at the card's input size, so the cached file is exactly the one training asks for.
"""

from pathlib import Path

from project import logs
from project.errors import UserError

log = logs.get(__name__)


def cli(config, args):
    """Download the ImageNet weights the paper card needs into the Keras cache."""
    m = config.paper.model
    name = config.paper_name
    if m.backbone == "scratch":
        log.info(f"{name}: a from-scratch CNN (model.backbone: scratch) has no pretrained weights: nothing to download")
        return 0
    if m.weights.lower() == "none":
        log.info(f"{name}: model.weights is none (random initialisation): nothing to download")
        return 0
    if m.weights != "imagenet":
        if not Path(m.weights).exists():
            raise UserError(
                f"model.weights: weights file {m.weights} does not exist (accepted: imagenet, none, or a path)"
            )
        log.info(f"{name}: model.weights is the local file {m.weights}: nothing to download")
        return 0
    from project.model.backbones import build_application, weights_cache_dir

    folder = Path(weights_cache_dir())
    before = _files(folder)
    build_application(m.backbone, (*m.input_size, 3), "imagenet", m.width)
    new = sorted(_files(folder) - before)
    what = (
        f"{m.backbone}"
        + (f" (width {m.width:g})" if m.width != 1.0 else "")
        + f" at {m.input_size[0]}x{m.input_size[1]}"
    )
    if new:
        for file in new:
            log.info(f"downloaded {file.name} ({file.stat().st_size / 1e6:.1f} MB) to {folder}")
    else:
        log.info(f"the ImageNet weights of {what} are already in {folder}")
    log.info(f"ready: {name} trains offline here; for another machine copy {folder} (or set KERAS_HOME there)")
    return 0


def _files(folder):
    return set(folder.glob("*")) if folder.exists() else set()


def download_cli(config, args):
    """Fetch a dataset with a programmatic source (keras, tfds); say where to get any other."""
    from project.commands.library import data_status
    from project.config.cards import DATASETS_DIR

    d = config.dataset
    name = config.dataset_name
    base = (
        Path(config.dataset_file).parent if config.dataset_file else DATASETS_DIR
    )  # as project.data.prepare.dataset_base
    if d.adapter == "digits":
        log.info(f"{name}: bundled with scikit-learn: nothing to download")
        return 0
    if d.adapter == "keras":
        from project.data.adapters import load_sources

        sources = load_sources(d.adapter, d.options, base, d.classes, d.label_map)
        log.info(
            f"{name}: keras.datasets.{d.options['name']} is cached ({len(sources):,} images): {data_status(d, base, name)[1]}"
        )
        return 0
    if d.adapter == "tfds":
        folder = _prepare_tfds(d.options)
        log.info(f"{name}: TensorFlow Datasets {d.options['name']} is prepared in {folder}")
        return 0
    _, status = data_status(d, base, name)
    log.info(f"{name}: the {d.adapter} adapter reads files you download yourself; data here: {status}")
    for label, text in (("get it from", d.source), ("licence", d.license), ("layout", d.layout)):
        if text:
            log.info(f"  {label}: {' '.join(text.split())}")
    log.info(
        f"  the card ({config.dataset_file}) describes the folder layout in its comments; see also datasets/README.md"
    )
    return 0


def _prepare_tfds(options):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "this dataset card uses the tfds adapter, which needs TensorFlow Datasets (an optional extra): "
            ".venv/bin/pip install tensorflow-datasets, then rerun `make download DATASET=...`"
        ) from None
    try:
        builder = tfds.builder(options["name"], data_dir=options.get("data_dir"))
        builder.download_and_prepare()
    except Exception as error:  # TFDS raises many kinds (unknown name, network, checksum)
        raise UserError(
            f"TFDS dataset {options['name']!r} could not be downloaded and prepared: {str(error)[:200]}"
        ) from None
    return builder.data_dir
