"""The data check: scan a file-based dataset before training and keep only what the input
pipeline can decode (`make check-data`; also the first step of every `prepare`, so of train and tune).

Each file is read once with Pillow; the result is cached in runs/<paper>__<dataset>/data_scan.csv
by path, size and modification time, so a second scan only stats the files and reads again those
that changed (one line names them). data_scan.json records the check's settings (CHECK_VERSION,
the sizes, Pillow's version): when they differ, the scan and the converted copies are made again. Each file is
  kept       a JPEG or PNG in grey or RGB: the pipeline decodes it as it is;
  converted  anything else Pillow reads (CMYK, 16-bit, transparency, palette, EXIF rotation,
             BMP/GIF/WebP, very large images): an 8-bit RGB PNG copy is written once to
             runs/<paper>__<dataset>/converted/<content hash>.png and the pipeline reads the copy;
  excluded   empty, damaged, not an image, an unsupported format (TIFF, HEIC), a missing file,
             a broken link or a link that leads out of the dataset folder.
Copies rather than conversion in the pipeline: TensorFlow's decoders ignore EXIF orientation,
drop alpha without compositing, and cannot downscale while decoding (a 12000x12000 photo is
decoded in full, then resized as float32: ~1.7 GB). Pillow does it once, JPEGs at reduced
scale (`draft`), and the tf.data pipeline stays pure TensorFlow. Originals are never modified.

Every exclusion and warning is listed in runs/<paper>__<dataset>/data_issues.csv
(source, reason, action, detail) and counted on the console. Hidden and system files
(.DS_Store, ._*, __MACOSX/, Thumbs.db, .ipynb_checkpoints/) are ignored silently.
"""

import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from project import logs
from project.artifacts import atomic_write, run_root
from project.config.cards import DATASETS_DIR
from project.data import cachekey
from project.data.adapters import IMAGE_EXTENSIONS, load_sources
from project.data.imagecheck import (  # noqa: F401  (re-exported: the one-file checks)
    AS_IS,
    HEIF_BRANDS,
    LARGE_PIXELS,
    MAX_SIDE,
    READABLE,
    TINY_SIDE,
    conversions,
    inspect,
    png_bytes,
    sniff,
    to_rgb,
)
from project.errors import UserError

log = logs.get(__name__)

MIN_PER_CLASS = 3  # one image each in train, val and test
SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini"}
ISSUE_COLUMNS = ["source", "reason", "action", "detail"]
SCAN_COLUMNS = ["path", "size", "mtime_ns", "hash", "format", "mode", "width", "height", "status", "reason", "detail"]
KEEP_ORDER = {"test": 0, "val": 1, "train": 2}  # drop_duplicates keeps the copy in the first of these
CHECK_VERSION = 1  # raise when inspect(), conversions() or to_rgb() change what a scan row or a copy holds


def ignored(name):
    """Hidden and system files and folders, skipped silently (the folder adapter's rule)."""
    return name.startswith(".") or name.startswith("__") or name.lower() in SYSTEM_FILES


def issue(source, reason, action, detail):
    return {"source": str(source), "reason": reason, "action": action, "detail": detail}


# ------------------------------------------------------------------ many files


def check_settings():
    """What a scan row and a converted copy depend on besides the file itself (data_scan.json)."""
    import PIL

    return cachekey.manifest(
        {"check": CHECK_VERSION, "as_is": sorted(map("/".join, AS_IS)), "readable": sorted(READABLE)}
        | {"large_pixels": LARGE_PIXELS, "max_side": MAX_SIDE, "pillow": PIL.__version__}
    )


