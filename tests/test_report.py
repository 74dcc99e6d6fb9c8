"""The before/after report, built from a tiny real run: a 1-epoch baseline and a 2-trial tune (one
coarse, one fine trial, then the retrained winner) of a scratch CNN on digits, made once per module.
"""

import argparse
import contextlib
import io
import json
import re
import shutil

import pandas as pd
import pytest
import yaml
from helpers.browser import Chromium
from markupsafe import escape
from PIL import Image
from scipy import stats

from project import figures
from project.artifacts import write_json
from project.config.cards import load_config
from project.errors import UserError
from project.records import Sanity, Trials
from project.report import render as report_module
from project.report.blocks import mean_std
from project.report.sections_search import normalise_trials, stage_table, top_table
from project.train.metrics import wilson_interval

PAPER = {
    "citation": {
        "title": "A tiny test CNN",
        "authors": ["Test Author"],
        "venue": "pytest",
        "year": 2020,
        "link": "https://example.org/paper",
    },
    "reported": [{"dataset": "MNIST", "metric": "accuracy", "value": 0.99, "where": "Table 2", "test_size": 10000}],
    "caveats": ["A one-epoch toy model."],
    "intended_use": "Testing the report.",
    "seed": 1,
    "model": {
        "backbone": "scratch",
        "weights": "none",
        "input_size": 16,
        "scratch": {"blocks": [8], "convs_per_block": 1},
        "head": {"pooling": "avg", "dropout": 0.1},
    },
    "training": {
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 32,
        "stages": [{"name": "train", "epochs": 1}],
    },
    "augmentation": [],
    "search": {
        "objective": "val_accuracy",
        "direction": "max",
        "seed": 3,
        "top_k": 1,
        "coarse": {"trials": 1, "epochs": 1},
        "fine": {"trials": 1, "epochs": 1},
        "space": {
            "learning_rate": {"min": 0.001, "max": 0.05, "sampling": "log"},
            "dropout": {"min": 0.0, "max": 0.4},
            "batch_size": {"choices": [32, 64]},
        },
    },
    "assumed": ["training.batch_size", "model.input_size"],
}
DATASET = {
    "description": "scikit-learn digits",
    "adapter": "digits",
    "options": {},
    "split": {"val": 0.15, "test": 0.2, "seed": 0},
}
HEADINGS = [f"## {i}. {title}" for i, title in enumerate(report_module.SECTIONS, 1)]


def write_cards(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(PAPER, sort_keys=False))
    (folder / "digits.yaml").write_text(yaml.safe_dump(DATASET, sort_keys=False))
    return load_config(str(folder / "tiny.yaml"), str(folder / "digits.yaml"))


def arguments(runs, reports, target=None, pdf=False):
    return argparse.Namespace(runs_dir=str(runs), reports_dir=str(reports), target=target, pdf=pdf)


