"""Four small guarantees (issue 15, part 6): a failed trial is one line on the console and a traceback in
its folder; npz labels may be strings; a weights file is found from the paper card's folder; text from
cards, folder names, file names and manifests reaches report.html escaped and report.md's tables intact."""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import DIGITS_DATASET, ROOT, make_image_folder, write_card, write_dataset_card, write_tiny_paper_card
from test_report import PAPER, make_report

from project.artifacts import write_json
from project.config.cards import load_config
from project.data.adapters import load_sources
from project.errors import UserError

# ------------------------------------------------------------------ a failed trial: one line, traceback in its log

# The tiny card with no normalization and plain SGD: learning rate 10 explodes within a few batches, 0.05 does
# not. Search seed 0 draws 10 first, then 0.05.
ONE_EXPLODES = {
    "model.scratch.normalization": "none",
    "training.optimizer": "sgd",
    "training.batch_size": 64,
    "search": {
        "objective": "val_accuracy",
        "seed": 0,
        "top_k": 1,
        "coarse": {"trials": 2, "epochs": 1},
        "fine": {"trials": 1, "epochs": 1},
        "space": {"learning_rate": {"choices": [0.05, 10.0]}},
    },
}


def test_an_exploded_trial_is_one_line_on_the_console_and_a_traceback_in_its_folder(tmp_path, project_env):
    paper = write_tiny_paper_card(tmp_path / "cards", **ONE_EXPLODES)
    dataset = write_dataset_card(tmp_path / "cards", "digits", **DIGITS_DATASET)
    result = project_env.run("tune", "--paper", paper, "--dataset", dataset, "--stage", "coarse", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    tuning = project_env.runs / "tiny__digits" / "tuning"
    trials = pd.read_csv(tuning / "trials.csv", dtype={"trial_id": str})
    assert sorted(trials.status) == ["completed", "exploded"], trials
    exploded = trials[trials.status == "exploded"].iloc[0]
    completed = trials[trials.status == "completed"].iloc[0]

    assert "Traceback" not in output
    log = tuning / "coarse" / f"trial_{exploded.trial_id}" / "error.log"
    assert not (tuning / "coarse" / f"trial_{completed.trial_id}" / "error.log").exists()
    traceback = log.read_text()
    assert traceback.startswith("Traceback") and "TrialExploded: exploded: training loss" in traceback
    lines = [line for line in output.splitlines() if "exploded" in line]
    assert len(lines) == 1, lines
    assert re.search(
        r"\[coarse\] trial \d/2 exploded \(training loss .* in epoch 1, batch \d+; traceback in ", lines[0]
    )
    assert lines[0].count(str(log)) == 1
    assert exploded.failure_reason.startswith("exploded: training loss")


def test_a_worker_says_in_one_line_why_its_trial_failed(tmp_path, tiny_paper_card, digits_card, monkeypatch, capsys):
    """A worker prints no progress line (the chief's oracle does): its tuner says it, from the same hook."""
    import keras_tuner

    from project.data.prepare import prepare
    from project.tune.hypermodel import CardHyperModel
    from project.tune.search_space import card_space
    from project.tune.tuning import StageOracle, StageTuner

    config = load_config(str(tiny_paper_card(tmp_path / "cards", **ONE_EXPLODES)), str(digits_card))
    objective = keras_tuner.Objective("val_accuracy", "max")
    space = card_space(config.paper.search)
    model = CardHyperModel(config, prepare(config, tmp_path / "run"), objective, space=space, epochs=1)
    oracle = StageOracle(tmp_path / "tuning", objective=objective, max_trials=2, seed=0)
    tuner = StageTuner(
        oracle=oracle, hypermodel=model, directory=str(tmp_path / "tuning"), project_name="coarse", stage="coarse"
    )
    trial = oracle.create_trial("tuner1")
    folder = Path(tuner.get_trial_dir(trial.trial_id))
    write_json(folder / "meta.json", {"status": "failed", "reason": "ValueError: a bad value\nand its details"})
    trial.status, trial.message = keras_tuner.engine.trial.TrialStatus.FAILED, "Traceback (most recent call last):\n..."
    for name, value in {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": "1",
        "KERASTUNER_TUNER_ID": "tuner1",
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()

    tuner.on_trial_end(trial)
    assert (folder / "error.log").read_text() == trial.message
    out = capsys.readouterr().out  # then Keras Tuner's own "Trial 1 Complete" lines
    line = f"[coarse] trial {trial.trial_id} failed: ValueError: a bad value (traceback in {folder / 'error.log'})"
    assert out.splitlines()[0] == line and "Traceback" not in out


# ------------------------------------------------------------------ npz with string labels


def save_npz(path, labels, **arrays):
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 5, 5, 3), dtype=np.uint8)
    np.savez(path, x=images, y=labels, **arrays)
    return images


