"""`make new-dataset`: scan the data through the card's adapter and write a dataset card with what
it found (classes, counts, formats, sizes, problems); it never overwrites a card. The scan reads
image headers only, for every kind of source (files, encoded bytes, arrays): `make check-data`,
the next step, decodes every file. Nothing here imports TensorFlow unless an adapter needs it.
"""

import datetime
import os
import re
from collections import Counter
from pathlib import Path

import yaml

from project import logs
from project.commands.library import PATH_OPTION, display, new_card_path, write_new
from project.config import cards
from project.config.schema import Dataset
from project.errors import UserError

log = logs.get(__name__)


def new_dataset_cli(args, datasets_dir=None):
    datasets_dir = Path(datasets_dir or cards.DATASETS_DIR)
    name, target = new_card_path(
        datasets_dir, args.name, "new-dataset", "make new-dataset NAME=mydata DATA=path/to/images [ADAPTER=folder]"
    )
    adapter = args.adapter or "folder"
    options = dataset_options(adapter, args.path, getattr(args, "overrides", []), datasets_dir)
    options, found = subset_layout(adapter, options, datasets_dir)
    scan = scan_dataset(adapter, options, datasets_dir)
    scan["notes"] = found + scan["notes"]
    text = dataset_card_text(name, adapter, options, scan)
    write_new(target, text)
    log.info(summary_text(scan))
    log.info(f"\nwrote {display(target)}: fill in description, source and license, check `split`, then")
    log.info(f"`make check-data DATASET={name}` and `make all PAPER=... DATASET={name}`")
    return 0


def dataset_options(adapter, path, overrides, datasets_dir):
    """The adapter options: --path as the adapter's path option (relative to the card's folder when
    inside it), plus `--set key=value` for any other option (e.g. sep=whitespace, header=false)."""
    if adapter not in PATH_OPTION:
        raise UserError(
            f"new-dataset --adapter {adapter!r}: accepted: {', '.join(PATH_OPTION)} "
            f"(a custom adapter's card is written by hand: see datasets/README.md)"
        )
    options = {}
    option = PATH_OPTION[adapter]
    if option == "name":
        if not path:
            raise UserError(
                f"new-dataset --adapter {adapter} needs the dataset's name as --path (make new-dataset NAME=y ADAPTER={adapter} DATA=cifar10)"
            )
        options["name"] = path
    elif option:
        if not path:
            raise UserError(
                f"new-dataset needs the data's location: make new-dataset NAME=y DATA=path/to/{'images' if adapter == 'folder' else 'file'}"
            )
        resolved = Path(os.path.expanduser(path)).resolve()
        if not resolved.exists():
            raise UserError(f"new-dataset --path {path}: {resolved} does not exist")
        try:
            options[option] = resolved.relative_to(Path(datasets_dir).resolve()).as_posix()
        except ValueError:
            options[option] = str(resolved)
    for text in overrides or []:
        key, value = cards.parse_override(text)
        options[key.removeprefix("options.")] = value
    return options