def make_report(config, runs, reports, target=None, pdf=False):
    """Run the `report` command's function; returns its printed output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report_module.cli(config, arguments(runs, reports, target, pdf))
    return out.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from project.train.training import train_run
    from project.tune.tuning import tune

    base = tmp_path_factory.mktemp("report")
    config = write_cards(base / "cards")
    runs = base / "runs"
    root = runs / config.run_name
    with contextlib.redirect_stdout(io.StringIO()):
        train_run(config, root, "baseline", verbose=0)
        tune(config, root, trials=1, epochs=1, verbose=0)
    printed = make_report(config, runs, base / "reports")
    folder = base / "reports" / config.run_name
    return {
        "config": config,
        "runs": runs,
        "root": root,
        "folder": folder,
        "printed": printed,
        "base": base,
        "md": (folder / "report.md").read_text(),
        "html": (folder / "report.html").read_text(),
        "before": json.loads((root / "baseline" / "metrics.json").read_text()),
        "after": json.loads((root / "tuned" / "metrics.json").read_text()),
    }


def copy_root(made, tmp_path, keep=("baseline", "tuned", "tuning")):
    """A copy of the run root (split files and the chosen run folders) to change without touching the original."""
    root = tmp_path / "runs" / made["config"].run_name
    root.mkdir(parents=True)
    for item in made["root"].iterdir():
        if item.is_file():
            shutil.copy2(item, root / item.name)
        elif item.name in keep:
            shutil.copytree(item, root / item.name)
    return root


def section(md, number):
    start = md.index(HEADINGS[number - 1])
    end = md.index(HEADINGS[number]) if number < len(HEADINGS) else len(md)
    return md[start:end]


# ------------------------------------------------------------------ contents


def test_every_section_present_in_order(made):
    md, html = made["md"], made["html"]
    positions = [md.index(h) for h in HEADINGS]
    assert positions == sorted(positions)
    titles = re.findall(r"<h2>\d+\. ([^<]+)</h2>", html)
    assert titles == report_module.SECTIONS


def test_summary_numbers_equal_metrics_json(made):
    before, after = made["before"], made["after"]
    summary = section(made["md"], 1)
    for key, label in (
        ("test_accuracy", "test accuracy"),
        ("test_macro_f1", "test macro-F1"),
        ("test_loss", "test loss (cross-entropy)"),
    ):
        row = f"| {label} | {before[key]:.4f} | {after[key]:.4f} | {after[key] - before[key]:+.4f} |"
        assert row in summary
    for m in (before, after):
        count = m["test"]["count"]
        lo, hi = wilson_interval(round(m["test_accuracy"] * count), count)
        assert f"[{lo:.4f}, {hi:.4f}]" in summary
    target = PAPER.get("target_accuracy", 0.97)
    assert f"target {target:.4f}" in summary
    assert ("Target met" in summary) == (after["test_accuracy"] >= target)
    written = json.loads((made["folder"] / "metrics.json").read_text())
    assert written["before"]["test_accuracy"] == before["test_accuracy"]
    assert written["after"]["test_loss"] == after["test_loss"]


def test_per_class_numbers_equal_metrics_json(made):
    per_class = section(made["md"], 6)
    for name, b in made["before"]["per_class"].items():
        a = made["after"]["per_class"][name]
        row = (
            f"| {name} | {b['support']} | {b['precision']:.4f} | {b['recall']:.4f} | {b['f1']:.4f} | "
            f"{a['precision']:.4f} | {a['recall']:.4f} | {a['f1']:.4f} | {a['f1'] - b['f1']:+.4f} |"
        )
        assert row in per_class


def test_cli_prints_report_path_and_summary_table(made):
    printed = made["printed"]
    assert str(made["folder"] / "report.md") in printed
    assert json.loads((made["folder"] / "comparison.json").read_text())["headline"] in printed
    assert (
        f"| test accuracy | {made['before']['test_accuracy']:.4f} | {made['after']['test_accuracy']:.4f} |" in printed
    )
    assert "Target" in printed


def test_figures_are_valid_pngs(made):
    names = re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", made["md"])
    expected = {
        "curves_before.png",
        "curves_after.png",
        "confusion_before.png",
        "confusion_after.png",
        "misclassified.png",
        "trials_learning_rate.png",
        "trials_dropout.png",
        "trials_batch_size.png",
        "reliability.png",
        "trials_parallel.png",
        "summary.png",
        "gradcam.png",
    }
    assert expected <= set(names)
    for name in names:
        with Image.open(made["folder"] / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100


def test_the_search_is_in_tensorboards_hparams_dashboard(made):
    hparams = made["root"] / "tuning" / "hparams"
    trials = pd.read_csv(made["root"] / "tuning" / "trials.csv", dtype={"trial_id": str})
    assert sorted(p.name for p in hparams.iterdir() if p.is_dir()) == sorted(
        f"{s}-{t}" for s, t in zip(trials["stage"], trials["trial_id"])
    )
    assert list(hparams.glob("events.out.tfevents.*"))


def test_calibration_section_fits_the_temperature_on_val_and_keeps_the_accuracy(made):
    from project.report.calibration import calibrate, probabilities_of

    text = section(made["md"], report_module.SECTIONS.index("Calibration") + 1)
    names = made["before"]["class_names"]
    folder = made["root"] / "baseline"
    read = lambda name: pd.read_csv(folder / name, dtype={"true": str})  # noqa: E731
    expected = calibrate(
        probabilities_of(read("predictions.csv"), names), probabilities_of(read("predictions_val.csv"), names)
    )
    assert (
        f"**Before:** ECE {expected['ece']:.3f} → {expected['ece_scaled']:.3f} after temperature "
        f"T = {expected['temperature']:.2f} fitted on val" in text
    )
    data = json.loads((made["folder"] / "metrics.json").read_text())
    assert data["calibration"]["before"]["temperature"] == pytest.approx(expected["temperature"])
    assert data["before"]["test_accuracy"] == made["before"]["test_accuracy"]  # a temperature changes no figure


def test_where_the_model_looks_shows_the_same_images_before_and_after(made):
    from project.report.explain import MISTAKES, chosen_images

    text = section(made["md"], report_module.SECTIONS.index("Where the model looks") + 1)
    assert "![Grad-CAM heatmaps of the same test images before and after optimisation](figures/gradcam.png)" in text
    tuned = pd.read_csv(made["root"] / "tuned" / "predictions.csv", dtype={"source": str, "true": str})
    chosen = chosen_images(tuned, made["after"]["class_names"])
    wrong = int((tuned["true"] != tuned["predicted"]).sum())
    right_classes = tuned.loc[tuned["true"] == tuned["predicted"], "true"].nunique()
    assert len(chosen) == min(MISTAKES, wrong) + right_classes
    with Image.open(made["folder"] / "figures" / "gradcam.png") as image:
        assert image.size[1] > 100


def test_calibration_of_a_run_without_val_predictions_says_so(made, tmp_path):
    root = copy_root(made, tmp_path)
    (root / "baseline" / "predictions_val.csv").unlink()
    make_report(made["config"], tmp_path / "runs", tmp_path / "reports")
    md = (tmp_path / "reports" / made["config"].run_name / "report.md").read_text()
    text = section(md, report_module.SECTIONS.index("Calibration") + 1)
    assert "baseline has no predictions_val.csv" in text and "**After:** ECE" in text


def test_hyperparameters_before_after_changed_and_assumed(made):
    data = json.loads((made["folder"] / "hyperparameters.json").read_text())
    changed = sorted(k for k in data["before"] if data["before"][k] != data["after"].get(k))
    assert sorted(data["changed"]) == changed
    assert data["origin"]["training.batch_size"] == "assumed"
    assert data["origin"]["model.input_size"] == "assumed"
    assert data["origin"]["model.backbone"] == "paper"
    assert data["origin"]["training.schedule"] == "template default"
    table = section(made["md"], 3)
    lr_before = PAPER["training"]["learning_rate"]
    lr_after = data["after"]["training.learning_rate"]
    flag = "yes" if lr_after != lr_before else ""
    assert f"| training.learning_rate | {lr_before:g} | {lr_after:g} | {flag} | paper | learning_rate |" in table
    assert made["html"].count('<tr class="changed">') == len(changed)


def test_search_section(made):
    search = section(made["md"], 4)
    assert "the test subset was not used for any selection" in search.lower()
    trials = pd.read_csv(made["root"] / "tuning" / "trials.csv")
    for stage, group in trials.groupby("stage"):
        completed = int((group["status"] == "completed").sum())
        assert re.search(rf"\| {stage} \| {len(group)} \| 1 \| {completed} \|", search)
    assert "log in [0.001, 0.05]" in search
    assert "Edge-of-range warnings" in search
    assert (made["folder"] / "trials.csv").read_bytes() == (made["root"] / "tuning" / "trials.csv").read_bytes()
    summary = json.loads((made["root"] / "tuning" / "summary.json").read_text())
    final = summary["final_round"]["finalists"]
    assert "### Final round" in search and len(final) == len(summary["finalists"]) >= 1
    for f in final:  # every finalist's full-length val figure, the chosen one marked
        chosen = (
            "yes" if f["trial_id"] == summary["best"]["trial_id"] and f["stage"] == summary["best"]["stage"] else ""
        )
        assert (
            f"| {f['stage']} | {f['trial_id']} | {f['search_score']:.4f} | {f['val_accuracy']:.4f} | {chosen} |"
            in search
        )
    tuned = json.loads((made["root"] / "tuned" / "metrics.json").read_text())
    assert tuned["run"] == "tuned" and tuned["val_accuracy"] == max(f["val_accuracy"] for f in final)


def test_failed_and_exploded_trials_are_counted_and_marked():
    """A hand-written trials.csv in the tuning step's columns: one completed, one failed, one exploded trial."""
    trials = Trials.from_frame(
        pd.DataFrame(
            {
                "trial_id": ["0", "1", "2"],
                "stage": ["coarse"] * 3,
                "learning_rate": [0.001, 0.01, 5.0],
                "best_val_accuracy": [0.8, None, None],
                "last_val_accuracy": [0.8, None, None],
                "epochs_run": [2, 0, 1],
                "status": ["completed", "failed", "exploded"],
                "failure_reason": ["", "ValueError: bad", "exploded: loss 1e9"],
                "seed": [1, 1, 1],
                "wall_seconds": [3.0, 0.5, 1.0],
                "fit_seconds": [2.5, 0.1, 0.8],
                "fixed_seconds": [0.5, 0.4, 0.2],
                "reused": [False, True, True],
                "worker": ["local"] * 3,
            }
        )
    )
    space = {"learning_rate": {"min": 1e-4, "max": 10.0, "sampling": "log"}}
    search = {
        "objective": "val_accuracy",
        "direction": "max",
        "coarse": {"trials": 3, "epochs": 2},
        "fine": {"trials": 1, "epochs": 2},
    }
    view = normalise_trials(trials, space)
    assert view["status"].tolist() == ["completed", "failed", "exploded"] and view["failed"].tolist() == [
        False,
        True,
        True,
    ]
    assert stage_table(view, search)["rows"] == [["coarse", "3", "3", "1", "1", "1", "2", "0–2"]]
    top = top_table(view, space, search)["rows"]
    assert [row[1] for row in top] == ["0", "1", "2"] and top[0][4] == "0.8000" and top[2][-1] == "exploded"
    png = figures.trial_scatter(
        view[["learning_rate", "objective", "stage", "failed"]], "learning_rate", "val_accuracy", True, (1e-4, 10.0)
    )
    with Image.open(io.BytesIO(png)) as image:
        image.verify()


