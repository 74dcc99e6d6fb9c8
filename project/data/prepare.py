"""Data for a run: adapter -> split (saved once) -> tf.data pipelines per subset."""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from project import logs
from project.artifacts import atomic_write
from project.config.cards import DATASETS_DIR
from project.data import datacheck, pipeline
from project.data.adapters import load_sources
from project.data.augment import build_augmentation
from project.data.split import fold_view, load_or_make_assignment, parts
from project.errors import UserError

log = logs.get(__name__)


@dataclass(frozen=True)
class Feed:
    """What a run's tf.data pipelines take from its card: the model's input size, the batch size,
    the seed, the augmentation (albumentations specs and their strength) and the mixup / CutMix
    alphas, both applied to training batches only, and where decoded images are cached
    (runtime.cache: memory, disk or none)."""

    size: tuple
    batch_size: int
    seed: int = 0
    augmentation: tuple = ()
    strength: float = 1.0
    cache: str = "memory"
    mixup: float | None = None
    cutmix: float | None = None


@dataclass
class Data:
    """The sources and the subsets one run sees. With cross-validation (split.folds) `fold` is the
    run's fold (its val set) and `folds` the fold of every item (0: test); `for_fold` gives another's."""

    sources: object
    subsets: np.ndarray
    root: Path = Path(".")
    fold: int | None = None
    folds: np.ndarray | None = None

    def for_fold(self, fold):
        """The same data as fold `fold`'s run sees it (its val set is that fold)."""
        base = np.where(self.folds > 0, "train", self.subsets)
        return replace(self, subsets=fold_view(base, self.folds, fold), fold=fold)

    @property
    def class_names(self):
        return self.sources.class_names

    @property
    def num_classes(self):
        return len(self.sources.class_names)

    def indices(self, subset):
        return np.flatnonzero(self.subsets == subset)

    def items(self, subset):
        index = self.indices(subset)
        items = self.sources.items
        return items[index] if isinstance(items, np.ndarray) else [items[i] for i in index]

    def labels(self, subset):
        return self.sources.labels[self.indices(subset)]

    def ids(self, subset):
        return [self.sources.ids[i] for i in self.indices(subset)]

    def counts(self):
        """Images per class per subset, for metrics and the report."""
        return {
            subset: {name: int(np.sum(self.labels(subset) == i)) for i, name in enumerate(self.class_names)}
            for subset in ("train", "val", "test")
        }

    def dataset(self, subset, feed, training=None, batch_size=None, epochs=(0, 1), with_index=False):
        """The tf.data pipeline of one subset fed as `feed` says (batch_size: another batch size);
        augmentation and mixing only on train, which spans the epochs range(*epochs) (model.fit then needs
        steps_per_epoch=self.steps(subset, batch_size)). with_index: (images, labels, index) batches,
        index = each image's position in the subset (self.ids(subset)[index] is its source)."""
        training = subset == "train" if training is None else training
        augmentation = build_augmentation(list(feed.augmentation), feed.strength, feed.seed) if training else None
        return pipeline.make_dataset(
            self.items(subset),
            self.labels(subset),
            self.sources.kind,
            size=feed.size,
            num_classes=self.num_classes,
            batch_size=batch_size or feed.batch_size,
            training=training,
            augmentation=augmentation,
            cache=self.cache_for(subset, feed.cache, feed.size),
            seed=feed.seed,
            epochs=epochs,
            mixup=feed.mixup if training else None,
            cutmix=feed.cutmix if training else None,
            with_index=with_index,
        )

    def skipped(self, subset, index):
        """The sources of `subset` missing from `index` (the positions a pipeline delivered)."""
        ids = self.ids(subset)
        return [ids[i] for i in np.setdiff1d(np.arange(len(ids)), np.asarray(index, dtype=np.int64))]

    def record_skipped(self, run, skipped):
        """Images that could not be decoded when `run` was evaluated ({subset: sources}): each named in
        a warning and appended to data_issues.csv."""
        rows = []
        for subset, sources in skipped.items():
            for source in sources:
                log.warning(
                    f"warning: {subset} image {source} could not be decoded and was skipped (changed after "
                    f"the data check?): left out of {run}'s {subset} metrics"
                )
                rows.append(
                    datacheck.issue(
                        source,
                        "undecodable",
                        "skipped",
                        f"could not be decoded when {run} was evaluated on {subset}: left out of its metrics and "
                        "predictions (changed after the data check?)",
                    )
                )
        if rows:
            log.warning(f"[{run}] {len(rows)} image(s) skipped in evaluation: listed in {add_issues(self.root, rows)}")

    def steps(self, subset, batch_size):
        """Batches in one epoch of a subset."""
        return -(-len(self.indices(subset)) // batch_size)

    def cache_for(self, subset, cache, size):
        """runtime.cache: memory, none, or an on-disk cache per subset and input size."""
        if cache != "disk":
            return cache
        folder = self.root / "cache"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = size
        return str(folder / f"{subset}_{height}x{width}")

    def stats(self, size):
        """Training-subset statistics at the input `size`, for mean subtraction (scratch CNNs)."""
        return pipeline.channel_stats(self.items("train"), self.sources.kind, size)


def add_issues(folder, rows):
    """Append issue rows (datacheck.issue) to the data check's folder/data_issues.csv, keeping what it
    lists; a row it already holds is not repeated. Returns the file's path."""
    path = Path(folder) / "data_issues.csv"
    columns = datacheck.ISSUE_COLUMNS
    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else pd.DataFrame(columns=columns)
    table = pd.concat([old, pd.DataFrame(rows, columns=columns, dtype=str)], ignore_index=True)
    atomic_write(path, table.reindex(columns=columns).drop_duplicates().to_csv(index=False))
    return path


def dataset_base(config):
    """Relative paths in a dataset card are relative to the card's folder."""
    return Path(config.dataset_file).parent if config.dataset_file else DATASETS_DIR


def prepare(config, root, fold=None):
    """Load the sources through the card's adapter, check the files (excluded ones are dropped,
    converted ones replaced by their copies), then the split saved in `root`, as run `fold` sees it
    (with split.folds: 1..k, default 1; without: None). With split.test 0 there is no test subset."""
    d = config.dataset
    k = d.split.folds
    if fold is not None and not (k and 1 <= fold <= k):
        raise UserError(f"fold {fold} does not exist: the dataset card's split.folds is {k}")
    fold = (fold or 1) if k else None
    sources = load_sources(d.adapter, d.options, dataset_base(config), d.classes, d.label_map)
    scanned = datacheck.check(config, sources, root) if sources.kind == "files" and config.paper.data.check else None
    if scanned:
        sources = scanned.sources
    assigned, folds, groups = load_or_make_assignment(Path(root) / "split.csv", sources, d.split)
    subsets = fold_view(assigned, folds, fold)
    if scanned:
        scanned.report(subsets, groups, parts(assigned, folds))
    held_out = ("train", "val", "test") if d.split.has_test else ("train", "val")
    for subset in held_out:
        if not np.any(subsets == subset):
            raise UserError(f"the split has no {subset} images; check the dataset card's split section")
    return Data(sources=sources, subsets=np.asarray(subsets), root=Path(root), fold=fold, folds=folds if k else None)