def test_npz_string_labels_are_the_class_names_sorted(tmp_path):
    labels = np.array(["dog", "cat", "bird", "dog", "cat", "dog"])
    images = save_npz(tmp_path / "pets.npz", labels)
    sources = load_sources("npz", {"path": "pets.npz"}, tmp_path)
    assert sources.class_names == ["bird", "cat", "dog"]
    assert [sources.class_names[i] for i in sources.labels] == labels.tolist()
    assert np.array_equal(sources.items, images)

    # bytes (as h5py and older numpy code write them) are read as UTF-8; the card's classes give the order
    np.savez(tmp_path / "bytes.npz", x=images, y=np.char.encode(labels, "utf-8"))
    sources = load_sources("npz", {"path": "bytes.npz"}, tmp_path, classes=["dog", "cat", "bird"])
    assert sources.class_names == ["dog", "cat", "bird"] and sources.labels.tolist() == [0, 1, 2, 0, 1, 0]


def test_npz_label_problems_are_one_error_naming_the_file(tmp_path):
    save_npz(tmp_path / "pets.npz", np.array(["dog", "cat", "bird", "dog"]))
    with pytest.raises(UserError, match=r"pets.npz array 'y': labels \['bird'\] are not in the card's classes"):
        load_sources("npz", {"path": "pets.npz"}, tmp_path, classes=["cat", "dog"])
    save_npz(tmp_path / "blank.npz", np.array(["dog", " ", "cat"]))
    with pytest.raises(UserError, match="blank.npz array 'y': blank label at index 1"):
        load_sources("npz", {"path": "blank.npz"}, tmp_path)
    np.savez(tmp_path / "objects.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array(["a", None], dtype=object))
    with pytest.raises(UserError, match="array 'y' in .*objects.npz holds Python objects"):
        load_sources("npz", {"path": "objects.npz"}, tmp_path)


# ------------------------------------------------------------------ model.weights from the paper card's folder


def test_a_relative_weights_path_is_read_from_the_paper_cards_folder(tmp_path, digits_card, monkeypatch):
    folder = tmp_path / "cards" / "mine"
    (folder / "my.weights.h5").parent.mkdir(parents=True)
    (folder / "my.weights.h5").write_bytes(b"")
    model = {"backbone": "MobileNetV2", "input_size": 32, "weights": "my.weights.h5"}
    paper = write_tiny_paper_card(folder, "mobile", model=model)
    monkeypatch.chdir(tmp_path)  # neither the working directory nor the repository
    config = load_config(str(paper), str(digits_card))
    assert config.paper.model.weights == str(folder / "my.weights.h5")
    assert load_config(str(paper), str(digits_card), ["model.weights=../mine/my.weights.h5"]).paper.model.weights == (
        config.paper.model.weights
    )

    (folder / "my.weights.h5").unlink()
    with pytest.raises(UserError) as caught:
        load_config(str(paper), str(digits_card))
    (line,) = str(caught.value).splitlines()
    assert f"{paper}: model.weights: weights file {folder / 'my.weights.h5'} does not exist" in line
    assert "paper card's folder" in line


def test_validate_names_the_missing_weights_file_without_tensorflow(tmp_path, digits_card):
    model = {"backbone": "MobileNetV2", "input_size": 32, "weights": "gone.weights.h5"}
    paper = write_tiny_paper_card(tmp_path / "cards", model=model)
    code = (
        "import sys\nfrom project.commands.cli import main\ncode = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules\nsys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "validate", "--paper", str(paper), "--dataset", str(digits_card)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {paper}: model.weights: weights file {tmp_path / 'cards' / 'gone.weights.h5'} does not exist (a relative "
        f"path is read from the paper card's folder; accepted: imagenet, none, or the path of a Keras weights file)"
    ]


def test_the_weights_file_next_to_the_card_is_the_one_loaded(tmp_path, digits_card, monkeypatch):
    from project.model.classifier import backbone_of, build_model

    folder = tmp_path / "cards" / "mine"
    model = {"backbone": "MobileNetV2", "width": 0.35, "input_size": 32}
    random = write_tiny_paper_card(folder, "random", model=model)
    reference, _ = build_model(load_config(str(random), str(digits_card)).paper.model, 3)
    saved = backbone_of(reference)
    rng = np.random.default_rng(7)
    saved.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in saved.get_weights()])
    saved.save_weights(folder / "my.weights.h5")
    paper = write_tiny_paper_card(folder, "mine", model={**model, "weights": "my.weights.h5"})
    monkeypatch.chdir(tmp_path)

    built, source = build_model(load_config(str(paper), str(digits_card)).paper.model, 3)
    assert source.kind == "file" and source.detail == str(folder / "my.weights.h5")
    loaded = backbone_of(built).get_weights()
    assert len(loaded) == len(saved.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(loaded, saved.get_weights()))

    # a file of another backbone is one error naming it, not Keras' traceback
    other = write_tiny_paper_card(folder, "other", model={**model, "width": 0.5, "weights": "my.weights.h5"})
    with pytest.raises(UserError, match=rf"model.weights: {re.escape(str(folder))}/my.weights.h5 cannot be loaded"):
        build_model(load_config(str(other), str(digits_card)).paper.model, 3)