def cached_scan(root, settings):
    """The rows of root/data_scan.csv by path; none when the check's settings changed since they were
    written (the converted copies are removed then too, and one line says why)."""
    cache_file, copies = root / "data_scan.csv", sorted((root / "converted").glob("*.png"))
    reasons = cachekey.differences(cachekey.read(root / "data_scan.json"), settings)
    if reasons and (cache_file.exists() or copies):
        log.info(f"data-check cache rebuilt (the scan and {len(copies)} converted copies): {'; '.join(reasons)}")
        for copy in copies:
            copy.unlink(missing_ok=True)
    if reasons or not cache_file.exists():
        return {}
    table = pd.read_csv(cache_file, dtype=str, keep_default_na=False)
    return {row["path"]: row for row in table.to_dict("records")} if list(table.columns) == SCAN_COLUMNS else {}


def scan(paths, root):
    """Inspect every file, reusing root/data_scan.csv rows whose size and mtime still match."""
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    root = Path(root)
    cache_file, converted_dir, settings = root / "data_scan.csv", root / "converted", check_settings()
    cached = cached_scan(root, settings)

    def one(path):
        key = os.path.abspath(path)
        try:
            stat = os.stat(path)
        except OSError as error:
            missing = isinstance(error, FileNotFoundError)
            reason = ("broken_link" if os.path.islink(path) else "missing_file") if missing else "unreadable"
            return {"path": key, "status": "excluded", "reason": reason, "detail": error.strerror or str(error)}
        hit = cached.get(key)
        if (
            hit
            and hit["size"] == str(stat.st_size)
            and hit["mtime_ns"] == str(stat.st_mtime_ns)
            and (hit["status"] != "converted" or (converted_dir / f"{hit['hash']}.png").exists())
        ):
            return hit
        try:
            row = inspect(path, converted_dir)
        except (PermissionError, IsADirectoryError) as error:
            row = {"status": "excluded", "reason": "unreadable", "detail": error.strerror}
        return {k: str(v) for k, v in {"path": key, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **row}.items()}

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(one, paths))
    fresh = [r for r in rows if r.get("size")]
    changes = cachekey.item_changes(
        *({r["path"]: [r["size"], r["mtime_ns"]] for r in t} for t in (cached.values(), fresh))
    )
    if cached and changes:
        log.info(f"data-check cache updated: {'; '.join(changes)} since the last scan")
    if any(cached.get(r["path"]) is not r for r in fresh) or len(fresh) != len(cached):
        atomic_write(cache_file, pd.DataFrame(fresh, columns=SCAN_COLUMNS).to_csv(index=False))
    if cachekey.read(root / "data_scan.json") != settings:  # after the rows it describes
        cachekey.write(root / "data_scan.json", settings)
    return rows


def inside(path, folder):
    return Path(os.path.realpath(path)).is_relative_to(folder)


def walk(root, sources):
    """What the folder adapter skipped without a word: files it does not read, broken or
    outside links, images outside class folders, class folders without images, folders it did
    not read (beside the `subsets` folders)."""
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    listed = {os.path.abspath(p) for p in sources.items}
    classes = {Path(os.path.abspath(p)) for p in sources.class_folders}
    beside = {p.parent for p in classes}  # where class folders sit: a folder there is a class or empty
    above = {parent for p in classes for parent in p.parents}
    issues = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not ignored(d))
        here = Path(os.path.abspath(folder))
        rel = Path(folder).relative_to(root)
        in_class = any(parent in beside for parent in here.parents)
        for name in list(dirs):
            path = Path(folder) / name
            if os.path.islink(path) and not any(p.startswith(f"{os.path.abspath(path)}{os.sep}") for p in listed):
                outside = not inside(path, real_root)
                issues.append(
                    issue(
                        (rel / name).as_posix() + "/",
                        "outside_dataset" if outside else "linked_folder",
                        "excluded",
                        f"a link to {os.path.realpath(path)}"
                        + (", outside the dataset folder" if outside else ": links to folders are not followed"),
                    )
                )
            elif in_class or here / name in classes or here / name in above:
                continue
            elif here in beside and name not in sources.class_names:
                issues.append(
                    issue(
                        (rel / name).as_posix() + "/",
                        "empty_class",
                        "warning",
                        f"class folder {name!r} holds no images: not a class",
                    )
                )
            elif here not in beside:
                dirs.remove(name)
                issues.append(
                    issue(
                        (rel / name).as_posix() + "/",
                        "folder_not_read",
                        "warning",
                        "no class folder the adapter reads is under it: its files are not read (see options.subsets)",
                    )
                )
        for name in sorted(files):
            path = Path(folder) / name
            if ignored(name) or os.path.abspath(path) in listed:
                continue
            source = (rel / name).as_posix()
            suffix = path.suffix.lower()
            if os.path.islink(path) and not path.exists():
                issues.append(
                    issue(source, "broken_link", "excluded", f"a link to {os.readlink(path)}, which does not exist")
                )
            elif not in_class:
                if suffix in IMAGE_EXTENSIONS:
                    issues.append(
                        issue(
                            source,
                            "not_in_class_folder",
                            "excluded",
                            f"images must be inside a class folder under {root}",
                        )
                    )
            elif suffix not in IMAGE_EXTENSIONS:
                with open(path, "rb") as handle:
                    head = handle.read(64)
                kind = "a TIFF image" if head[:4] in (b"II*\x00", b"MM\x00*") else sniff(head)[1].split(":")[0]
                issues.append(
                    issue(
                        source,
                        "unsupported_format",
                        "excluded",
                        f"{suffix or 'no extension'} ({kind}): read extensions are {', '.join(sorted(IMAGE_EXTENSIONS))}",
                    )
                )
    return issues


