"""Caches tied to their data (issue 15, part 2): the tf.data disk cache (runtime.cache: disk), the data
check's scan (data_scan.csv) and its converted copies are rebuilt when what they were built from
changes, with one line saying why, and reused as they are when nothing did."""

import json
import os

import numpy as np
from conftest import write_card, write_tiny_paper_card
from PIL import Image

from project.config.cards import load_config
from project.data import datacheck
from project.data.pipeline import make_dataset
from project.data.prepare import prepare
from project.train.training import feed_of

RED, BLUE = (250, 10, 10), (10, 10, 250)


def paint(path, colour, size=(16, 16)):
    """New content for an image file: a flat colour (so a new size and a new modification time)."""
    Image.new("RGB", size, colour).save(path)
    return path


def batches(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys).argmax(axis=1)


def stamp(path):
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns


def test_the_disk_cache_and_the_scan_are_rebuilt_for_a_changed_image_and_reused_otherwise(
    tmp_path, image_folder, capsys
):
    image_folder(tmp_path / "data", {"cat": 6, "dog": 6}, size=(16, 16))
    card = write_card(
        tmp_path / "data.yaml", {"adapter": "folder", "options": {"path": "data"}, "split": {"val": 0.25, "test": 0.25}}
    )
    config = load_config(str(write_tiny_paper_card(tmp_path, runtime={"cache": "disk"})), str(card))
    root = tmp_path / "run"
    data = prepare(config, root)
    feed = feed_of(config.paper)
    first = batches(data.dataset("val", feed))
    index, scan = root / "cache" / "val_16x16.index", root / "data_scan.csv"
    assert index.exists() and (root / "cache" / "val_16x16.manifest.json").exists()
    before = stamp(index), stamp(scan)
    capsys.readouterr()

    # nothing changed: both caches are used as they are
    data = prepare(config, root)
    again = batches(data.dataset("val", feed))
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
    assert (stamp(index), stamp(scan)) == before
    out = capsys.readouterr().out
    assert "rebuilt" not in out and "data-check cache updated" not in out

    # one validation image painted over: the scan reads it again, the cache is built again with it
    victim = str(paint(tmp_path / "data" / data.ids("val")[0], RED))
    data = prepare(config, root)
    fresh = batches(data.dataset("val", feed))
    out = capsys.readouterr().out
    assert f"data-check cache updated: 1 image changed ({victim}) since the last scan" in out
    assert f"cache for val_16x16 rebuilt: 1 image changed ({victim})" in out
    assert np.all(fresh[0][0] == RED) and not np.array_equal(fresh[0][0], first[0][0])
    assert np.array_equal(fresh[0][1:], first[0][1:])
    assert stamp(index) != before[0]


def test_a_renamed_or_an_added_image_rebuilds_both_caches(tmp_path, image_folder, capsys):
    image_folder(tmp_path / "data", {"cat": 3, "dog": 3}, size=(16, 16))
    files = sorted(str(p) for p in (tmp_path / "data").rglob("*.png"))
    labels = [0, 0, 0, 1, 1, 1]
    prefix = tmp_path / "cache" / "val_16x16"
    prefix.parent.mkdir()
    root = tmp_path / "run"

    def load(files, labels):
        datacheck.scan(files, root)
        return batches(make_dataset(files, labels, "files", size=(16, 16), num_classes=2, batch_size=4, cache=prefix))

    first = load(files, labels)
    capsys.readouterr()

    old, new = files[0], str(tmp_path / "data" / "cat" / "renamed.png")
    os.rename(old, new)
    renamed = [new, *files[1:]]
    x, y = load(renamed, labels)
    out = capsys.readouterr().out
    assert f"data-check cache updated: 1 image added ({new}); 1 image gone ({old}) since the last scan" in out
    assert f"cache for val_16x16 rebuilt: 1 image added ({new}); 1 image gone ({old})" in out
    assert np.array_equal(x, first[0]) and np.array_equal(y, first[1])

    added = str(paint(tmp_path / "data" / "dog" / "added.png", BLUE))
    x, y = load([*renamed, added], [*labels, 1])
    out = capsys.readouterr().out
    assert f"data-check cache updated: 1 image added ({added}) since the last scan" in out
    assert f"cache for val_16x16 rebuilt: 1 image added ({added})" in out
    assert len(x) == 7 and np.all(x[-1] == BLUE) and y[-1] == 1

    # unchanged: reused; a relabelled image, a deleted manifest, another input size: rebuilt
    load([*renamed, added], [*labels, 1])
    assert "rebuilt" not in capsys.readouterr().out
    x, y = load([*renamed, added], [*labels, 0])
    assert f"cache for val_16x16 rebuilt: 1 label changed ({added})" in capsys.readouterr().out
    assert y[-1] == 0
    prefix.with_name("val_16x16.manifest.json").unlink()
    load([*renamed, added], [*labels, 1])
    assert "cache for val_16x16 rebuilt: no record of what it was built from" in capsys.readouterr().out
    x = batches(make_dataset(renamed, labels, "files", size=(8, 8), num_classes=2, batch_size=4, cache=prefix))[0]
    out = capsys.readouterr().out
    assert "cache for val_16x16 rebuilt: size [16, 16] -> [8, 8]; 1 image gone" in out and x.shape[1:3] == (8, 8)