def test_paper_vs_reproduction_notes_the_other_dataset(made):
    paper = section(made["md"], 2)
    assert "Table 2" in paper and "0.9900" in paper
    assert "The datasets differ" in paper
    assert "| not comparable: the paper measured it on MNIST, this run on the dataset card digits |" in paper
    assert blocks(paper)[0].startswith("**Overall verdict against the paper: not comparable.**")
    lo, hi = wilson_interval(9900, 10000)
    assert f"[{lo:.4f}, {hi:.4f}]" in paper


def test_regenerating_gives_identical_files_and_keeps_others(made):
    folder = made["folder"]
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (folder / "notes.txt").write_text("the team's own notes")
    make_report(made["config"], made["runs"], made["base"] / "reports")
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "notes.txt"}
    assert after == before
    assert (folder / "notes.txt").read_text() == "the team's own notes"


def test_report_without_tuned_run_marks_after_missing(made, tmp_path):
    root = copy_root(made, tmp_path, keep=("baseline",))
    make_report(made["config"], root.parent, tmp_path / "reports")
    md = (tmp_path / "reports" / made["config"].run_name / "report.md").read_text()
    assert [md.index(h) for h in HEADINGS] == sorted(md.index(h) for h in HEADINGS)
    assert f"| test accuracy | {made['before']['test_accuracy']:.4f} | missing |  |" in md
    assert "No tuned run yet" in md
    assert "trials.csv is missing" in md


