"""`evaluate` and `predict` on a tiny real run (a 1-epoch scratch CNN on digits, trained once per module)."""

import argparse
import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import DIGITS_DATASET, write_dataset_card, write_tiny_paper_card
from PIL import Image

from project.config.cards import load_config
from project.errors import UserError
from project.train.evaluate import compare, evaluate_cli, image_files, predict_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from project.train.training import train_run

    base = tmp_path_factory.mktemp("evaluate")
    paper = write_tiny_paper_card(base, **{"training.batch_size": 64})
    config = load_config(str(paper), str(write_dataset_card(base, "digits", **DIGITS_DATASET)))
    root = base / "runs" / config.run_name
    with contextlib.redirect_stdout(io.StringIO()):
        train_run(config, root, "baseline", verbose=0)
    return root / "baseline"


def call(function, **values):
    """A command's function with its arguments; returns (exit status, printed output, warnings included)."""
    args = argparse.Namespace(**{"run": None, "images": None, "output": None, **values})
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = function(args)
    return status, out.getvalue()


def copy_run(run, tmp_path):
    root = tmp_path / run.parent.name
    shutil.copytree(run.parent, root)
    return root / run.name


def test_evaluate_equals_stored_metrics(run):
    status, out = call(evaluate_cli, run=str(run))
    stored = json.loads((run / "metrics.json").read_text())["test"]
    assert status == 0, out
    assert "ok: the saved model reproduces metrics.json" in out
    assert f"{stored['accuracy']:.6f}" in out and f"{stored['loss']:.6f}" in out


def test_evaluate_fails_when_metrics_differ(run, tmp_path):
    copied = copy_run(run, tmp_path)
    path = copied / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["test"]["accuracy"] += 0.01
    path.write_text(json.dumps(metrics))
    status, out = call(evaluate_cli, run=str(copied))
    assert status == 1
    assert "MISMATCH" in out and "accuracy" in out and " NO" in out


def test_compare_tolerates_only_float_rounding():
    stored = {"count": 10, "accuracy": 0.5, "macro_f1": 0.4, "loss": 1.0, "confusion_matrix": [[1, 0], [0, 1]]}
    assert all(equal for *_, equal in compare(stored, dict(stored, loss=1.0 + 1e-9)))
    assert not all(equal for *_, equal in compare(stored, dict(stored, loss=1.001)))
    assert not all(equal for *_, equal in compare(stored, dict(stored, confusion_matrix=[[0, 1], [0, 1]])))


def test_incomplete_run_is_refused(run, tmp_path):
    copied = copy_run(run, tmp_path)
    (copied / "COMPLETE").unlink()
    with pytest.raises(UserError, match=r"interrupted or unfinished run .*`make train PAPER=tiny DATASET=digits`"):
        call(evaluate_cli, run=str(copied))
    with pytest.raises(UserError, match="interrupted or unfinished run"):
        call(predict_cli, run=str(copied), images=str(tmp_path))


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(
        UserError, match=r"no run at .*nothing__here/tuned: create it with `make tune PAPER=nothing DATASET=here`"
    ):
        call(evaluate_cli, run=str(tmp_path / "nothing__here" / "tuned"))
    with pytest.raises(UserError, match="--run is required"):
        call(predict_cli, images=str(tmp_path))


def test_predict_folder_matches_the_run_predictions(run, tmp_path):
    """Test images saved as PNG files get the class and probability the run recorded for them."""
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    recorded = pd.read_csv(run / "predictions.csv", dtype={"true": str, "predicted": str}).head(6)
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    for i, source in enumerate(recorded["source"]):
        index = int(source.split(":")[1])
        Image.fromarray(pixels[index], "L").save(
            folder / ("more" if i % 2 else ".") / f"{source.replace(':', '_')}.png"
        )
    (folder / ".DS_Store").write_bytes(b"\0\0")  # hidden files are not images
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_text("not a JPEG either")
    output = tmp_path / "out.csv"
    status, out = call(predict_cli, run=str(run), images=str(folder), output=str(output))
    table = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert status == 0 and f"7 images -> {output}" in out
    assert len(table) == 7 and list(table.columns) == ["file", "predicted", "probability", "top3", "error"]
    broken = table[table["file"].str.endswith("broken.jpg")].iloc[0]
    assert broken["predicted"] == "" and broken["error"].startswith("cannot decode")
    for row in recorded.itertuples():
        got = table[table["file"].str.endswith(f"{row.source.replace(':', '_')}.png")].iloc[0]
        assert got["predicted"] == row.predicted
        assert float(got["probability"]) == pytest.approx(row.confidence, abs=2e-6)
        top = got["top3"].split("; ")
        assert len(top) == 3 and top[0].startswith(f"{row.predicted} (")


def test_predict_files_and_patterns(run, tmp_path):
    for name in ("a.png", "b.png", "c.jpeg"):
        Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(tmp_path / name)
    assert image_files(f"{tmp_path / 'a.png'} {tmp_path / 'c.jpeg'}") == [tmp_path / "a.png", tmp_path / "c.jpeg"]
    assert image_files(str(tmp_path / "*.png")) == [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(UserError, match="does not exist"):
        image_files(str(tmp_path / "missing.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        image_files(str(tmp_path / "empty"))
    status, _ = call(predict_cli, run=str(run), images=str(tmp_path / "b.png"), output=str(tmp_path / "one.csv"))
    assert status == 0 and len(pd.read_csv(tmp_path / "one.csv")) == 1