def test_a_training_cache_written_in_another_seed_s_order_is_rebuilt(tmp_path, capsys):
    images = np.arange(10, dtype=np.uint8).repeat(16 * 16 * 3).reshape(10, 16, 16, 3)
    prefix = tmp_path / "train_16x16"

    def epoch(seed):
        data = make_dataset(
            images, np.arange(10) % 2, "array", size=(16, 16), num_classes=2, batch_size=5,
            training=True, cache=prefix, seed=seed,
        )  # fmt: skip
        return [int(x[0, 0, 0]) for batch, _ in data for x in batch.numpy()]

    first = epoch(0)
    capsys.readouterr()
    assert epoch(0) == first and "rebuilt" not in capsys.readouterr().out
    other = epoch(1)
    assert "cache for train_16x16 rebuilt: written in another order (another seed)" in capsys.readouterr().out
    assert sorted(other) == sorted(first) == list(range(10))
    images[3] = 77  # an array image changed in memory: its content hash differs
    assert 77 in epoch(1) and "cache for train_16x16 rebuilt: 1 image changed (3)" in capsys.readouterr().out


def test_converted_copies_follow_their_original_and_the_check_settings(tmp_path, monkeypatch, capsys):
    source = tmp_path / "data" / "cmyk.jpg"
    source.parent.mkdir()
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(source, quality=95)  # red, converted to RGB
    root = tmp_path / "run"

    def copy_of(rows):
        assert rows[0]["status"] == "converted"
        return root / "converted" / f"{rows[0]['hash']}.png"

    red = copy_of(datacheck.scan([str(source)], root))
    assert np.abs(np.asarray(Image.open(red), int)[6, 6] - [255, 0, 0]).max() < 12
    assert json.loads((root / "data_scan.json").read_text())["settings"]["max_side"] == datacheck.MAX_SIDE
    capsys.readouterr()

    Image.new("CMYK", (12, 12), (255, 255, 0, 0)).save(source, quality=95)  # now blue
    blue = copy_of(datacheck.scan([str(source)], root))
    assert f"data-check cache updated: 1 image changed ({source})" in capsys.readouterr().out
    assert blue != red and np.abs(np.asarray(Image.open(blue), int)[6, 6] - [0, 0, 255]).max() < 12

    before = stamp(blue)
    assert copy_of(datacheck.scan([str(source)], root)) == blue and stamp(blue) == before  # unchanged: reused
    assert "data-check cache" not in capsys.readouterr().out

    monkeypatch.setattr(datacheck, "MAX_SIDE", 1024)  # as a new version of the check would change it
    assert copy_of(datacheck.scan([str(source)], root)) == blue
    out = capsys.readouterr().out
    assert "data-check cache rebuilt (the scan and 2 converted copies): max_side 2048 -> 1024" in out
    assert stamp(blue) != before and not red.exists()  # made again; the stale copy is gone