def test_sanity_data_issues_and_diagnosis_when_present(made, tmp_path):
    """The other steps' results, written here in their formats: sanity.json (+ a plot), data_issues.csv,
    and the training monitors' diagnosis in metrics.json."""
    root = copy_root(made, tmp_path)
    Image.new("RGB", (120, 80), "white").save(root / "sanity_lr_sweep.png")
    checks = [
        {
            "name": "initial_loss",
            "title": "1 initial loss vs ln(C)",
            "status": "PASS",
            "advice": "as expected",
            "numbers": {"loss": 2.3051, "ln_C": 2.302585, "tolerance": 0.25},
        },
        {
            "name": "lr_sweep",
            "title": "4 learning-rate sweep",
            "status": "WARN",
            "advice": "search 1e-4 to 1e-2",
            "numbers": {"lr_explodes": 0.5, "suggested_range": [0.0001, 0.01]},
            "plot": "sanity_lr_sweep.png",
        },
        {
            "name": "preprocessing",
            "title": "6 preprocessed inputs vs what the backbone expects",
            "status": "PASS",
            "advice": "inputs reach the backbone as it expects",
            "augmentation": "the fill shifts the means: reflect the borders",
            "numbers": {"mode": "tf"},
        },
    ]
    sanity = {"paper": "tiny", "dataset": "digits", "status": "WARN", "weights_used": "random", "seconds": 9.0}
    checks = [{**check, "seconds": 0.5} for check in checks]
    record = Sanity.model_validate({**sanity, "created": "2026-01-01T00:00:00+0000", "checks": checks})
    (root / "sanity.json").write_text(json.dumps(record.dump()))  # unsorted: the numbers in the order given
    pd.DataFrame(
        {
            "source": ["a.jpg", "b.png", "c.png"],
            "reason": ["corrupt", "corrupt", "converted"],
            "action": ["excluded", "excluded", "converted"],
            "detail": ["", "", ""],
        }
    ).to_csv(root / "data_issues.csv", index=False)
    path = root / "tuned" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["diagnosis"] = {
        "status": "problems",
        "summary": "overfitting",
        "findings": [{"problem": "overfitting", "evidence": "gap 0.200", "advice": "more dropout"}],
    }
    path.write_text(json.dumps(metrics))
    make_report(made["config"], root.parent, tmp_path / "reports")
    folder = tmp_path / "reports" / made["config"].run_name
    md = (folder / "report.md").read_text()
    sanity = section(md, report_module.SECTIONS.index("Sanity checks") + 1)
    assert "| 1 initial loss vs ln(C) | PASS | loss 2.305, ln_C 2.303, tolerance 0.25 | as expected |" in sanity
    assert (
        "| 4 learning-rate sweep | WARN | lr_explodes 0.5, suggested_range [0.0001, 0.01] | search 1e-4 to 1e-2 |"
        in sanity
    )
    assert "![sanity check: 4 learning-rate sweep](figures/sanity_lr_sweep.png)" in sanity
    assert "expects. Augmentation: the fill shifts the means: reflect the borders |" in sanity  # its own sentence
    assert (folder / "figures" / "sanity_lr_sweep.png").read_bytes() == (root / "sanity_lr_sweep.png").read_bytes()
    data = section(md, report_module.SECTIONS.index("Data") + 1)
    assert (
        "**Images excluded:** 2" in data
        and "| excluded | corrupt | 2 |" in data
        and "| converted | converted | 1 |" in data
    )
    assert "**Diagnosis of the after training:** overfitting" in section(md, 5)
    assert "**overfitting**: gap 0.200 → more dropout" in section(md, 5)


# ------------------------------------------------------------------ before/after comparison


def blocks(md_section):
    """The blocks of a report section (text between blank lines), its heading left out."""
    return [b.strip() for b in md_section.split("\n\n")[1:] if b.strip()]


def correct_by_image(root, run):
    table = pd.read_csv(root / run / "predictions.csv", dtype=str).set_index("source").sort_index()
    return table["true"] == table["predicted"]


COMPARISON_KEYS = {
    "format",
    "before",
    "after",
    "headline",
    "decision",
    "paired",
    "bootstrap",
    "seeds",
    "trivial_baseline",
    "train_imbalance_ratio",
    "imbalanced",
    "lead_metrics",
    "selection",
    "paper",
    "folds",
}


def test_summary_starts_with_the_headline_of_the_paired_comparison(made):
    comparison = json.loads((made["folder"] / "comparison.json").read_text())
    assert set(comparison) == COMPARISON_KEYS and comparison["folds"] is None  # no cross-validation here
    summary = section(made["md"], 1)
    assert (
        blocks(summary)[0]
        == "![test accuracy before and after optimisation, 95% intervals; other seeds as dots](figures/summary.png)"
    )
    assert blocks(summary)[1] == comparison["headline"]
    assert blocks(summary)[2].startswith("**Overall verdict against the paper: not comparable.**")
    first = re.search(r"<h2>1\. Summary</h2>\n<figure>.*?</figure>\n<p>(.*?)</p>", made["html"], re.S).group(1)
    assert first == str(escape(comparison["headline"]))
    # b and c counted here from the two predictions.csv, image by image
    before, after = correct_by_image(made["root"], "baseline"), correct_by_image(made["root"], "tuned")
    assert list(before.index) == list(after.index)
    b, c = int((before & ~after).sum()), int((~before & after).sum())
    paired = comparison["paired"]
    assert (paired["b"], paired["c"], paired["n_discordant"]) == (b, c, b + c)
    assert paired["p_value"] == pytest.approx(stats.binomtest(b, b + c).pvalue if b + c else 1.0)
    boot = comparison["bootstrap"]
    assert boot["difference"] == pytest.approx(made["after"]["test_accuracy"] - made["before"]["test_accuracy"])
    assert (boot["images"], boot["resamples"], boot["seed"]) == (len(before), 2000, 0)
    assert boot["ci95"][0] <= boot["difference"] <= boot["ci95"][1]
    assert comparison["decision"]["by"] == "paired" and comparison["seeds"] is None
    improved = boot["ci95"][0] > 0 and paired["p_value"] < 0.05
    worse = boot["ci95"][1] < 0 and paired["p_value"] < 0.05
    start = (
        "Optimisation improved"
        if improved
        else "Optimisation made test accuracy worse"
        if worse
        else "The difference ("
    )
    assert (
        comparison["headline"].startswith(start)
        and f"paired on the same {len(before)} test images" in comparison["headline"]
    )
    assert f"| b: right before, wrong after | {b} |" in summary and f"| c: wrong before, right after | {c} |" in summary
    lo, hi = boot["ci95"]
    assert f"| paired bootstrap 95% CI of the difference (images resampled) | [{lo:.4f}, {hi:.4f}] |" in summary
    assert "| bootstrap resamples, seed | 2000, seed 0 |" in summary