# ------------------------------------------------------------------ the check


@dataclass
class Check:
    """The outcome of the scan: the sources left (converted copies in place of their originals),
    the issues so far, and a content hash per source for the duplicate and leakage report."""

    sources: object
    issues: list
    hashes: list
    folder: Path
    files: int

    def duplicate_groups(self):
        groups = defaultdict(list)
        for i, digest in enumerate(self.hashes):
            groups[digest].append(i)
        return [g for g in groups.values() if len(g) > 1]

    def leakage(self, subsets):
        """Warnings for identical images left in the data: across subsets (leakage) or within one.
        Also the number of groups spanning subsets, per pair of subsets."""
        rows, pairs, spanning = [], Counter(), 0
        names = self.sources.class_names
        for group in self.duplicate_groups():
            where = sorted({subsets[i] for i in group}, key=["train", "val", "test"].index)
            spanning += len(where) > 1
            for a in range(len(where)):
                for b in range(a + 1, len(where)):
                    pairs[f"{where[a]}&{where[b]}"] += 1
            for i in group:
                others = ", ".join(
                    f"{self.sources.ids[j]} ({subsets[j]}, {names[self.sources.labels[j]]})" for j in group if j != i
                )
                rows.append(
                    issue(
                        self.sources.ids[i],
                        "leakage" if len(where) > 1 else "duplicate",
                        "warning",
                        f"in {subsets[i]}; identical to {others}",
                    )
                )
        return rows, dict(sorted(pairs.items())), spanning

    def report(self, subsets, groups=None, where=None):
        """Write data_issues.csv and print the counts per reason; returns (table, leakage pairs).
        groups (split.group_by's, per item): each group found in more than one of `where` (the subset
        or fold of each item, default `subsets`) is reported as group_leakage."""
        rows, pairs, spanning = self.leakage(np.asarray(subsets))
        if groups is not None:
            rows += straddling(groups, subsets if where is None else where)
        table = pd.DataFrame(self.issues + rows, columns=ISSUE_COLUMNS)
        path = self.folder / "data_issues.csv"
        atomic_write(path, table.to_csv(index=False))
        counts = table["action"].value_counts()
        log.info(
            f"data check: {self.files} files, {len(self.sources)} kept ({counts.get('converted', 0)} as converted copies), "
            f"{counts.get('excluded', 0)} excluded; every issue is listed in {path}"
        )
        for (action, reason), count in table.groupby(["action", "reason"], sort=False).size().items():
            note = ""
            if reason == "leakage":
                note = (
                    f": {spanning} groups of identical images span subsets ({', '.join(f'{k} {v}' for k, v in pairs.items())}); "
                    f"--set data.drop_duplicates=true keeps one copy of each"
                )
            if reason == "group_leakage":
                note = (
                    ": groups (split.group_by) in more than one subset or fold, so a model is tested on groups it "
                    "trained on; a provided split mixes them (or split.csv was edited): see the detail per group"
                )
            log.info(f"  {count:5d}  {action:9s} {reason}{note}")
        for row in self.issues:
            if row["reason"] in ("small_class", "empty_class"):
                log.info(f"  {row['action']}: {row['detail']}")
        return table, pairs