# ------------------------------------------------------------------ text from cards and files in the report

SCRIPT = "<script>alert(1)</script>"
# class names: a tag, a Markdown table's delimiter, one after a backslash, a line break, TeX for matplotlib
# (a manifest may hold any text)
HOSTILE_CLASSES = [SCRIPT, "a|b", "c\\|d", "new\nline", "$\\frac{$"]


def hostile_dataset(folder):
    """A csv-manifest dataset whose class names and file names hold SCRIPT, '|' and a newline (the file
    system allows all three in a path, '/' making SCRIPT's file sit in a sub-folder)."""
    make_image_folder(folder / "pics", {f"c{k}": 8 for k in range(len(HOSTILE_CLASSES))}, size=(12, 10))
    rows = []
    for k, name in enumerate(HOSTILE_CLASSES):
        for i in range(8):
            path = f"{name}_{i}.png"
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            (folder / "pics" / f"c{k}" / f"c{k}_{i}.png").rename(target)
            rows.append({"path": path, "label": name})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return write_card(
        folder / "hostile.yaml",
        {
            "description": "pictures <img src=x onerror=alert(2)> | with a pipe",
            "adapter": "csv",
            "options": {"manifest": "manifest.csv"},
            "split": {"val": 0.25, "test": 0.25, "seed": 0},
        },
    )


def markdown_cells(line):
    """The cells of one Markdown table row, split as GitHub does: at every '|' not escaped by a backslash."""
    cells, cell, chars = [], "", iter(line.strip()[1:-1])
    for char in chars:
        if char == "\\":
            cell += char + next(chars, "")
        elif char == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += char
    return [*cells, cell]


def markdown_tables(md):
    """Each table of a Markdown file as its list of rows (runs of lines that start with '|')."""
    tables, current = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_cells_and_tables_split_as_github_does():
    assert markdown_cells(r"| a\|b | c \\| d |") == [r" a\|b ", r" c \\", " d "]
    assert [len(t) for t in markdown_tables("x\n| a | b |\n| --- | --- |\n\n| c |\ny")] == [2, 1]


def test_text_from_cards_and_file_names_reaches_the_report_escaped(tmp_path, project_env):
    from project.train.training import train_run

    dataset = hostile_dataset(tmp_path / "data")
    paper = {**PAPER, "citation": {**PAPER["citation"], "title": "A <b>bold</b> claim | and\na line"}}
    paper["caveats"] = [f"caveat {SCRIPT}"]
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "tiny.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    config = load_config(str(tmp_path / "cards" / "tiny.yaml"), str(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        train_run(config, project_env.runs / config.run_name, "baseline", verbose=0)
    make_report(config, project_env.runs, tmp_path / "reports")
    folder = tmp_path / "reports" / config.run_name
    html, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()

    predictions = pd.read_csv(project_env.runs / config.run_name / "baseline" / "predictions.csv")
    assert set(predictions.true) == set(HOSTILE_CLASSES)  # the names reached the runs as they are
    assert "<script" not in html and "<img src=x" not in html and "<b>bold" not in html
    for text in (SCRIPT, "<b>bold</b>", "<img src=x onerror=alert(2)>"):
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in html, text

    tables = markdown_tables(md)
    assert tables
    for rows in tables:
        widths = [len(markdown_cells(row)) for row in rows]
        assert widths == [widths[0]] * len(widths), rows
    per_class = next(rows for rows in tables if markdown_cells(rows[0])[0].strip() == "class")
    names = [markdown_cells(row)[0].strip() for row in per_class[2:]]
    assert sorted(names) == sorted([SCRIPT, r"a\|b", r"c\\\|d", "new line", "$\\frac{$"])
    mistakes = next(rows for rows in tables if markdown_cells(rows[0])[0].strip() == "source")
    shown = {markdown_cells(row)[0].strip().replace("\\|", "|").replace("\\\\", "\\") for row in mistakes[2:]}
    assert shown and shown <= {source.replace("\n", " ") for source in predictions.source}
    # outside tables too, a line break in a name ends no heading, paragraph or list item
    assert "new line" in md and not re.search(r"^line", md, re.MULTILINE)
    assert "Reproducing *A <b>bold</b> claim | and a line*." in md