def test_every_accuracy_stands_next_to_the_trivial_baseline(made):
    comparison = json.loads((made["folder"] / "comparison.json").read_text())
    truth = pd.read_csv(made["root"] / "tuned" / "predictions.csv", dtype=str)["true"]
    share = truth.value_counts().max() / len(truth)
    trivial = comparison["trivial_baseline"]
    assert trivial["majority_share"] == pytest.approx(share) and trivial["accuracy"] == pytest.approx(share)
    assert trivial["balanced_accuracy"] == pytest.approx(1 / truth.nunique())
    assert made["after"]["test"]["majority_share"] == pytest.approx(share)
    before, after = made["before"], made["after"]
    summary = section(made["md"], 1)
    row = (
        f"| test accuracy | {before['test_accuracy']:.4f} | {after['test_accuracy']:.4f} | "
        f"{after['test_accuracy'] - before['test_accuracy']:+.4f} | {share:.4f} |"
    )
    assert row in summary
    balanced = [m["test"]["balanced_accuracy"] for m in (before, after)]
    assert f"| test balanced accuracy | {balanced[0]:.4f} | {balanced[1]:.4f} |" in summary
    assert (
        f"{share:.4f} |"
        in section(made["md"], 2).split("| digits (scikit-learn digits) | test accuracy |")[1].splitlines()[0]
    )
    assert f"(trivial baseline, the majority class's share: {share:.4f})" in section(
        made["md"], report_module.SECTIONS.index("Model card") + 1
    )
    assert comparison["imbalanced"] is False and comparison["lead_metrics"] == ["accuracy"]
    assert "**Lead metric:** accuracy" in summary and "imbalanced" not in summary


def test_selection_metrics_come_from_the_resolved_config(made, tmp_path):
    comparison = json.loads((made["folder"] / "comparison.json").read_text())
    assert comparison["selection"] == {
        "checkpoint": "val_accuracy",
        "early_stopping": False,
        "search": "val_accuracy",
        "search_direction": "max",
    }
    root = copy_root(made, tmp_path)
    path = root / "tuned" / "config.resolved.yaml"
    config = yaml.safe_load(path.read_text())
    config["paper"]["training"]["early_stopping"] = {"monitor": "val_macro_f1", "patience": 3, "min_delta": 0.0}
    config["paper"]["search"]["objective"] = "val_macro_f1"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    report = report_module.build(made["config"], root)
    assert report["comparison"]["selection"]["checkpoint"] == "val_macro_f1"
    texts = [b["text"] for b in report["sections"][0]["blocks"] if b["type"] == "p"]
    selection = next(text for text in texts if text.startswith("**Selection"))
    assert "checkpoint and early stopping used `val_macro_f1`" in selection
    assert "the search ranked its trials by `val_macro_f1` (maximise)" in selection


def test_imbalanced_training_classes_lead_with_macro_f1_and_balanced_accuracy(made, tmp_path):
    root = copy_root(made, tmp_path)
    path = root / "tuned" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["counts"]["train"]["0"] = 400  # against about 100 in the smallest class
    path.write_text(json.dumps(metrics))
    make_report(made["config"], root.parent, tmp_path / "reports")
    folder = tmp_path / "reports" / made["config"].run_name
    comparison = json.loads((folder / "comparison.json").read_text())
    assert comparison["imbalanced"] is True and comparison["lead_metrics"] == ["macro_f1", "balanced_accuracy"]
    summary = section((folder / "report.md").read_text(), 1)
    test, trivial = made["after"]["test"], comparison["trivial_baseline"]
    lead = next(b for b in blocks(summary) if b.startswith("**The training classes are imbalanced**"))
    assert (
        f"macro-F1 is {test['macro_f1']:.4f}, {test['macro_f1'] - trivial['macro_f1']:+.4f} against the trivial "
        f"baseline's {trivial['macro_f1']:.4f}" in lead
    )
    balanced, trivial_balanced = test["balanced_accuracy"], trivial["balanced_accuracy"]
    assert f"accuracy {balanced:.4f}, {balanced - trivial_balanced:+.4f} against {trivial_balanced:.4f}" in lead
    assert summary.index(lead) < summary.index("| metric |")
    assert (
        summary.index("| test macro-F1 |")
        < summary.index("| test balanced accuracy |")
        < summary.index("| test accuracy |")
    )


def without_first_prediction(made, tmp_path):
    """A copy of the runs whose tuned predictions.csv lacks its first test image: (root, that source)."""
    root = copy_root(made, tmp_path)
    path = root / "tuned" / "predictions.csv"
    table = pd.read_csv(path, dtype=str)
    table.iloc[1:].to_csv(path, index=False)
    return root, table["source"].iloc[0]


def test_predictions_on_different_test_images_are_refused(made, tmp_path):
    root, dropped = without_first_prediction(made, tmp_path)
    with pytest.raises(
        UserError,
        match=rf"not evaluated on the same test images: 1 only in {re.escape(str(root))}/baseline/"
        rf"predictions\.csv \(e\.g\. {re.escape(dropped)}\)",
    ):
        report_module.build(made["config"], root)