def check(config, sources, root):
    """Scan `sources` (kind 'files'): exclude what cannot be used, point converted images at
    their copies, drop identical copies when the card asks (data.drop_duplicates)."""
    root = Path(root)
    d, wanted = config.dataset, config.paper.data
    issues = [issue(s, r, "excluded", t) for s, r, t in sources.issues]
    top = sources.root or os.path.commonpath([os.path.abspath(p) for p in sources.items])
    real_top = Path(os.path.realpath(top))
    if d.adapter == "folder":
        issues += walk(top, sources)
    files = len(sources) + len(issues)
    candidates = []
    for i, path in enumerate(sources.items):
        if inside(path, real_top) or not os.path.lexists(path) or not os.path.exists(path):
            candidates.append(i)
        else:
            issues.append(
                issue(
                    sources.ids[i],
                    "outside_dataset",
                    "excluded",
                    f"a link to {os.path.realpath(path)}, outside {real_top}",
                )
            )
    rows = scan([sources.items[i] for i in candidates], root)
    keep, items, hashes = [], list(sources.items), {}
    for i, row in zip(candidates, rows):
        source = sources.ids[i]
        if row["status"] == "excluded":
            issues.append(issue(source, row["reason"], "excluded", row["detail"]))
            continue
        if row["status"] == "converted":
            items[i] = str(root / "converted" / f"{row['hash']}.png")
            issues.append(issue(source, "converted", "converted", row["detail"]))
        if min(int(row["width"]), int(row["height"])) < TINY_SIDE:
            issues.append(
                issue(
                    source,
                    "tiny_image",
                    "warning",
                    f"{row['width']}x{row['height']} pixels: kept, resized to the model's input",
                )
            )
        keep.append(i)
        hashes[i] = row["hash"]
    if wanted.drop_duplicates:
        keep = drop_duplicates(keep, hashes, sources, issues)
    kept = subset_sources(sources, keep, items)
    kept, class_issues = drop_empty_classes(kept, d.classes)
    issues += class_issues
    if sources.subsets is None or "val" not in set(kept.subsets.tolist()) or d.split.val_from_train:
        issues += small_classes(kept)
    result = Check(kept, issues, [hashes[i] for i in keep], root, files)
    present = sorted(set(kept.labels.tolist()))
    if len(present) < 2:
        result.report(np.full(len(kept), "train"))
        names = [kept.class_names[i] for i in present]
        raise UserError(
            f"dataset {config.dataset_file}: only {len(present)} class ({', '.join(names) or 'none'}) has usable images "
            f"after the data check (see {root / 'data_issues.csv'}); a classifier needs at least 2"
        )
    return result


def straddling(groups, where):
    """One group_leakage warning per group found in more than one place of `where` (subset or fold per item)."""
    order = {"train": 0, "val": 1, "test": 2}
    table = pd.DataFrame({"group": np.asarray(groups, dtype=str), "where": np.asarray(where, dtype=str)})
    rows = []
    for group, places in table.groupby("group", sort=True)["where"]:
        counts = places.value_counts()
        if len(counts) > 1:
            spread = ", ".join(
                f"{n} in {w}" for w, n in sorted(counts.items(), key=lambda c: (order.get(c[0], 3), c[0]))
            )
            rows.append(
                issue(group, "group_leakage", "warning", f"group {group!r} spans {len(counts)} parts: {spread}")
            )
    return rows


