"""Cross-validation (split.folds) and group-aware splits (split.group_by): the fold assignment, the
runs of each fold and what the report makes of them, and the bad inputs, each one clear error."""

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from conftest import DIGITS_DATASET, ROOT, TINY_SEARCH, write_card, write_dataset_card, write_tiny_paper_card
from PIL import Image
from scipy import stats

from project.commands.cli import main
from project.config.cards import load_config
from project.config.schema import Split
from project.data.adapters import Sources, load_sources
from project.data.split import assign, fold_view, groups_of, load_or_make_assignment, make_split
from project.errors import UserError
from project.report import compare


def labelled(counts=(60, 30, 15), seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    return labels


def sources(labels, ids=None, **extra):
    ids = ids or [f"img_{i:03d}.png" for i in range(len(labels))]
    return Sources(items=list(ids), labels=labels, class_names=["a", "b", "c"][: labels.max() + 1], ids=ids, **extra)


def patients(count, size=4):
    """Ids carrying a patient: patient<k>_<i>.png, `size` images per patient."""
    return [f"{'abc'[i % 3]}/patient{i // size:02d}_{i % size}.png" for i in range(count)]


def spread(groups, where):
    """Each group -> the set of places (subset or fold) it is in."""
    found = defaultdict(set)
    for group, place in zip(groups, where):
        found[group].add(place)
    return found


# ------------------------------------------------------------------ fold assignment


def test_folds_are_stratified_and_every_non_test_item_is_in_exactly_one_val_set():
    labels = labelled()
    subsets, folds = assign(labels, Split(folds=3, test=0.2, seed=0))
    pool = subsets == "train"
    assert set(subsets) == {"train", "test"} and np.all(folds[pool] >= 1) and np.all(folds[~pool] == 0)
    # the test subset is the one the same card without folds holds apart: cross-validating changes no test image
    assert np.array_equal(subsets == "test", make_split(labels, Split(test=0.2, seed=0)) == "test")
    seen = np.zeros(len(labels), dtype=int)
    for k in (1, 2, 3):
        view = fold_view(subsets, folds, k)
        val = view == "val"
        seen += val
        assert np.array_equal(view == "test", ~pool) and np.array_equal(view == "train", pool & ~val)
        expected = np.bincount(labels[pool], minlength=3) / 3
        assert np.all(np.abs(np.bincount(labels[val], minlength=3) - expected) <= 1), k  # stratified
    assert np.array_equal(seen, pool.astype(int))  # no item in two folds' val sets, none left out


def test_fold_assignment_is_deterministic_from_the_split_seed():
    labels = labelled()
    first = assign(labels, Split(folds=4, test=0.2, seed=3))[1]
    assert np.array_equal(first, assign(labels, Split(folds=4, test=0.2, seed=3))[1])
    assert not np.array_equal(first, assign(labels, Split(folds=4, test=0.2, seed=4))[1])


def test_no_test_subset_cross_validates_everything():
    labels = labelled()
    subsets, folds = assign(labels, Split(folds=5, test=0))
    assert set(subsets) == {"train"} and sorted(set(folds)) == [1, 2, 3, 4, 5]
    assert not Split(folds=5, test=0).has_test and Split(folds=5, test=0, provided=True).has_test


def test_provided_data_keeps_its_test_subset_and_folds_the_rest():
    labels = np.array([0, 1] * 30)
    presplit = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    subsets, folds = assign(labels, Split(provided=True, folds=2), presplit)
    assert np.array_equal(subsets[50:], presplit[50:]) and set(subsets[:50]) == {"train"}
    assert np.bincount(folds[:50]).tolist() == [0, 25, 25] and not folds[50:].any()


def test_groups_stay_whole_in_every_subset_and_fold():
    labels = labelled()
    ids = patients(len(labels))
    groups = groups_of(sources(labels, ids), r"patient(\d+)_")
    assert groups[0] == "00" and len(set(groups)) == -(-len(labels) // 4)
    subsets, folds = assign(labels, Split(folds=3, test=0.2, group_by=r"patient(\d+)_"), groups=groups)
    where = [f"fold{f}" if f else s for s, f in zip(subsets, folds)]
    assert max(len(places) for places in spread(groups, where).values()) == 1
    assert {"test", "fold1", "fold2", "fold3"} == set(where)
    # without folds: train / val / test by whole groups, each near its fraction (1 / round(1 / fraction))
    plain = make_split(labels, Split(val=0.2, test=0.2, group_by="x"), groups=groups)
    assert max(len(places) for places in spread(groups, plain).values()) == 1
    assert abs(np.mean(plain == "test") - 0.2) < 0.05 and abs(np.mean(plain == "val") - 0.2) < 0.06
    # and the same seed gives the same groups' folds
    again = assign(labels, Split(folds=3, test=0.2, group_by="x"), groups=groups)[1]
    assert np.array_equal(folds, again)


def test_groups_too_small_to_stratify_fall_back_to_a_plain_group_split_with_a_warning():
    labels, groups = np.repeat(np.arange(10), 3), np.array([f"g{i // 2}" for i in range(30)])
    with pytest.warns(UserWarning, match="too few images to stratify the split: falling back to a plain group split"):
        subsets = make_split(labels, Split(val=0.15, test=0.15, group_by="x"), groups=groups)
    assert set(subsets) == {"train", "val", "test"} and max(len(p) for p in spread(groups, subsets).values()) == 1


def test_group_by_takes_the_first_capture_group_else_the_match_and_unmatched_items_stand_alone(caplog):
    s = sources(np.array([0, 1, 0, 1]), ["x/p1_a.png", "x/p1_b.png", "x/p2_a.png", "x/odd.png"])
    assert groups_of(s, r"p(\d)_").tolist() == ["1", "1", "2", "(own) x/odd.png"]
    assert groups_of(s, r"p\d").tolist()[:3] == ["p1", "p1", "p2"]
    assert "1 of 4 images have no group (e.g. x/odd.png)" in caplog.text
    assert groups_of(s, None) is None


def test_group_by_a_manifest_column(tmp_path):
    (tmp_path / "img").mkdir()
    rows = ["path,label,patient"] + [f"img/{i}.png,{'ab'[i % 2]},p{i // 4}" for i in range(12)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    s = load_sources("csv", {"manifest": "list.csv"}, tmp_path)
    assert groups_of(s, "column:patient").tolist() == [f"p{i // 4}" for i in range(12)]
    with pytest.raises(
        UserError, match=r"split.group_by: column:ward: no manifest column 'ward'; columns: path, label, patient"
    ):
        groups_of(s, "column:ward")
    with pytest.raises(UserError, match="split.group_by: column:patient.*only the csv adapter reads a manifest"):
        groups_of(sources(np.array([0, 1])), "column:patient")


def test_split_csv_records_fold_and_group_and_split_json_the_settings(tmp_path):
    labels = labelled()
    s, path = sources(labels, patients(len(labels))), tmp_path / "split.csv"
    split = Split(folds=3, test=0.2, group_by=r"patient(\d+)_")
    subsets, folds, groups = load_or_make_assignment(path, s, split)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["source", "label", "subset", "fold", "group"]
    assert table["fold"].tolist() == [str(f) if f else "" for f in folds] and set(
        table[table.subset == "test"].fold
    ) == {""}
    assert table["group"].tolist() == groups.tolist()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["split"]["folds"] == 3 and meta["split"]["group_by"] == r"patient(\d+)_"
    assert meta["groups"] == len(set(groups)) and sum(meta["fold_counts"]["a"].values()) == np.sum(
        (labels == 0) & (folds > 0)
    )
    again = load_or_make_assignment(path, s, split)
    assert np.array_equal(again[0], subsets) and np.array_equal(again[1], folds)
    with pytest.raises(UserError, match="was made with split"):
        load_or_make_assignment(path, s, Split(folds=4, test=0.2, group_by=r"patient(\d+)_"))


def test_a_split_json_written_before_folds_existed_still_matches_a_card_without_them(tmp_path):
    s, path = sources(labelled()), tmp_path / "split.csv"
    load_or_make_assignment(path, s, Split())
    meta = json.loads(path.with_suffix(".json").read_text())
    assert "folds" not in meta["split"] and "group_by" not in meta["split"]  # None-valued keys are left out
    assert load_or_make_assignment(path, s, Split())[1].sum() == 0


# ------------------------------------------------------------------ bad input: one clear error naming the key


def test_bad_fold_settings_are_one_error_naming_the_key(tmp_path):
    paper = write_tiny_paper_card(tmp_path)

    def error(**split):
        card = write_dataset_card(tmp_path, "d", adapter="digits", split=split)
        with pytest.raises(UserError) as caught:
            load_config(str(paper), str(card))
        return str(caught.value)

    assert "split.folds: Input should be greater than or equal to 2 (got 1)" in error(folds=1)
    assert "split: test: 0 holds no test subset apart" in error(test=0)
    assert "split.test: Input should be greater than or equal to 0" in error(test=-0.1, folds=3)
    assert "split.group_by: not a regular expression" in error(group_by="patient(")


def test_more_folds_than_the_smallest_class_holds():
    labels = np.array([0] * 20 + [1] * 5)
    with pytest.raises(
        UserError, match=r"split.folds: 5 folds, but class 'b' has only 4 images outside the test subset: at most 4"
    ):
        assign(labels, Split(folds=5, test=0.2), names=["a", "b"])
    assert sorted(set(assign(labels, Split(folds=4, test=0.2))[1])) == [0, 1, 2, 3, 4]


def test_a_group_larger_than_its_part_and_too_few_groups():
    labels = labelled((40, 40))
    groups = np.array([f"g{i // 4}" for i in range(80)])
    groups[:30] = "big"  # 30 of 80 images: more than a fifth (the test subset) can hold
    with pytest.raises(
        UserError, match=r"group 'big' holds 30 of 80 images, more than the test subset \(split.test\) should hold \(16"
    ):
        assign(labels, Split(test=0.2, val=0.2, group_by="x"), groups=groups)
    few = np.array(["g1"] * 40 + ["g2"] * 40)
    with pytest.raises(
        UserError,
        match=r"split.group_by: 2 groups cannot fill 3 held-out parts for one fold's val set \(split.folds 3\)",
    ):
        assign(labels, Split(folds=3, test=0, group_by="x"), groups=few)


def test_a_pattern_that_matches_no_file_name():
    with pytest.raises(UserError, match=r"split.group_by: 'patient\(\\d\+\)' matches no source id \(e.g. img_000.png"):
        groups_of(sources(labelled()), r"patient(\d+)")


def test_search_folds_need_split_folds_and_no_more_of_them(tmp_path, digits_card):
    from project.tune.search_check import check_search

    paper = write_tiny_paper_card(tmp_path, search={**TINY_SEARCH, "folds": 3})
    with pytest.raises(UserError, match="search.folds is 3, but the dataset card .* has no split.folds"):
        check_search(load_config(str(paper), str(digits_card)))
    with pytest.raises(
        UserError, match="search.folds is 3, more than the 2 folds of the dataset card's split.folds; accepted: 2 to 2"
    ):
        check_search(load_config(str(paper), str(digits_card), ["split.folds=2"]))
    assert check_search(load_config(str(paper), str(digits_card), ["split.folds=3"]))[0].folds == 3


# ------------------------------------------------------------------ the data check


def group_folder(root, presplit=None):
    """root/<class>/leaf<g>_<i>.png (or root/<subset>/<class>/...), 3 images per leaf, leaves 0-7 per class."""
    rng = np.random.default_rng(0)
    for subset in presplit or [None]:
        for k, name in enumerate(("cat", "dog")):
            folder = root / (subset or "") / name
            folder.mkdir(parents=True, exist_ok=True)
            leaves = range(0, 8) if subset != "test" else range(6, 10)  # leaves 6 and 7 are in train and test
            for leaf in leaves:
                for i in range(3):
                    pixels = np.clip(60 + 120 * k + rng.normal(0, 10, (12, 12, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{name}leaf{leaf}_{i}.png")
    return root


def test_the_data_check_reports_groups_that_straddle_a_provided_split(tmp_path, capsys):
    data = group_folder(tmp_path / "leaves", presplit=["train", "test"])
    card = write_dataset_card(
        tmp_path, "leaves", adapter="folder", options={"path": "leaves"},
        split={"provided": True, "val": 0.25, "group_by": r"(\w+leaf\d+)_"},
    )  # fmt: skip
    paper, runs = write_tiny_paper_card(tmp_path), tmp_path / "runs"
    assert (
        data.exists()
        and main(["check-data", "--paper", str(paper), "--dataset", str(card), "--runs-dir", str(runs)]) == 0
    )
    issues = pd.read_csv(runs / "tiny__leaves" / "data_issues.csv")
    straddling = issues[issues["reason"] == "group_leakage"]
    assert sorted(straddling["source"]) == ["catleaf6", "catleaf7", "dogleaf6", "dogleaf7"]
    assert straddling["detail"].iloc[0] == "group 'catleaf6' spans 2 parts: 3 in train, 3 in test"
    assert "4  warning   group_leakage: groups (split.group_by) in more than one subset" in capsys.readouterr().out
    # a split of our own keeps every group whole: nothing to report
    card = write_dataset_card(
        tmp_path, "whole", adapter="folder", options={"path": "leaves/train"},
        split={"folds": 2, "test": 0.25, "group_by": r"(\w+leaf\d+)_"},
    )  # fmt: skip
    assert main(["check-data", "--paper", str(paper), "--dataset", str(card), "--runs-dir", str(runs)]) == 0
    assert "group_leakage" not in set(pd.read_csv(runs / "tiny__whole" / "data_issues.csv")["reason"])


# ------------------------------------------------------------------ the statistics over folds


def test_fold_comparison_pairs_the_folds_both_sides_trained():
    before = {(1, 1): 0.80, (1, 2): 0.84, (1, 3): 0.82}
    after = {(1, 1): 0.85, (1, 2): 0.86, (1, 3): 0.88, (2, 1): 0.5}
    result = compare.fold_comparison(before, after)
    a, b = [0.85, 0.86, 0.88], [0.80, 0.84, 0.82]
    assert result["paired"]["units"] == [[1, 1], [1, 2], [1, 3]]
    assert result["paired"]["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    d = np.subtract(a, b)
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert result["paired"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert result["before"]["ci95"] == pytest.approx(compare.t_interval(b)) and result["after"]["n"] == 4
    decided = compare.deciding(None, None, None, result)
    assert decided["by"] == "folds" and decided["p_value"] == result["paired"]["p_value"]
    flat = compare.fold_comparison(before, {u: v + 0.01 for u, v in before.items()})
    assert flat["paired"]["p_value"] is None and "zero variance" in flat["paired"]["reason"]
    assert compare.fold_comparison(before)["paired"] is None and compare.t_interval([0.9]) is None


# ------------------------------------------------------------------ training, tuning and the report


@pytest.fixture(scope="module")
def cross_validated(tmp_path_factory):
    """`make train` then `make report` with 2 folds of the tiny card on digits (test 0.2)."""
    folder = tmp_path_factory.mktemp("folds")
    paper = write_tiny_paper_card(folder)
    digits = write_card(folder / "digits.yaml", {**DIGITS_DATASET, "split": {"test": 0.2, "folds": 2, "seed": 0}})
    cards = ["--paper", str(paper), "--dataset", str(digits), "--runs-dir", str(folder / "runs")]
    assert main(["train", *cards, "--quiet"]) == 0
    assert main(["report", *cards, "--reports-dir", str(folder / "reports"), "--quiet"]) == 0
    return {"cards": cards, "root": folder / "runs" / "tiny__digits", "report": folder / "reports" / "tiny__digits"}


def test_train_writes_every_fold_with_its_own_val_set(cross_validated):
    root = cross_validated["root"]
    split = pd.read_csv(root / "split.csv", dtype=str, keep_default_na=False)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("baseline")) == [
        "baseline-fold1",
        "baseline-fold2",
    ]
    for k in (1, 2):
        run = root / f"baseline-fold{k}"
        assert (run / "COMPLETE").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fold"] == k and metrics["folds"] == 2 and metrics["test_subset"] == "test"
        held = split[split["fold"] == str(k)]
        assert sum(metrics["counts"]["val"].values()) == len(held)
        assert sum(metrics["counts"]["train"].values()) == len(split[(split["fold"] != "") & (split["fold"] != str(k))])
        predictions = pd.read_csv(run / "predictions.csv", dtype=str)
        assert predictions["source"].tolist() == split[split["subset"] == "test"]["source"].tolist()


def test_a_rerun_resumes_per_fold(cross_validated):
    root = cross_validated["root"]
    (root / "baseline-fold2" / "COMPLETE").unlink()  # fold 2 was interrupted after its last epoch...
    shutil_moved = root / "baseline-fold2" / "metrics.json"
    shutil_moved.unlink()
    kept = (root / "baseline-fold1" / "metrics.json").read_text()
    assert main(["train", *cross_validated["cards"], "--quiet"]) == 0
    assert (root / "baseline-fold1" / "metrics.json").read_text() == kept  # fold 1 was complete: not retrained
    assert (root / "baseline-fold2" / "COMPLETE").is_file() and json.loads(shutil_moved.read_text())["fold"] == 2


def test_the_report_shows_each_fold_mean_std_and_interval(cross_validated):
    report = (cross_validated["report"] / "report.md").read_text()
    comparison = json.loads((cross_validated["report"] / "comparison.json").read_text())
    folds = comparison["folds"]
    accuracies = [
        json.loads((cross_validated["root"] / f"baseline-fold{k}" / "metrics.json").read_text())["test_accuracy"]
        for k in (1, 2)
    ]
    assert [r["run"] for r in folds["runs"]["before"]] == ["baseline-fold1", "baseline-fold2"]
    assert folds["before"]["accuracies"] == accuracies and folds["before"]["mean"] == pytest.approx(np.mean(accuracies))
    assert folds["before"]["ci95"] == pytest.approx(compare.t_interval(accuracies)) and folds["measured_on"] == "test"
    assert "| baseline-fold1 | 1 | 1 |" in report and "| baseline-fold2 | 1 | 2 |" in report
    assert f"| mean ± std |  |  |  | {np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f} |" in report
    assert "**Cross-validation:** 2 folds (split.folds)" in report and "95% t interval of the mean" in report
    assert "2 cross-validation folds of the rest" in report and "No test subset" not in report


def test_make_check_retrains_each_fold_on_its_own_fold(cross_validated, tmp_path):
    from project.commands import check as check_module

    rows, exact = check_module.check(cross_validated["report"], tmp_path / "runs")
    assert exact and {r[0] for r in rows} == {"baseline-fold1", "baseline-fold2"}
    assert all(r[-1] and r[4] == 0 for r in rows), rows  # fold 2 retrained on fold 1 would not repeat its numbers
    saved = json.loads((cross_validated["report"] / "metrics.json").read_text())["seeds"]["baseline"]
    assert [(r["folder"], r["fold"]) for r in saved] == [("baseline-fold1", 1), ("baseline-fold2", 2)]


def test_without_a_test_subset_the_figure_is_cross_validated_and_labelled_optimistic(tmp_path):
    paper = write_tiny_paper_card(tmp_path, search=TINY_SEARCH, evaluation={"tta": ["hflip"]})
    digits = write_card(tmp_path / "digits.yaml", {**DIGITS_DATASET, "split": {"test": 0, "folds": 2, "seed": 0}})
    cards = ["--paper", str(paper), "--dataset", str(digits), "--runs-dir", str(tmp_path / "runs")]
    root = tmp_path / "runs" / "tiny__digits"
    assert main(["tune", *cards, "--quiet"]) == 2  # refused before anything but the stage's lock is written
    assert not root.exists() or [p.name for p in root.iterdir()] == ["locks"]
    assert main(["train", *cards, "--quiet"]) == 0
    assert main(["report", *cards, "--reports-dir", str(tmp_path / "reports"), "--quiet"]) == 0
    metrics = [json.loads((root / f"baseline-fold{k}" / "metrics.json").read_text()) for k in (1, 2)]
    assert [m["test_subset"] for m in metrics] == ["held_out_fold"] * 2 and metrics[0]["counts"]["test"]["3"] == 0
    assert metrics[0]["test_accuracy"] == metrics[0]["val_accuracy"]
    assert metrics[0]["tta"]["test"]["count"] == metrics[0]["val"]["count"]  # TTA on the held-out fold too
    assert main(["evaluate", "--run", str(root / "baseline-fold2"), "--quiet"]) == 0  # recomputed on its fold
    predicted = pd.concat([pd.read_csv(root / f"baseline-fold{k}" / "predictions.csv") for k in (1, 2)])
    assert sorted(predicted["source"]) == sorted(pd.read_csv(root / "split.csv")["source"])  # each image once
    comparison = json.loads((tmp_path / "reports" / "tiny__digits" / "comparison.json").read_text())
    pooled = comparison["folds"]["pooled"]
    assert pooled["count"] == 1797 and pooled["accuracy"] == pytest.approx(
        np.mean(predicted["true"] == predicted["predicted"])
    )
    report = (tmp_path / "reports" / "tiny__digits" / "report.md").read_text()
    assert comparison["headline"].startswith("Cross-validated accuracy over 2 folds (no test subset: split.test 0)")
    assert "optimistic" in comparison["headline"] and "**No test subset (split.test: 0).**" in report
    assert "held-out-fold accuracy before" in report and "Run `make tune" not in report  # tuning is refused


def test_make_tune_without_a_test_subset_names_split_test(tmp_path, capsys):
    paper = write_tiny_paper_card(tmp_path, search=TINY_SEARCH)
    digits = write_card(tmp_path / "digits.yaml", {**DIGITS_DATASET, "split": {"test": 0, "folds": 2}})
    assert main(["tune", "--paper", str(paper), "--dataset", str(digits), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "split.test is 0, so there is no held-out test subset, and make tune needs one" in err
    )
    assert main(["plan", "--paper", str(paper), "--dataset", str(digits), "--seeds", "2"]) == 0
    assert "-> baseline (1 epochs x 2 seeds x 2 folds) -> report (split.test 0: no tuning)" in capsys.readouterr().out


def test_grouped_folds_of_an_image_folder(tmp_path):
    from project.data.prepare import prepare

    group_folder(tmp_path / "leaves")
    card = write_dataset_card(
        tmp_path, "leaves", adapter="folder", options={"path": "leaves"},
        split={"folds": 2, "test": 0.25, "group_by": r"leaf(\d+)_"},
    )  # fmt: skip
    config = load_config(str(write_tiny_paper_card(tmp_path)), str(card))
    root = tmp_path / "runs" / config.run_name
    data = prepare(config, root, fold=2)
    assert data.fold == 2 and set(data.subsets) == {"train", "val", "test"}
    split = pd.read_csv(root / "split.csv", dtype=str, keep_default_na=False)
    where = [f"fold{f}" if f else s for s, f in zip(split["subset"], split["fold"])]
    assert max(len(places) for places in spread(split["group"], where).values()) == 1  # leaf k of both classes together
    assert np.array_equal(data.subsets == "val", (split["fold"] == "2").to_numpy())
    assert np.array_equal(data.for_fold(1).subsets == "val", (split["fold"] == "1").to_numpy())
    with pytest.raises(UserError, match="fold 3 does not exist: the dataset card's split.folds is 2"):
        prepare(config, root, fold=3)


@pytest.mark.slow
def test_search_folds_score_a_trial_on_the_mean_over_folds_and_tuned_is_paired_by_fold(tmp_path):
    search = {**TINY_SEARCH, "folds": 2, "finalists": 1, "fine": {"trials": 1, "epochs": 1}}
    paper = write_tiny_paper_card(tmp_path, search=search)
    digits = write_card(tmp_path / "digits.yaml", {**DIGITS_DATASET, "split": {"test": 0.2, "folds": 2, "seed": 0}})
    cards = ["--paper", str(paper), "--dataset", str(digits), "--runs-dir", str(tmp_path / "runs")]
    assert main(["train", *cards, "--quiet"]) == 0 and main(["tune", *cards, "--quiet"]) == 0
    assert main(["report", *cards, "--reports-dir", str(tmp_path / "reports"), "--quiet"]) == 0
    root = tmp_path / "runs" / "tiny__digits"
    trials = pd.read_csv(root / "tuning" / "trials.csv")
    trial = next((root / "tuning" / "coarse").glob("trial_*"))
    best = [pd.read_csv(trial / f"fold{k}" / "logs" / "history_train.csv")["val_accuracy"].max() for k in (1, 2)]
    assert trials.loc[trials["stage"] == "coarse", "best_val_accuracy"].iloc[0] == pytest.approx(np.mean(best))
    assert all((root / name / "COMPLETE").is_file() for name in ("tuned-fold1", "tuned-fold2", "baseline-fold2"))
    summary = json.loads((root / "tuning" / "summary.json").read_text())
    assert summary["final_round"]["finalists"][0]["folds"] == 2
    comparison = json.loads((tmp_path / "reports" / "tiny__digits" / "comparison.json").read_text())
    assert comparison["decision"]["by"] == "folds" and comparison["folds"]["paired"]["units"] == [[1, 1], [1, 2]]


def test_a_run_written_before_the_new_keys_is_kept(tmp_path):
    """config.resolved.yaml of an older run lacks split.folds and split.group_by: the same recipe, not retrained."""
    import yaml

    from project.config.cards import resolved_yaml
    from project.train.training import prepare_run_folder

    folder = tmp_path / "baseline"
    text = resolved_yaml(load_config("demo", "digits"))
    old = yaml.safe_load(text)
    for key in ("folds", "group_by"):
        del old["dataset"]["split"][key]
    folder.mkdir()
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump(old))
    (folder / "marker").write_text("kept")
    prepare_run_folder(folder, text)
    assert (folder / "marker").exists()
    prepare_run_folder(folder, resolved_yaml(load_config("demo", "digits", ["split.folds=3"])))
    assert not (folder / "marker").exists()  # a new key set is a new recipe


def test_the_chest_xray_card_groups_its_images_by_patient():
    """The shipped card's group_by on the file names of the Kermany data (both classes)."""
    from types import SimpleNamespace

    from project.config.cards import read_yaml
    from project.data.split import groups_of

    group_by = read_yaml(ROOT / "datasets" / "chest_xray_pneumonia.yaml")["split"]["group_by"]
    ids = [
        "train/PNEUMONIA/person12_virus_3.jpeg",
        "train/PNEUMONIA/person12_bacteria_1.jpeg",
        "train/PNEUMONIA/person1_bacteria_1.jpeg",
        "train/NORMAL/IM-0115-0001.jpeg",
        "train/NORMAL/NORMAL2-IM-0115-0002.jpeg",
        "train/NORMAL/IM-0117-0001.jpeg",
    ]
    groups = list(groups_of(SimpleNamespace(ids=ids), group_by))
    assert groups == ["person12", "person12", "person1", "IM-0115", "IM-0115", "IM-0117"]