# a folder or manifest name part that names a subset: seg_train, trainval.txt, Testing, valid
SUBSET_WORDS = {
    "train": "train",
    "training": "train",
    "trainval": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
MANIFEST_SUFFIXES = (".csv", ".txt", ".tsv")


def subset_layout(adapter, options, datasets_dir):
    """Options for data laid out per subset under other names: folders such as seg_train/ and
    seg_test/ (the folder adapter's `subsets`), or a folder of manifests such as trainval.txt and
    test.txt (the csv adapter's `manifests`). Returns (options, notes for the summary)."""
    key = {"folder": "path", "csv": "manifest"}.get(adapter)
    if key is None or key not in options or "subsets" in options or "manifests" in options:
        return options, []
    top = Path(os.path.expanduser(str(options[key])))
    top = top if top.is_absolute() else Path(datasets_dir) / top
    if not top.is_dir():
        return options, []
    if adapter == "folder":
        entries = [p for p in sorted(top.iterdir()) if p.is_dir() and not p.name.startswith((".", "__"))]
        if all(p.name.lower() in ("train", "val", "valid", "validation", "test") for p in entries):
            return options, []  # a train/ val/ test/ tree: the folder adapter reads it as it is
        entries = [_class_parent(p) for p in entries]
        entries = [p for p in entries if any(c.is_dir() for c in p.iterdir())]
    else:
        entries = [p for p in sorted(top.iterdir()) if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES]
    found = {}
    for entry in entries:
        subset = _subset_word(entry.relative_to(top).parts[0])
        if subset:
            found.setdefault(subset, []).append(entry.relative_to(top).as_posix())
    single = {s: names[0] for s, names in found.items() if len(names) == 1}
    if "train" not in single or len(single) < 2 or len(single) != len(found):
        if adapter == "csv":
            raise UserError(
                f"new-dataset --path {options[key]} is a folder: the csv adapter needs a manifest file, or a folder "
                f"with one manifest per subset, one name each with train, val or test (found: {', '.join(p.name for p in entries) or 'none'})"
            )
        return options, []
    option = {"folder": "subsets", "csv": "manifests"}[adapter]
    prefix = "" if adapter == "folder" else f"{options[key]}/"
    mapping = {s: f"{prefix}{single[s]}" for s in ("train", "val", "test") if s in single}
    rest = {k: v for k, v in options.items() if not (adapter == "csv" and k == key)}
    left = sorted({p.relative_to(top).parts[0] for p in entries} - {Path(n).parts[0] for n in single.values()})
    kind = "folder" if adapter == "folder" else "manifest"
    notes = [f"one {kind} per subset: options.{option}: {mapping}" + (f"; not read: {', '.join(left)}" if left else "")]
    return {**rest, option: mapping}, notes


def _subset_word(name):
    """train / val / test when a word of `name` names a subset (seg_train, Testing), else None."""
    words = re.split(r"[^a-z]+", Path(name).stem.lower())
    return next((SUBSET_WORDS[w] for w in words if w in SUBSET_WORDS), None)


def _class_parent(folder):
    """Down single nested folders (Kaggle's seg_train/seg_train/) to the folder that holds the classes."""
    while True:
        children = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(children) != 1 or not children[0].is_dir() or not any(c.is_dir() for c in children[0].iterdir()):
            return folder
        folder = children[0]


def scan_dataset(adapter, options, base):
    """Load the data through its adapter and look at every image: classes, counts, formats, sizes, problems."""
    from project.data.adapters import load_sources

    sources = load_sources(adapter, options, base)
    names = sources.class_names
    labels = sources.labels
    scan = {
        "adapter": adapter,
        "classes": list(names),
        "kind": sources.kind,
        "subsets": None,
        "problems": [],
        "notes": [],
        "formats": Counter(),
        "modes": Counter(),
        "sizes": [],
    }
    readable = _scan_images(sources, scan)
    labels = labels[readable]
    scan["num_images"] = int(len(labels))
    scan["counts"] = {n: int((labels == i).sum()) for i, n in enumerate(names)}
    if sources.subsets is not None:
        subsets = sources.subsets[readable]
        scan["subsets"] = {
            s: {n: int(((labels == i) & (subsets == s)).sum()) for i, n in enumerate(names)}
            for s in ("train", "val", "test")
            if (subsets == s).any()
        }
    if adapter == "folder":
        _folder_findings(sources, scan)
    _check_counts(scan)
    return scan


def _scan_images(sources, scan):
    """Open every image with Pillow (header only); returns a mask of the readable ones."""
    import io

    import numpy as np
    from PIL import Image

    readable = np.ones(len(sources.labels), dtype=bool)
    if sources.kind == "array":
        images = sources.items
        scan["formats"]["array"] = len(images)
        scan["modes"][f"{images.shape[-1]} channel(s)"] = len(images)
        scan["sizes"] = [(images.shape[2], images.shape[1])]
        return readable
    unreadable = []
    for index, (item, ident) in enumerate(zip(sources.items, sources.ids)):
        if sources.kind == "files":
            scan["formats"][Path(item).suffix.lower()] += 1
        try:
            with Image.open(item if sources.kind == "files" else io.BytesIO(item)) as image:
                scan["sizes"].append(image.size)
                scan["modes"][image.mode] += 1
                if sources.kind == "encoded":
                    scan["formats"][(image.format or "?").lower()] += 1
        except Exception:  # Pillow raises many kinds for a broken or non-image file
            unreadable.append(str(ident))
            readable[index] = False
    if unreadable:
        scan["problems"].append(
            f"{len(unreadable)} unreadable image(s), not counted (Pillow cannot open them; "
            f"training skips them): " + ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        )
    return readable


def _folder_findings(sources, scan):
    """What the folder adapter passed over, as the data check finds it: class folders without images
    and files it does not read; the layout it read."""
    from project.data.datacheck import walk

    issues = walk(sources.root, sources)
    empty = [row["source"] for row in issues if row["reason"] == "empty_class"]
    if empty:
        scan["problems"].append(f"{len(empty)} class folder(s) without images (ignored): {', '.join(empty[:10])}")
    skipped = Counter(
        Path(row["source"]).suffix.lower() or "(no extension)"
        for row in issues
        if row["reason"] == "unsupported_format"
    )
    if skipped:
        scan["notes"].append(
            f"{sum(skipped.values())} non-image file(s) skipped: "
            + ", ".join(f"{ext} {n}" for ext, n in skipped.most_common(5))
        )
    scan["layout"] = (
        "train/ val/ test/ sub-folders, each with one folder per class"
        if sources.subsets is not None
        else "one folder per class"
    )


def _check_counts(scan):
    counts = scan["counts"]
    small = [n for n, c in counts.items() if c < 10]
    if small:
        scan["problems"].append(
            f"{len(small)} class(es) with fewer than 10 images (too few to split and evaluate): {', '.join(small[:10])}"
        )
    low, high = min(counts.values()), max(counts.values())
    if low and high / low >= 3:
        scan["notes"].append(
            f"imbalanced: the largest class has {high / low:.1f}x the images of the smallest "
            f"(compare macro F1; training.class_weight: auto is an option)"
        )
    subsets = scan["subsets"]
    if subsets is not None:
        if "test" not in subsets:
            scan["problems"].append(
                "pre-split data without a test subset: the split section needs val/test fractions instead"
            )
        val = subsets.get("val")
        if val is None:
            scan["notes"].append("no val subset: val is carved from train")
        elif min(val.values()) < 10:
            scan["val_from_train"] = True
            scan["notes"].append(
                f"the provided val subset is tiny ({sum(val.values())} images): "
                f"split.val_from_train carves val from train instead"
            )


def summary_text(scan):
    lines = [f"{scan['num_images']:,} images in {len(scan['classes'])} classes ({scan['adapter']} adapter)"]
    width = max(len(n) for n in scan["classes"])
    subsets = scan["subsets"]
    for name in scan["classes"][:50]:
        per = f"  ({', '.join(f'{s} {c[name]}' for s, c in subsets.items())})" if subsets else ""
        lines.append(f"  {name.ljust(width)}  {scan['counts'][name]:>7,}{per}")
    if len(scan["classes"]) > 50:
        lines.append(f"  ... and {len(scan['classes']) - 50} more classes")
    lines.append(f"formats: {_counter_text(scan['formats'])}; modes: {_counter_text(scan['modes'])}")
    lines.append(f"image sizes (width x height): {resolution_text(scan['sizes'])}")
    for problem in scan["problems"]:
        lines.append(f"PROBLEM: {problem}")
    for note in scan["notes"]:
        lines.append(f"note: {note}")
    if not scan["problems"]:
        lines.append("problems found: none")
    return "\n".join(lines)


def _counter_text(counter):
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common()) or "-"