def drop_duplicates(keep, hashes, sources, issues):
    """One copy per content hash: the one in test, else val, else train, else the first listed."""
    groups = defaultdict(list)
    for i in keep:
        groups[hashes[i]].append(i)
    dropped = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        rank = (lambda i: (KEEP_ORDER.get(sources.subsets[i], 3), i)) if sources.subsets is not None else (lambda i: i)
        keeper = min(group, key=rank)
        labels = {sources.class_names[sources.labels[i]] for i in group}
        conflict = f"; the copies are labelled {', '.join(sorted(labels))}" if len(labels) > 1 else ""
        for i in group:
            if i != keeper:
                dropped.add(i)
                issues.append(
                    issue(
                        sources.ids[i], "duplicate", "excluded", f"identical to {sources.ids[keeper]} (kept){conflict}"
                    )
                )
    return [i for i in keep if i not in dropped]


def subset_sources(sources, keep, items):
    index = np.asarray(keep, dtype=np.int64)
    return replace(
        sources,
        items=[items[i] for i in keep],
        labels=sources.labels[index],
        ids=[sources.ids[i] for i in keep],
        subsets=None if sources.subsets is None else np.asarray(sources.subsets)[index],
        issues=[],
        columns={name: [values[i] for i in keep] for name, values in sources.columns.items()},
    )


def drop_empty_classes(sources, listed):
    """A class left without images is dropped (labels renumbered) unless the card lists it."""
    counts = np.bincount(sources.labels, minlength=len(sources.class_names))
    issues, names = [], []
    for i, name in enumerate(sources.class_names):
        if counts[i]:
            names.append(name)
        elif listed and name in listed:
            names.append(name)
            issues.append(
                issue(
                    name,
                    "empty_class",
                    "warning",
                    f"class {name!r} has no usable images but is listed in the card's classes: kept",
                )
            )
        else:
            issues.append(issue(name, "empty_class", "warning", f"class {name!r} has no usable images: dropped"))
    if len(names) == len(sources.class_names):
        return sources, issues
    renumber = np.array([names.index(n) if n in names else -1 for n in sources.class_names])
    return replace(sources, labels=renumber[sources.labels], class_names=names), issues


def small_classes(sources):
    counts = np.bincount(sources.labels, minlength=len(sources.class_names))
    return [
        issue(
            name,
            "small_class",
            "warning",
            f"class {name!r} has {counts[i]} image(s), fewer than the {MIN_PER_CLASS} a train/val/test split needs (one each): "
            f"the split falls back to a plain random split (not stratified) and {name!r} may be missing from val or test; "
            f"add images, or leave the class out",
        )
        for i, name in enumerate(sources.class_names)
        if 0 < counts[i] < MIN_PER_CLASS
    ]


def cli(config, args):
    """`check-data`: scan, then report with the split train would use (computed, not written)."""
    from project.data.split import assign, fold_view, groups_of, load_or_make_assignment, parts

    d = config.dataset
    base = (
        Path(config.dataset_file).parent if config.dataset_file else DATASETS_DIR
    )  # as data.dataset_base, without TensorFlow
    sources = load_sources(d.adapter, d.options, base, d.classes, d.label_map)
    if sources.kind != "files":
        log.info(f"data check: the {d.adapter} adapter gives {len(sources)} images held in memory; no files to scan")
        return 0
    root = run_root(config, args.runs_dir)
    result = check(config, sources, root)
    split_file = root / "split.csv"
    if split_file.exists():
        subsets, folds, groups = load_or_make_assignment(split_file, result.sources, d.split)
    else:
        s = result.sources
        groups = groups_of(s, d.split.group_by)
        subsets, folds = assign(s.labels, d.split, s.subsets, groups, list(s.class_names))
    result.report(fold_view(subsets, folds), groups, parts(subsets, folds))
    return 0