def test_paper_rows_get_a_verdict_against_our_interval(made, tmp_path):
    after = made["after"]
    count, accuracy = after["test"]["count"], after["test_accuracy"]
    lo, hi = wilson_interval(round(accuracy * count), count)
    assert 0.02 < (hi - lo) / 2 <= 0.05 and 0 < lo and hi < 1, "the checks below need a run of this accuracy"
    name = "3"
    support = after["per_class"][name]["support"]
    entries = [
        {"metric": "accuracy", "value": accuracy},  # inside, half-width > 0.02
        {"metric": "accuracy", "value": accuracy, "tolerance": 0.05},  # inside, half-width <= 0.05
        {"metric": "accuracy", "value": (hi + 1) / 2, "dataset": "Digits"},  # above our interval
        {"metric": "accuracy", "value": lo / 2},  # below it
        {"metric": "accuracy", "value": 0.99, "dataset": "MNIST"},
        {"metric": "macro_f1", "value": 0.999},
        {"metric": "sensitivity", "class_name": name, "value": 0.5},
        {"metric": "specificity", "class_name": name, "value": 0.5},
        {"metric": "sensitivity", "value": 0.5},  # which class? digits has 10
        {"metric": "top5_accuracy", "value": 0.5},
    ]
    paper = {**PAPER, "reported": [{"dataset": "digits", "where": "Table 1", **e} for e in entries]}
    folder = tmp_path / "cards"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    (folder / "digits.yaml").write_text(yaml.safe_dump(DATASET, sort_keys=False))
    config = load_config(str(folder / "tiny.yaml"), str(folder / "digits.yaml"))
    report = report_module.build(config, made["root"])
    rows = report["comparison"]["paper"]["rows"]
    assert [r["verdict"] for r in rows[:5]] == ["inconclusive", "reproduced", "below", "above", "not comparable"]
    assert rows[0]["ci95"] == pytest.approx([lo, hi]) and rows[0]["interval"] == f"Wilson, on {count} test images"
    assert rows[2]["explanation"].startswith("below: our result is below the paper's")
    assert rows[3]["explanation"].startswith("above: our result is above the paper's")
    f1 = rows[5]
    assert f1["ours"] == pytest.approx(after["test_macro_f1"]) and f1["ci95"][0] <= f1["ours"] <= f1["ci95"][1]
    assert (
        f1["interval"] == f"bootstrap over the {count} test images (2000 resamples, seed 0)"
        and f1["verdict"] == "below"
    )
    recall = after["per_class"][name]["sensitivity"]
    assert rows[6]["ci95"] == pytest.approx(wilson_interval(round(recall * support), support))
    specificity = after["per_class"][name]["specificity"]
    assert rows[7]["ci95"] == pytest.approx(wilson_interval(round(specificity * (count - support)), count - support))
    assert rows[8]["verdict"] == "not comparable" and "of which class?" in rows[8]["explanation"]
    top5 = after["test"]["top5_accuracy"]
    assert rows[9]["ci95"] == pytest.approx(wilson_interval(round(top5 * count), count))
    assert report["comparison"]["paper"]["overall"] == "not reproduced"
    paper_md = report_module.render(report)[0]
    assert (
        "**Overall verdict against the paper: not reproduced.** 8 of the 10 results the paper reports are comparable"
        in paper_md
    )
    assert "The datasets differ" not in paper_md


# ------------------------------------------------------------------ several seeds


def test_mean_and_std_over_seeds(made, tmp_path):
    root = copy_root(made, tmp_path, keep=("baseline", "tuned", "tuning"))
    for name in ("baseline-seed2", "baseline-seed3"):
        shutil.copytree(root / "baseline", root / name)
    for name, seed, accuracy in (("baseline", 1, 0.90), ("baseline-seed2", 2, 0.92), ("baseline-seed3", 3, 0.94)):
        path = root / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics.update(test_accuracy=accuracy, seed=seed)
        path.write_text(json.dumps(metrics))
    make_report(made["config"], root.parent, tmp_path / "reports")
    summary = section((tmp_path / "reports" / made["config"].run_name / "report.md").read_text(), 1)
    assert "before, mean ± std (3 seeds)" in summary
    assert "| 0.9200 ± 0.0200 |" in summary  # mean of 0.90, 0.92, 0.94; sample standard deviation 0.02
    for name, seed, accuracy in (("baseline-seed2", 2, "0.9200"), ("baseline-seed3", 3, "0.9400")):
        assert f"| {name} | {seed} | {accuracy} |" in summary


def test_several_seeds_on_both_sides_decide_the_headline(made, tmp_path):
    root = copy_root(made, tmp_path)
    accuracies = {"baseline": [0.80, 0.81, 0.82], "tuned": [0.90, 0.91, 0.92]}
    for run in accuracies:
        for seed in (2, 3):
            shutil.copytree(root / run, root / f"{run}-seed{seed}")
        for folder, accuracy in zip([run, f"{run}-seed2", f"{run}-seed3"], accuracies[run]):
            path = root / folder / "metrics.json"
            metrics = json.loads(path.read_text())
            metrics["test_accuracy"] = accuracy
            path.write_text(json.dumps(metrics))
    make_report(made["config"], root.parent, tmp_path / "reports")
    folder = tmp_path / "reports" / made["config"].run_name
    comparison = json.loads((folder / "comparison.json").read_text())
    welch = stats.ttest_ind(accuracies["tuned"], accuracies["baseline"], equal_var=False)
    seeds = comparison["seeds"]
    assert seeds["welch"]["p_value"] == pytest.approx(welch.pvalue) and seeds["welch"]["t"] == pytest.approx(
        welch.statistic
    )
    assert (seeds["before"]["n"], seeds["after"]["n"]) == (3, 3) and seeds["difference"] == pytest.approx(0.1)
    assert comparison["decision"]["by"] == "seeds"
    summary = section((folder / "report.md").read_text(), 1)
    assert blocks(summary)[1].startswith("Optimisation improved test accuracy by +0.1000 (95 % CI [")
    assert "mean over 3 vs 3 seeds, Welch's t-test" in blocks(summary)[1]
    assert "| test accuracy per seed | 0.8000, 0.8100, 0.8200 | 0.9000, 0.9100, 0.9200 |" in summary
    assert f"**Welch's t-test** (n = 3 before, 3 after): t = {welch.statistic:.3f}" in summary
    assert "cannot go below 0.1" in summary
    assert "| b: right before, wrong after |" in summary  # the paired test on the main runs is still shown


