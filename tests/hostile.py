"""Hostile datasets built at test time with Pillow and numpy (no binary files in the repository).

Each builder writes a dataset and returns what the data check must make of it:
{source id (path relative to the dataset folder, or the manifest's path): (action, reason)}.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

PAPER_CARD = """\
citation: {title: Tiny test CNN, authors: [Test], venue: none, year: 2024}
seed: 1
model:
  backbone: scratch
  weights: none
  input_size: 16
  scratch: {blocks: [8], convs_per_block: 1}
training:
  optimizer: adam
  learning_rate: 0.01
  batch_size: 8
  stages: [{name: train, epochs: 1}]
"""


def write_cards(folder, dataset_card, paper_card=PAPER_CARD, name="hostile"):
    """(paper card path, dataset card path), named tiny.yaml and <name>.yaml."""
    folder = Path(folder)
    (folder / "tiny.yaml").write_text(paper_card)
    (folder / f"{name}.yaml").write_text(dataset_card)
    return folder / "tiny.yaml", folder / f"{name}.yaml"


def noise(seed, size=(12, 12), mode="RGB"):
    """A unique image: no two seeds give the same bytes."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def put(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def huge_jpeg(path, side=12000):
    """A side x side grey JPEG (144 MB of pixels when side is 12000, ~1 MB on disk)."""
    image = Image.new("L", (side, side), 90)
    image.paste(200, (0, 0, side // 2, side // 2))
    image.save(path, "JPEG", quality=50)
    return path


def build_folder(root, huge=None):
    """Class folders cat/ dog/ bird/ (too small) empty/, every hostile case of issue 6 section 1.
    huge: an existing 12000x12000 JPEG to link in (it is slow to encode; share it)."""
    root = Path(root)
    expect = {}
    for i in range(10):
        put(root / "cat" / f"cat_{i}.jpg", encoded(noise(i), "JPEG", quality=95))
        put(root / "dog" / f"dog_{i}.png", encoded(noise(100 + i), "PNG"))
    for i in range(2):
        put(root / "bird" / f"bird_{i}.png", encoded(noise(200 + i), "PNG"))
    expect["bird"] = ("warning", "small_class")
    # odd names and extensions, kept as they are
    put(root / "cat" / "chat noir é.JPG", encoded(noise(300), "JPEG"))
    put(root / "cat" / "数字 1.Jpeg", encoded(noise(301), "JPEG"))
    put(root / "dog" / "UPPER.PNG", encoded(noise(302), "PNG"))
    put(root / "dog" / "grey.png", encoded(noise(303, mode="L"), "PNG"))
    put(root / "dog" / "tiny.png", encoded(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    expect["dog/tiny.png"] = ("warning", "tiny_image")
    # converted to 8-bit RGB copies
    rgba = Image.new("RGBA", (12, 12), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 6, 12))  # left half fully transparent
    put(root / "cat" / "rgba.png", encoded(rgba, "PNG"))
    la = Image.new("LA", (12, 12), (60, 255))
    la.paste((0, 0), (0, 0, 6, 12))  # left half transparent
    put(root / "cat" / "la.png", encoded(la, "PNG"))
    palette = Image.new("P", (12, 12), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 6, 12))  # left half: index 0, transparent
    put(root / "cat" / "palette.png", encoded(palette, "PNG", transparency=0))
    put(root / "cat" / "cmyk.jpg", encoded(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG", quality=95))
    deep = np.full((12, 12), 0x8000, np.uint16)
    put(root / "dog" / "deep16.png", encoded(Image.fromarray(deep), "PNG"))
    rotated = Image.new("RGB", (20, 10), (255, 0, 0))
    rotated.paste((0, 0, 255), (10, 0, 20, 10))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: red on top
    put(root / "dog" / "rotated.jpg", encoded(rotated, "JPEG", quality=95, exif=exif))
    put(root / "dog" / "anim.gif", encoded(Image.new("P", (12, 12), 3), "GIF"))
    put(root / "dog" / "old.bmp", encoded(noise(304), "BMP"))
    for name in (
        "cat/rgba.png",
        "cat/la.png",
        "cat/palette.png",
        "cat/cmyk.jpg",
        "dog/deep16.png",
        "dog/rotated.jpg",
        "dog/anim.gif",
        "dog/old.bmp",
    ):
        expect[name] = ("converted", "converted")
    if huge:
        shutil.copy(huge, root / "cat" / "huge.jpg")
        expect["cat/huge.jpg"] = ("converted", "converted")
    # excluded
    good = encoded(noise(400), "JPEG")
    put(root / "cat" / "truncated.jpg", good[: len(good) // 2])
    good_png = encoded(noise(401), "PNG")
    put(root / "dog" / "truncated.png", good_png[: len(good_png) // 2])
    put(
        root / "cat" / "garbage.jpg",
        b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8)),
    )
    put(root / "cat" / "empty.jpg", b"")
    put(root / "dog" / "page.jpg", b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    put(root / "dog" / "notes.png", b"just some notes, not an image\n")
    put(root / "dog" / "scan.tif", encoded(noise(402), "TIFF"))
    put(root / "dog" / "tiff_named.jpg", encoded(noise(403), "TIFF"))
    put(root / "cat" / "phone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    expect.update(
        {
            "cat/truncated.jpg": ("excluded", "corrupt"),
            "dog/truncated.png": ("excluded", "corrupt"),
            "cat/garbage.jpg": ("excluded", "corrupt"),
            "cat/empty.jpg": ("excluded", "empty_file"),
            "dog/page.jpg": ("excluded", "not_an_image"),
            "dog/notes.png": ("excluded", "not_an_image"),
            "dog/scan.tif": ("excluded", "unsupported_format"),
            "dog/tiff_named.jpg": ("excluded", "unsupported_format"),
            "cat/phone.heic": ("excluded", "unsupported_format"),
        }
    )
    # links: out of the dataset folder (refused), broken, a folder link out
    outside = root.parent / f"{root.name}_outside"
    put(outside / "secret.jpg", encoded(noise(500), "JPEG"))
    os.symlink(outside / "secret.jpg", root / "cat" / "escape.jpg")
    os.symlink(root / "cat" / "gone.jpg", root / "dog" / "broken.jpg")
    os.symlink(outside, root / "dog" / "more")
    expect.update(
        {
            "cat/escape.jpg": ("excluded", "outside_dataset"),
            "dog/broken.jpg": ("excluded", "broken_link"),
            "dog/more/": ("excluded", "outside_dataset"),
        }
    )
    # images outside class folders; an empty class folder; hidden and system files (silent)
    put(root / "loose.jpg", encoded(noise(501), "JPEG"))
    expect["loose.jpg"] = ("excluded", "not_in_class_folder")
    put(root / "README.txt", b"not data\n")
    put(root / "empty" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    expect["empty/"] = ("warning", "empty_class")
    for hidden in (
        ".DS_Store",
        "cat/.DS_Store",
        "cat/._cat_0.jpg",
        "dog/Thumbs.db",
        "cat/desktop.ini",
        ".ipynb_checkpoints/cat_0-checkpoint.jpg",
        "cat/.ipynb_checkpoints/cat_1-checkpoint.jpg",
        "__MACOSX/cat/._cat_0.jpg",
    ):
        put(root / hidden, b"\x00\x05\x16\x07 AppleDouble or thumbnail cache")
    return expect


def build_presplit(root):
    """train/ val/ test/ with classes a and b and known identical copies:
    X in train and test, Y in train, val and test, W in val (a) and test (b, a label conflict),
    Z twice in train. Returns (copies {name: [ids]}, leakage pairs {pair: groups})."""
    root = Path(root)
    seed = 0
    for subset, count in (("train", 6), ("val", 3), ("test", 3)):
        for label in ("a", "b"):
            for i in range(count):
                seed += 1
                put(root / subset / label / f"{label}{i}.png", encoded(noise(seed), "PNG"))
    copies = {
        "X": ["train/a/x.png", "test/a/x.png"],
        "Y": ["train/b/y.png", "val/b/y.png", "test/b/y.png"],
        "W": ["val/a/w.png", "test/b/w.png"],
        "Z": ["train/a/z1.png", "train/a/z2.png"],
    }
    for k, (_name, ids) in enumerate(copies.items()):
        data = encoded(noise(1000 + k), "PNG")
        for source in ids:
            put(root / source, data)
    pairs = {"train&test": 2, "train&val": 1, "val&test": 2}  # X, Y | Y | Y, W
    return copies, pairs


def build_manifest(root):
    """data/labels.csv (classes a, b) with every bad row of issue 6; returns (manifest, expect)."""
    root = Path(root)
    images = root / "data" / "images"
    for i in range(6):
        put(images / f"a{i}.png", encoded(noise(i), "PNG"))
        put(images / f"b{i}.png", encoded(noise(50 + i), "PNG"))
    put(images / "with space é.png", encoded(noise(99), "PNG"))
    put(images / "corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    rows = [f"images/a{i}.png,a" for i in range(6)]
    rows += [f"images/b{i}.png,b" for i in range(1, 6)]
    rows += [
        f"{images / 'b0.png'},b",  # absolute, inside: fine
        "images/with space é.png,b",
        "images/missing.png,a",
        "images/a0.png,a",  # the same row again
        "./images/a1.png,b",  # the same file again with another label
        "images/a2.png,",  # blank label
        "images/a3.png,zebra",  # not in classes
        "../../etc/passwd,a",
        "/etc/hostname,b",
        "images/corrupt.png,b",
    ]
    manifest = put(root / "data" / "labels.csv", ("path,label\n" + "\n".join(rows) + "\n").encode())
    expect = {
        "images/missing.png": ("excluded", "missing_file"),
        "images/a0.png": ("excluded", "duplicate_row"),
        "./images/a1.png": ("excluded", "duplicate_row"),
        "images/a2.png": ("excluded", "blank_label"),
        "images/a3.png": ("excluded", "unknown_label"),
        "../../etc/passwd": ("excluded", "path_outside_root"),
        "/etc/hostname": ("excluded", "path_outside_root"),
        "images/corrupt.png": ("excluded", "corrupt"),
    }
    return manifest, expect
