"""The data check (issue 6 section 1) on hostile datasets generated at test time (tests/hostile.py):
every bad file excluded with its reason, odd ones converted and kept, leakage counted, and a
training run that completes on the hostile folder."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import hostile
import numpy as np
import pandas as pd
import pytest

from project.commands.cli import main

REPO = Path(__file__).resolve().parent.parent
FOLDER_CARD = "adapter: folder\noptions: {path: data}\nsplit: {val: 0.2, test: 0.2, seed: 0}\n"


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """A 12000x12000 JPEG, encoded once for the module (~3 s)."""
    return hostile.huge_jpeg(tmp_path_factory.mktemp("huge") / "huge.jpg")


def issues_of(runs, run):
    return pd.read_csv(runs / run / "data_issues.csv", dtype=str, keep_default_na=False)


def listed(table):
    return {row.source: (row.action, row.reason) for row in table.itertuples()}


def test_hostile_folder_is_checked_then_trains_to_completion(tmp_path, huge, capfd):
    expect = hostile.build_folder(tmp_path / "data", huge=huge)
    paper, dataset = hostile.write_cards(tmp_path, FOLDER_CARD)
    runs = tmp_path / "runs"
    cards = ["--paper", str(paper), "--dataset", str(dataset), "--runs-dir", str(runs)]

    assert main(["check-data", *cards]) == 0
    out = capfd.readouterr().out
    table = issues_of(runs, "tiny__hostile")
    assert listed(table) == expect  # hidden and system files: silently absent
    for (action, reason), count in table.groupby(["action", "reason"]).size().items():
        assert f"{count:5d}  {action:9s} {reason}" in out
    assert "class 'bird' has 2 image(s), fewer than the 3 a train/val/test split needs" in out

    # what the pipeline gets for the kept files: TensorFlow decodes them all to upright 8-bit RGB
    from project.config.cards import load_config
    from project.data import datacheck, pipeline
    from project.data.adapters import load_sources

    config = load_config(str(paper), str(dataset))
    sources = load_sources("folder", config.dataset.options, tmp_path, None)
    kept = datacheck.check(config, sources, runs / "tiny__hostile").sources
    assert kept.class_names == ["bird", "cat", "dog"]
    item = dict(zip(kept.ids, kept.items))
    assert {"cat/chat noir é.JPG", "cat/数字 1.Jpeg", "dog/UPPER.PNG", "dog/grey.png", "dog/tiny.png"} <= set(item)
    assert len(item) == 10 + 10 + 2 + 5 + sum(1 for action, _ in expect.values() if action == "converted")
    decoded = {name: pipeline.decode(item[name]).numpy() for name in item}
    assert all(image.ndim == 3 and image.shape[2] == 3 for image in decoded.values())
    assert decoded["cat/rgba.png"][5, 2].tolist() == [255, 255, 255] and decoded["cat/rgba.png"][5, 9].tolist() == [
        255,
        0,
        0,
    ]
    assert decoded["cat/la.png"][5, 2].tolist() == [255, 255, 255] and decoded["cat/la.png"][5, 9].tolist() == [
        60,
        60,
        60,
    ]
    assert decoded["cat/palette.png"][5, 2].tolist() == [255, 255, 255] and decoded["cat/palette.png"][
        5, 9
    ].tolist() == [0, 255, 0]
    assert np.abs(decoded["cat/cmyk.jpg"][6, 6].astype(int) - [255, 0, 0]).max() < 12
    assert decoded["dog/deep16.png"][6, 6].tolist() == [128, 128, 128]  # 0x8000 of 0xFFFF
    rotated = decoded["dog/rotated.jpg"]
    assert rotated.shape == (20, 10, 3)  # stored 20 wide, shown 10 wide: orientation applied
    assert rotated[3, 5, 0] > 200 and rotated[3, 5, 2] < 50 and rotated[16, 5, 2] > 200 and rotated[16, 5, 0] < 50
    assert max(decoded["cat/huge.jpg"].shape[:2]) == datacheck.MAX_SIDE
    assert decoded["dog/tiny.png"].shape == (1, 1, 3)
    assert item["cat/cmyk.jpg"].startswith(str(runs / "tiny__hostile" / "converted"))
    assert item["dog/grey.png"] == str(tmp_path / "data" / "dog" / "grey.png")

    # a file damaged after the scan, its size and time kept: the cached scan still lists it as
    # fine, the pipeline skips it (a counted warning during training, named when evaluated), and
    # training completes
    victim = tmp_path / "data" / "dog" / "dog_3.png"
    stat = victim.stat()
    victim.write_bytes(b"\x00" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert main(["train", *cards, "--quiet"]) == 0
    captured = capfd.readouterr()
    assert "image dog/dog_3.png could not be decoded and was skipped" in captured.err
    run = runs / "tiny__hostile" / "baseline"
    assert (run / "COMPLETE").exists() and (run / "metrics.json").exists()
    issues = issues_of(runs, "tiny__hostile")
    skipped = issues["action"] == "skipped"
    assert issues[~skipped].reset_index(drop=True).equals(table), "the second scan reused the cache"
    assert issues[skipped]["source"].tolist() == ["dog/dog_3.png"]
    split = pd.read_csv(runs / "tiny__hostile" / "split.csv")
    assert sorted(split["source"]) == sorted(kept.ids)

    # a new modification time: scanned again, and now excluded
    os.utime(victim)
    rescanned = datacheck.check(
        config, load_sources("folder", config.dataset.options, tmp_path, None), runs / "tiny__hostile"
    )
    assert "dog/dog_3.png" not in rescanned.sources.ids
    assert ("dog/dog_3.png", "corrupt") in {(i["source"], i["reason"]) for i in rescanned.issues}


def test_a_huge_jpeg_is_downscaled_on_decode_without_the_memory_of_a_full_decode(tmp_path, huge):
    """12000x12000 pixels: a full decode needs 144 MB (grey) before any conversion; the scan
    decodes at 1/4 scale. Measured in a fresh process: peak memory growth during the scan."""
    code = (
        "import resource, sys\n"
        "from project.data import datacheck\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "row = datacheck.inspect(sys.argv[1], sys.argv[2])\n"
        "print(row['status'], row['width'], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(huge), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    status, width, growth_mb = result.stdout.split()
    assert (status, width) == ("converted", "12000")
    assert int(growth_mb) < 100, f"the scan grew by {growth_mb} MB"
    from PIL import Image

    [copy] = tmp_path.glob("*.png")
    assert Image.open(copy).size == (2048, 2048)


def test_leakage_across_subsets_is_counted_and_drop_duplicates_keeps_one_copy(tmp_path, capsys):
    copies, pairs = hostile.build_presplit(tmp_path / "data")
    paper, dataset = hostile.write_cards(
        tmp_path, "adapter: folder\noptions: {path: data}\nsplit: provided\n", name="presplit"
    )
    runs = tmp_path / "runs"
    cards = ["--paper", str(paper), "--dataset", str(dataset), "--runs-dir", str(runs)]

    assert main(["check-data", *cards]) == 0
    out = capsys.readouterr().out
    table = issues_of(runs, "tiny__presplit")
    leaking = {i for name in ("X", "Y", "W") for i in copies[name]}
    assert set(table[table.reason == "leakage"]["source"]) == leaking
    assert set(table[table.reason == "duplicate"]["source"]) == set(copies["Z"])
    assert (table["action"] == "warning").all()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(pairs.items()))
    assert f"3 groups of identical images span subsets ({counts})" in out

    assert main(["check-data", *cards, "--set", "data.drop_duplicates=true"]) == 0
    table = issues_of(runs, "tiny__presplit")
    assert set(table["reason"]) == {"duplicate"} and set(table["action"]) == {"excluded"}
    assert set(table["source"]) == {"train/a/x.png", "train/b/y.png", "val/b/y.png", "val/a/w.png", "train/a/z2.png"}

    from project.config.cards import load_config
    from project.data.prepare import prepare

    data = prepare(load_config(str(paper), str(dataset), ["data.drop_duplicates=true"]), tmp_path / "prepared")
    where = {}
    for subset in ("train", "val", "test"):
        for path in data.items(subset):
            where.setdefault(hashlib.sha256(Path(path).read_bytes()).hexdigest(), []).append(subset)
    assert all(len(subsets) == 1 for subsets in where.values()), "one copy per image, in one subset"
    assert {"test/a/x.png", "test/b/y.png", "test/b/w.png", "train/a/z1.png"} <= set(
        data.ids("test") + data.ids("train")
    )


def test_manifest_rows_are_rejected_with_their_reasons(tmp_path):
    manifest, expect = hostile.build_manifest(tmp_path)
    card = "adapter: csv\noptions: {manifest: data/labels.csv}\nclasses: [a, b]\nsplit: {val: 0.2, test: 0.2}\n"
    paper, dataset = hostile.write_cards(tmp_path, card, name="manifest")
    runs = tmp_path / "runs"
    assert main(["check-data", "--paper", str(paper), "--dataset", str(dataset), "--runs-dir", str(runs)]) == 0
    table = issues_of(runs, "tiny__manifest")
    assert listed(table) == expect
    assert "lies outside" in table.set_index("source").loc["../../etc/passwd", "detail"]
    assert "with label 'b' (kept: 'a')" in table.set_index("source").loc["./images/a1.png", "detail"]

    from project.config.cards import load_config
    from project.data import datacheck
    from project.data.adapters import load_sources

    config = load_config(str(paper), str(dataset))
    sources = load_sources("csv", config.dataset.options, tmp_path, ["a", "b"])
    kept = datacheck.check(config, sources, tmp_path / "check").sources
    names = np.array(kept.class_names)[kept.labels]
    assert sorted(zip(kept.ids, names)) == sorted(
        [(f"images/a{i}.png", "a") for i in range(6)]
        + [(f"images/b{i}.png", "b") for i in range(1, 6)]
        + [(str(tmp_path / "data" / "images" / "b0.png"), "b"), ("images/with space é.png", "b")]
    )


def test_classes_left_without_images_and_a_single_class(tmp_path, capsys, image_folder):
    data = image_folder(tmp_path / "data", classes={"a": 4, "b": 4, "c": 2})
    for file in (data / "c").iterdir():
        file.write_bytes(b"broken")
    (data / "d").mkdir()
    from project.config.cards import load_config
    from project.data import datacheck
    from project.data.adapters import load_sources

    paper, _ = hostile.write_cards(tmp_path, FOLDER_CARD)
    for classes, names in ((None, ["a", "b"]), (["a", "b", "c", "d"], ["a", "b", "c", "d"])):
        card = FOLDER_CARD + (f"classes: {classes}\n" if classes else "")
        dataset = tmp_path / "classes.yaml"
        dataset.write_text(card)
        config = load_config(str(paper), str(dataset))
        result = datacheck.check(
            config, load_sources("folder", config.dataset.options, tmp_path, classes), tmp_path / "r"
        )
        kept = result.sources
        assert kept.class_names == names
        assert np.array(names)[kept.labels].tolist() == ["a"] * 4 + ["b"] * 4  # renumbered when c is dropped
        warnings = {i["source"]: i["detail"] for i in result.issues if i["reason"] == "empty_class"}
        assert ("kept" if classes else "dropped") in warnings["c"]

    for file in (data / "b").iterdir():
        file.write_bytes(b"")
    dataset.write_text(FOLDER_CARD)
    assert (
        main(["check-data", "--paper", str(paper), "--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs")])
        == 2
    )
    assert "only 1 class (a) has usable images after the data check" in capsys.readouterr().err
    table = issues_of(tmp_path / "runs", "tiny__classes")
    assert set(table[table.reason == "empty_file"]["source"]) == {f"b/b_{i}.png" for i in range(4)}


def test_a_class_too_small_for_the_split_warns_and_the_split_falls_back(tmp_path, capsys, image_folder):
    """bird has 2 images: the check says so, and split.py falls back to a plain random split
    (with a warning) that still assigns every image."""
    from project.config.cards import load_config
    from project.data.adapters import load_sources
    from project.data.split import make_split

    image_folder(tmp_path / "data", classes={"cat": 8, "dog": 8, "bird": 1})
    paper, dataset = hostile.write_cards(tmp_path, FOLDER_CARD)
    assert (
        main(["check-data", "--paper", str(paper), "--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs")])
        == 0
    )
    assert "class 'bird' has 1 image(s), fewer than the 3" in capsys.readouterr().out
    config = load_config(str(paper), str(dataset))
    sources = load_sources("folder", config.dataset.options, tmp_path, None)
    with pytest.warns(UserWarning, match="falling back to a plain random split"):
        subsets = make_split(sources.labels, config.dataset.split)
    assert set(subsets) == {"train", "val", "test"} and len(subsets) == 17