def test_mean_std_values():
    assert mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_wilson_interval_known_values():
    assert wilson_interval(90, 100) == pytest.approx((0.8256, 0.9448), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-5)


# ------------------------------------------------------------------ bad input


def test_no_runs_is_a_clear_error(made, tmp_path, capsys):
    from project.commands.cli import main

    status = main(
        [
            "report",
            "--paper",
            made["config"].paper_file,
            "--dataset",
            made["config"].dataset_file,
            "--runs-dir",
            str(tmp_path / "empty"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: no baseline run at ")
    assert str(tmp_path / "empty" / "tiny__digits" / "baseline") in err
    assert "`make train PAPER=tiny DATASET=digits`" in err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("run, command", [("baseline", "make train"), ("tuned", "make tune")])
def test_incomplete_run_is_refused(made, tmp_path, run, command):
    root = copy_root(made, tmp_path)
    (root / run / "COMPLETE").unlink()
    with pytest.raises(
        UserError, match=rf"{run} is an interrupted or unfinished run .*`{command} PAPER=tiny DATASET=digits`"
    ):
        report_module.build(made["config"], root)


# ------------------------------------------------------------------ self-contained HTML


RESOURCE = re.compile(
    r"""(?:\b(?:src|srcset|poster|data)\s*=\s*["']?\s*|<link\b[^>]*\bhref\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["']?)([a-z][a-z0-9+.-]*:)?//""",
    re.I,
)


def external_resources(html):
    """Every resource reference (img/script src, stylesheet link, CSS url(), @import) to another host."""
    return RESOURCE.findall(html)


def test_html_is_self_contained_and_phone_friendly(made):
    html = made["html"]
    assert external_resources(html) == []
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == len(re.findall(r"<img ", html)) >= 8
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "max-width" in html and "overflow-x: auto" in html and "@media print" in html
    assert "<script" not in html


def test_external_resource_check_finds_them():
    assert external_resources('<img src="https://example.org/x.png">')
    assert external_resources('<link rel="stylesheet" href="//cdn.example.org/a.css">')
    assert external_resources("<style>body { background: url('http://example.org/b.png') }</style>")
    assert external_resources("<style>@import 'https://example.org/c.css';</style>")
    assert not external_resources('<img src="data:image/png;base64,AAAA"><a href="https://example.org">paper</a>')


# ------------------------------------------------------------------ in a real browser


@pytest.mark.browser
def test_report_opens_in_headless_chromium(made, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><img src="data:image/png;base64,AAAA"><script>console.error("boom")</script>')
    browser = Chromium(tmp_path / "profile")
    try:
        widths, errors, requests = browser.open(made["folder"] / "report.html")
        bad_widths, bad_errors, _ = browser.open(broken)
    finally:
        browser.close()
    assert len(widths) == made["html"].count("<img ") >= 8
    assert all(w > 0 for w in widths), widths
    assert errors == [] and requests == []
    assert bad_widths == [0] and bad_errors  # the same checks catch an undecodable image and a console error


def test_compute_section_says_whether_the_runs_were_deterministic(made, tmp_path):
    compute = section(made["md"], report_module.SECTIONS.index("Compute and environment") + 1)
    assert "**Deterministic:** yes, every run" in compute
    root = copy_root(made, tmp_path)
    metrics = json.loads((root / "tuned" / "metrics.json").read_text())
    metrics["deterministic"] = False
    (root / "tuned" / "metrics.json").write_text(json.dumps(metrics))
    make_report(made["config"], tmp_path / "runs", tmp_path / "reports")
    compute = section(
        (tmp_path / "reports" / made["config"].run_name / "report.md").read_text(),
        report_module.SECTIONS.index("Compute and environment") + 1,
    )
    assert "**Deterministic:** no, for tuned" in compute


@pytest.mark.slow
def test_search_section_shows_the_rank_agreement_make_bench_measured_on_this_card(made, tmp_path):
    config = made["config"]
    assert "Rank agreement" not in section(made["md"], 4)  # no bench.json: nothing claimed
    reports = tmp_path / "reports"
    ranks = {
        "paper": config.paper_name,
        "dataset": config.dataset_name,
        "epochs": {"coarse": 6, "full": 15},
        "configurations": 5,
        "rho": 0.9,
        "coarse": [0.6, 0.8, 0.7, 0.9, 0.4],
        "full": [0.9, 0.93, 0.95, 0.97, 0.79],
    }
    for paper, expected in ((config.paper_name, True), ("another_paper", False)):
        write_json(
            reports / "bench" / "bench.json",
            {"created": "2026-12-01T12:00:00+0000", "details": {"rank agreement": {**ranks, "paper": paper}}},
        )
        make_report(config, made["runs"], reports)
        search = section((reports / config.run_name / "report.md").read_text(), 4)
        line = (
            "**Rank agreement** (`make bench`, 2026-12-01): Spearman rho = 0.90 between the 6-epoch and 15-epoch "
            "scores of 5 configurations"
        )
        assert (line in search) is expected, search


def test_a_weights_fallback_is_told_by_the_recorded_kind_not_by_the_display_text(made, tmp_path):
    root = copy_root(made, tmp_path)
    path = root / "tuned" / "metrics.json"
    metrics = json.loads(path.read_text())
    # the display text alone says nothing: the kind decides
    path.write_text(json.dumps({**metrics, "weights_used": "random (fallback: imagenet weights unavailable)"}))
    make_report(made["config"], tmp_path / "runs", tmp_path / "reports")
    assert (
        "ImageNet weights were unavailable"
        not in (tmp_path / "reports" / made["config"].run_name / "report.md").read_text()
    )
    path.write_text(json.dumps({**metrics, "weights_kind": "random_fallback"}))
    make_report(made["config"], tmp_path / "runs", tmp_path / "reports")
    md = (tmp_path / "reports" / made["config"].run_name / "report.md").read_text()
    assert "ImageNet weights were unavailable: tuned trained from RANDOM initialisation" in md


@pytest.mark.browser
def test_report_pdf_holds_every_section_and_every_hyperparameter_column(made, tmp_path):
    from pypdf import PdfReader

    reports = tmp_path / "reports"
    printed = make_report(made["config"], made["runs"], reports, pdf=True)
    pdf = reports / made["config"].run_name / "report.pdf"
    assert str(pdf) in printed
    reader = PdfReader(pdf)
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))
    for number, title in enumerate(report_module.SECTIONS, 1):
        assert f"{number}. {title}" in text
    head = next(line for line in section(made["md"], 3).splitlines() if line.startswith("| hyperparameter"))
    for column in [c.strip() for c in head.strip("|").split("|")]:
        assert column in text, column
    assert len(reader.pages) >= len(report_module.SECTIONS)  # a page break before every section
    first = pdf.read_bytes()
    make_report(made["config"], made["runs"], reports, pdf=True)
    assert pdf.read_bytes() == first  # the print date is the report's own: the same runs, the same bytes


def test_without_chromium_the_report_says_how_to_get_the_pdf(made, tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-browser"))
    printed = make_report(made["config"], made["runs"], tmp_path / "reports", pdf=True)
    assert "no report.pdf: Chromium not found (apt-get install chromium" in printed
    assert not (tmp_path / "reports" / made["config"].run_name / "report.pdf").exists()
    assert (tmp_path / "reports" / made["config"].run_name / "report.html").exists()


@pytest.mark.browser
def test_wide_tables_wrap_instead_of_running_out_of_view(made, tmp_path):
    wide = tmp_path / "wide.html"  # the old style, cells that never wrap: the same check catches it
    cells = "".join(f"<td>{'long_augmentation_value_' * 4}{i}</td>" for i in range(8))
    wide.write_text(
        "<!DOCTYPE html><style>td { white-space: nowrap; }</style>"
        f"<div class='scroll' style='overflow-x:auto'><table><tr><th>key</th>{cells}</tr></table></div>"
    )
    browser = Chromium(tmp_path / "profile")
    try:
        cut = {width: browser.cut_tables(made["folder"] / "report.html", width) for width in (1300, 800)}
        broken = browser.cut_tables(wide, 1300)
    finally:
        browser.close()
    assert cut == {1300: [], 800: []}
    assert broken == ["key"]


def test_make_check_repeats_the_report_exactly_and_fails_on_a_changed_number(made, tmp_path):
    from project.commands import check as check_module

    folder = tmp_path / "reports" / made["config"].run_name
    shutil.copytree(made["folder"], folder)
    rows, exact = check_module.check(folder, tmp_path / "runs")
    assert exact  # the same machine, deterministic runs: nothing but identical numbers passes
    assert {r[0] for r in rows} == {"baseline", "tuned"} and all(r[-1] and r[4] == 0 for r in rows), rows
    assert not list((tmp_path / "runs").iterdir())  # the fresh runs are gone, the committed report untouched
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["seeds"]["baseline"][0]["test_accuracy"] += 1e-6
    (folder / "metrics.json").write_text(json.dumps(metrics))
    args = argparse.Namespace(
        reports_dir=str(tmp_path / "reports"), runs_dir=str(tmp_path / "runs"), quick=True, quiet=True
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = check_module.cli(made["config"], args)
    assert status == 1
    assert re.search(r"baseline\s+test_accuracy .* exact\s+NO", out.getvalue())
    assert "1 of 4 numbers differ" in out.getvalue() and "tuned" not in out.getvalue().split("\n", 1)[1]


def test_make_check_allows_the_seed_spread_on_another_machine():
    from project.commands.check import TOLERANCE, compare

    committed = {
        "test_accuracy": 0.9,
        "test_macro_f1": 0.9,
        "test_loss": 0.3,
        "val_accuracy": 0.9,
        "deterministic": True,
    }
    group = [committed | {"test_accuracy": a} for a in (0.90, 0.92, 0.94)]
    elsewhere = {"cpu": "another CPU", "tensorflow": "2.21.0 (CPU)", "onednn": True}
    fresh = committed | {"test_accuracy": 0.93}
    rows, exact = compare("baseline", committed | {"machine": {"cpu": "x"}}, fresh, group, elsewhere)
    assert not exact and rows[0][-1] and rows[0][5] == pytest.approx(0.04)  # 2 x the seeds' std
    rows, _ = compare(
        "baseline", committed, committed | {"test_accuracy": 0.9 + 2 * TOLERANCE["test_accuracy"]}, [], elsewhere
    )
    assert not rows[0][-1]


def test_a_test_image_one_run_skipped_is_said_and_left_out_of_the_pairing(made, tmp_path):
    root, dropped = without_first_prediction(made, tmp_path)
    evaluated = len(pd.read_csv(root / "tuned" / "predictions.csv"))
    metrics = json.loads((root / "tuned" / "metrics.json").read_text())
    metrics["skipped_images"]["test"] = [dropped]  # as evaluation records an image it could not decode
    metrics["test"]["count"] -= 1
    (root / "tuned" / "metrics.json").write_text(json.dumps(metrics))
    report = report_module.build(made["config"], root)
    assert report["comparison"]["bootstrap"]["images"] == evaluated  # paired on the images both evaluated
    text = json.dumps(report["sections"][0]["blocks"])
    assert f"tuned: 1 test image was skipped: {dropped}" in text
    assert f"over the {evaluated} images evaluated" in text
    assert "test image was skipped" not in made["md"]  # the runs of the fixture skipped nothing
