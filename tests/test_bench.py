"""The benchmarks run end to end on tiny sizes and write every figure; their verdicts are right.
Nothing here times anything: speed figures live in reports/bench/, never in a test."""

import json

import numpy as np
import pytest
from conftest import TINY_SEARCH, write_tiny_paper_card

from benchmarks.bench import attempt
from benchmarks.images import generate_images
from benchmarks.settings import BENCH_FIGURES, DATA_FIGURES, QUICK
from benchmarks.table import figure
from project.commands.cli import main

SEARCH = {
    **TINY_SEARCH,
    "coarse": {"trials": 2, "epochs": 1},
    "space": {"learning_rate": {"min": 0.001, "max": 0.05, "sampling": "log"}},
}


def assert_every_figure(figures, keys):
    assert sorted(figures) == sorted(keys)
    for key, row in figures.items():
        value = row["value"]
        assert isinstance(value, (int, float)) or value.startswith("not measured: "), (key, value)
        assert row["met"] in ("met", "not met", "-", "not measured"), (key, row["met"])


@pytest.mark.slow
def test_bench_data_quick_writes_every_pipeline_figure(tmp_path):
    assert main(["bench-data", "--quick", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_data.json").read_text())
    assert_every_figure(report["figures"], DATA_FIGURES)
    # every contender ran here: numbers, not reasons
    assert all(isinstance(row["value"], float) and row["value"] > 0 for row in report["figures"].values())
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["albumentations"] == "2.0.8"
    assert report["settings"]["images"] == QUICK["images"] and report["quick"] is True
    targets = {key: row["target"] for key, row in report["figures"].items()}
    assert (targets["bare_loop"], targets["template_one_core"]) == (None, ">= 0.7")
    assert targets["template_all_cores"] == f">= {0.8 * report['machine']['cpu_count']:g}"


@pytest.mark.slow
def test_bench_quick_writes_json_and_markdown_with_every_figure(tmp_path, digits_card):
    import tensorflow as tf

    card = write_tiny_paper_card(tmp_path / "cards", search=SEARCH)
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--quick",
            "--paper",
            str(card),
            "--dataset",
            str(digits_card),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    figures = report["figures"]
    assert_every_figure(figures, BENCH_FIGURES)
    measured = [k for k in BENCH_FIGURES if k != "accelerator"]
    assert [k for k in measured if not isinstance(figures[k]["value"], float)] == []
    if not tf.config.list_physical_devices("GPU"):
        assert figures["accelerator"]["value"] == "not measured: no accelerator"
    tuner = report["details"]["tuner"]
    assert tuner["1"]["trials"] == 1 and tuner["3"]["trials"] == 3  # the resumed search ran two more trials only
    assert 0 < tuner["3"]["fit_seconds"] < tuner["3"]["trial_seconds"] < tuner["3"]["search_seconds"]
    assert len(tuner["3"]["reused_fixed_shares"]) == 1  # the resumed search's second trial reused its first one's model
    sizes = report["details"]["dataset size"]
    assert [len(sizes[str(n)]["rounds"]) for n in QUICK["scaling_sizes"]] == [QUICK["scaling_rounds"]] * 3
    rank = report["details"]["rank agreement"]
    assert len(rank["coarse"]) == len(rank["full"]) == 3 and -1 <= figures["rank_agreement"]["value"] <= 1
    markdown = (out / "bench.md").read_text()
    assert "| figure | value | reference | ratio | target | met |" in markdown
    assert all(row["figure"] in markdown for row in figures.values())
    assert not (tmp_path / "runs").exists()  # the bench works in temporary folders only


def test_verdicts_against_targets():
    assert figure("x", 0.69, "images/s", "bare", 1.0, (">=", 0.7))["met"] == "not met"
    row = figure("x", 0.7, "images/s", "bare", 1.0, (">=", 0.7))
    assert row["met"] == "met" and row["ratio"] == pytest.approx(0.7)
    assert figure("x", 11.1, "s", "bare", 10.0, ("<=", 1.10))["met"] == "not met"
    assert figure("x", 10.9, "s", "bare", 10.0, ("<=", 1.10))["met"] == "met"
    assert figure("share", 0.06, target=("<=", 0.05))["met"] == "not met"  # no reference: the value itself
    assert figure("share", 0.04, target=("<=", 0.05))["met"] == "met"
    assert figure("x", 5.0)["met"] == "-"
    assert figure("x", "not measured: no accelerator", target=(">=", 0.9))["met"] == "not measured"
    assert figure("x", 5.0, "s", "bare", "not measured: broken", ("<=", 1.1))["met"] == "not measured"
    assert figure("x", float("nan"))["value"] == "not measured: no value (nan)"


def test_a_failing_section_becomes_a_reason_not_an_error(capsys):
    rows, details = attempt("tuner", lambda: 1 / 0, {"a": "figure a", "b": "figure b"})
    assert rows["a"]["value"] == "not measured: ZeroDivisionError: division by zero" == details["error"]
    assert details["section_seconds"] >= 0
    assert rows["b"]["figure"] == "figure b" and rows["b"]["met"] == "not measured"
    assert "tuner: not measured" in capsys.readouterr().out


def test_generated_images_are_jpegs_of_the_size_in_class_folders(tmp_path):
    from PIL import Image

    files, labels = generate_images(tmp_path, 6, 40)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert [f.split("/")[-2] for f in files] == [f"class{k}" for k in labels]
    with Image.open(files[5]) as image:
        assert image.format == "JPEG" and image.size == (40, 40)
    assert not np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(files[4])))


def test_an_unusable_output_folder_is_refused_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["bench-data", "--quick", "--output", str(blocker / "bench")]) == 2
    assert "--output" in capsys.readouterr().err