def resolution_text(sizes):
    if not sizes:
        return "unknown"
    distinct = set(sizes)
    if len(distinct) == 1:
        w, h = sizes[0]
        return f"{w}x{h}"
    widths, heights = sorted(s[0] for s in sizes), sorted(s[1] for s in sizes)
    return (
        f"variable: width {widths[0]}-{widths[-1]}, height {heights[0]}-{heights[-1]} "
        f"(median {widths[len(widths) // 2]}x{heights[len(heights) // 2]})"
    )


def dataset_card_text(name, adapter, options, scan):
    """The dataset card: the scan's findings as card fields, TODOs for what a scan cannot know."""
    split = {"val": 0.15, "test": 0.15, "seed": 0}
    if scan["subsets"] is not None and "test" in scan["subsets"]:
        split = {"provided": True, "val": 0.1, "seed": 0}
        if scan.get("val_from_train"):
            split["val_from_train"] = True
    header = [
        f"# Dataset card written by `make new-dataset` on {datetime.date.today().isoformat()} from a scan of the data.",
        "# Fill in description, source and license; check `split`; `make check-data DATASET=" + name + "` scans again.",
        "#",
        *[f"# {line}" if line else "#" for line in summary_text(scan).splitlines()],
    ]
    fields = {
        "description": "TODO: what the images show, who made them, how they were labelled",
        "source": "TODO: where to download it (URL or DOI, version)",
        "license": "TODO: licence of the data, e.g. CC BY 4.0",
        "num_classes": len(scan["classes"]),
        "num_images": scan["num_images"],
        "resolution": resolution_text(scan["sizes"]),
        "layout": _layout_text(adapter, options, scan),
        "adapter": adapter,
        "options": options,
        "split": split,
        "classes": scan["classes"],
    }
    body = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)
    text = "\n".join(header) + "\n" + body
    cards.validate(Dataset, yaml.safe_load(text), f"new card {name}")
    return text


def _layout_text(adapter, options, scan):
    if adapter == "folder" and "subsets" in options:
        folders = ", ".join(f"{s}: {f}/" for s, f in options["subsets"].items())
        return f"{options['path']}/: subset folders ({folders}), each with one folder per class"
    if adapter == "folder":
        return f"{options['path']}/: {scan.get('layout', 'one folder per class')}"
    if adapter == "csv" and "manifests" in options:
        return f"one manifest per subset ({', '.join(f'{s}: {m}' for s, m in options['manifests'].items())}), one row per image"
    if adapter == "csv":
        return f"manifest {options['manifest']}: one row per image (path, label)"
    if adapter == "npz":
        return f"{options['path']}: arrays x (images) and y (labels)"
    return f"no files to arrange ({adapter} dataset {options.get('name', '')})"
