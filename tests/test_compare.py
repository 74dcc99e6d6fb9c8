"""project.report.compare on hand-made prediction pairs and seed accuracies with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from project.errors import UserError
from project.report import compare
from project.train.metrics import roc_auc


def pairs(both_right=0, b=0, c=0, both_wrong=0):
    """(correct_before, correct_after) with the given counts of each kind of image."""
    before = [True] * both_right + [True] * b + [False] * c + [False] * both_wrong
    after = [True] * both_right + [False] * b + [True] * c + [False] * both_wrong
    return np.array(before), np.array(after)


# ------------------------------------------------------------------ McNemar and the paired bootstrap


def test_all_agree_gives_p_1_and_an_interval_of_0():
    before, after = pairs(both_right=80, both_wrong=20)
    assert compare.mcnemar_exact(before, after) == {"b": 0, "c": 0, "n_discordant": 0, "p_value": 1.0}
    boot = compare.paired_bootstrap(before, after)
    assert boot == {"difference": 0.0, "ci95": [0.0, 0.0], "images": 100, "resamples": 2000, "seed": 0}


def test_one_sided_discordance_has_the_exact_binomial_p():
    result = compare.mcnemar_exact(*pairs(both_right=50, c=10))
    assert (result["b"], result["c"], result["n_discordant"]) == (0, 10, 10)
    assert result["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-12)
    reverse = compare.mcnemar_exact(*pairs(both_right=50, b=10))
    assert (reverse["b"], reverse["c"]) == (10, 0) and reverse["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-12)


def test_mcnemar_p_is_the_two_sided_binomial_tail():
    # b = 2 of 10 discordant: p = 2 * P(X <= 2) = 2 * (1 + 10 + 45) / 1024
    result = compare.mcnemar_exact(*pairs(both_right=30, b=2, c=8, both_wrong=5))
    assert (result["b"], result["c"]) == (2, 8)
    assert result["p_value"] == pytest.approx(2 * 56 / 1024, rel=1e-12)
    assert compare.mcnemar_exact(*pairs(b=3, c=3))["p_value"] == pytest.approx(1.0)


def test_mcnemar_counts_by_image_not_by_totals():
    """Same accuracy before and after (2 of 4), but every image changed: b = c = 2."""
    result = compare.mcnemar_exact([True, True, False, False], [False, False, True, True])
    assert (result["b"], result["c"]) == (2, 2)


def test_paired_bootstrap_resamples_images_for_both_runs_together():
    # 300 right in both, 40 only after, 60 wrong in both: the difference is 0.1 and, paired, its standard
    # error is sqrt(0.1 * 0.9 / 400) = 0.015, so the interval is about [0.071, 0.129]; resampling the two
    # runs independently would give a standard error of 0.028 and an interval about twice as wide.
    before, after = pairs(both_right=300, c=40, both_wrong=60)
    boot = compare.paired_bootstrap(before, after)
    assert boot["difference"] == pytest.approx(0.1)
    lo, hi = boot["ci95"]
    assert lo == pytest.approx(0.1 - 1.96 * 0.015, abs=0.008) and hi == pytest.approx(0.1 + 1.96 * 0.015, abs=0.008)
    assert compare.paired_bootstrap(before, after) == boot, "the fixed seed makes it repeatable"
    other = compare.paired_bootstrap(before, after, resamples=500, seed=1)
    assert other["ci95"] != boot["ci95"] and (other["resamples"], other["seed"]) == (500, 1)


def test_paired_bootstrap_of_a_uniform_change_is_exact():
    assert compare.paired_bootstrap(*pairs(c=25))["ci95"] == [1.0, 1.0]
    assert compare.paired_bootstrap(*pairs(b=25))["ci95"] == [-1.0, -1.0]


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        compare.mcnemar_exact([True, False], [True])


def test_bootstrap_metric_skips_resamples_where_the_metric_is_undefined():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.column_stack([1 - np.linspace(0, 1, 8), np.linspace(0, 1, 8)])
    result = compare.bootstrap_metric(roc_auc, y, scores, resamples=200, seed=0)
    # the one positive image is missing from about (7/8)^8 = 34% of resamples
    assert 100 < result["defined"] < 170 and result["ci95"] == pytest.approx([1.0, 1.0])
    assert compare.bootstrap_metric(lambda y, p: None, y, scores, resamples=10)["ci95"] is None


# ------------------------------------------------------------------ seeds


def test_welch_matches_the_hand_computation():
    before, after = [0.90, 0.92, 0.94], [0.95, 0.96, 0.97]
    result = compare.seed_comparison(before, after)
    se2 = np.var(before, ddof=1) / 3 + np.var(after, ddof=1) / 3  # 0.0004 / 3 + 0.0001 / 3
    t = 0.04 / math.sqrt(se2)
    df = se2**2 / ((0.0004 / 3) ** 2 / 2 + (0.0001 / 3) ** 2 / 2)
    assert result["welch"]["t"] == pytest.approx(t) and t == pytest.approx(3.0984, abs=1e-4)
    assert result["welch"]["df"] == pytest.approx(df) and df == pytest.approx(2.9412, abs=1e-4)
    assert result["welch"]["p_value"] == pytest.approx(2 * stats.t.sf(t, df))
    assert result["before"]["accuracies"] == before and result["before"]["n"] == 3
    assert result["before"]["mean"] == pytest.approx(0.92) and result["before"]["std"] == pytest.approx(0.02)
    assert result["after"]["mean"] == pytest.approx(0.96) and result["after"]["std"] == pytest.approx(0.01)
    assert result["difference"] == pytest.approx(0.04)
    lo, hi = result["ci95"]
    assert 0.0 < lo < 0.04 < hi < 0.08
    assert "n = 3 seeds before, 3 after" in result["note"] and "cannot go below 0.1" in result["note"]


def test_welch_is_refused_without_two_seeds_or_without_variance():
    one = compare.seed_comparison([0.9], [0.95, 0.96])
    assert one["welch"]["p_value"] is None and "at least 2 seeds on each side" in one["welch"]["reason"]
    assert one["before"]["std"] is None
    flat = compare.seed_comparison([0.9, 0.9, 0.9], [0.95, 0.95, 0.95])
    assert flat["welch"]["p_value"] is None and "zero variance" in flat["welch"]["reason"]
    assert flat["ci95"] == pytest.approx([0.05, 0.05])


def test_permutation_floor():
    assert compare.permutation_floor(3, 3) == (pytest.approx(0.1), 20)
    assert compare.permutation_floor(5, 5) == (pytest.approx(2 / 252), 252)
    assert compare.permutation_floor(2, 3) == (pytest.approx(1 / 10), 10)


# ------------------------------------------------------------------ the headline


def test_headline_says_improved_when_the_interval_is_above_0_and_p_small():
    before, after = pairs(both_right=10, c=10)
    text = compare.headline(compare.mcnemar_exact(before, after), compare.paired_bootstrap(before, after))
    assert text.startswith("Optimisation improved test accuracy by +0.5000 (95 % CI [")
    assert "p = 0.002" in text and "paired on the same 20 test images" in text and text.endswith(").")


def test_headline_says_worse_when_the_interval_is_below_0_and_p_small():
    before, after = pairs(both_right=10, b=10)
    text = compare.headline(compare.mcnemar_exact(before, after), compare.paired_bootstrap(before, after))
    assert text.startswith("Optimisation made test accuracy worse by \u22120.5000 (95 % CI [\u2212")


def test_headline_says_within_noise_otherwise():
    before, after = pairs(both_right=80, b=3, c=5, both_wrong=12)
    text = compare.headline(compare.mcnemar_exact(before, after), compare.paired_bootstrap(before, after))
    assert text.startswith("The difference (+0.0200, 95 % CI [")
    assert text.endswith("is within noise: this is not evidence of an improvement.")


def test_an_interval_above_0_is_not_enough_without_a_small_p():
    # 4 of 100 images fixed, none broken: the bootstrap interval stays above 0 but McNemar's p is 2 / 16 = 0.125
    before, after = pairs(both_right=90, c=4, both_wrong=6)
    paired, boot = compare.mcnemar_exact(before, after), compare.paired_bootstrap(before, after)
    assert boot["ci95"][0] > 0 and paired["p_value"] == pytest.approx(0.125)
    assert "is within noise" in compare.headline(paired, boot)


def test_headline_uses_the_seeds_when_both_sides_have_two_or_more():
    before, after = pairs(both_right=100)  # the paired test alone: no change
    paired, boot = compare.mcnemar_exact(before, after), compare.paired_bootstrap(before, after)
    seeds = compare.seed_comparison([0.80, 0.81, 0.82], [0.90, 0.91, 0.92])
    text = compare.headline(paired, boot, seeds)
    assert text.startswith("Optimisation improved test accuracy by +0.1000 (95 % CI [")
    assert "mean over 3 vs 3 seeds, Welch's t-test" in text
    assert compare.deciding(paired, boot, seeds)["by"] == "seeds"
    one_side = compare.seed_comparison([0.80, 0.81, 0.82], [0.90])
    assert compare.deciding(paired, boot, one_side)["by"] == "paired"
    assert "is within noise" in compare.headline(paired, boot, one_side)


# ------------------------------------------------------------------ pairing predictions by image


def predictions(sources, true, predicted):
    return pd.DataFrame({"source": sources, "true": true, "predicted": predicted, "confidence": 0.9})


def test_predictions_are_paired_by_source_not_by_row():
    before = predictions(["a", "b", "c"], ["x", "y", "x"], ["x", "x", "x"])  # right, wrong, right
    after = predictions(["c", "a", "b"], ["x", "x", "y"], ["y", "x", "y"])  # c wrong, a right, b right
    correct_before, correct_after = compare.paired_correct(before, after)
    assert correct_before.tolist() == [True, False, True] and correct_after.tolist() == [True, True, False]


def test_different_test_images_are_refused():
    before = predictions(["a", "b", "c"], ["x", "y", "x"], ["x", "x", "x"])
    after = predictions(["a", "b", "d"], ["x", "y", "x"], ["x", "y", "x"])
    with pytest.raises(
        UserError,
        match=r"not evaluated on the same test images: 1 only in base\.csv \(e\.g\. c\); "
        r"1 only in tuned\.csv \(e\.g\. d\)",
    ):
        compare.paired_correct(before, after, "base.csv", "tuned.csv")
    with pytest.raises(UserError, match="different true classes to 1 test images"):
        compare.paired_correct(before, predictions(["a", "b", "c"], ["x", "x", "x"], ["x", "x", "x"]))
    with pytest.raises(UserError, match="lists test image a more than once"):
        compare.paired_correct(before, predictions(["a", "a", "b", "c"], ["x"] * 4, ["x"] * 4))


# ------------------------------------------------------------------ against the paper


def test_paper_verdicts():
    assert compare.paper_verdict(0.95, 0.951, (0.94, 0.96)) == "reproduced"
    assert compare.paper_verdict(0.95, 0.951, (0.90, 0.99)) == "inconclusive"  # half-width 0.045 > 0.02
    assert compare.paper_verdict(0.95, 0.951, (0.90, 0.99), tolerance=0.05) == "reproduced"
    assert compare.paper_verdict(0.99, 0.93, (0.90, 0.95)) == "below"
    assert compare.paper_verdict(0.85, 0.93, (0.90, 0.95)) == "above"
    assert compare.paper_verdict(0.95, 0.95, (0.90, 0.95), tolerance=0.05) == "reproduced"  # the edge is inside
    assert compare.paper_verdict(0.95, 0.951, (0.94, 0.96), comparable=False) == "not comparable"
    assert compare.paper_verdict(0.95, None, None) == "not comparable"


def test_verdicts_in_words():
    assert compare.verdict_text("below", 0.99, (0.90, 0.95), 0.02).startswith("below: our result is below the paper's")
    assert compare.verdict_text("above", 0.85, (0.90, 0.95), 0.02).startswith("above: our result is above the paper's")
    assert "half-width 0.0450 is above the tolerance 0.02" in compare.verdict_text(
        "inconclusive", 0.95, (0.90, 0.99), 0.02
    )
    assert (
        compare.verdict_text("not comparable", 0.9, None, 0.02, "another dataset") == "not comparable: another dataset"
    )


def test_overall_verdict():
    assert compare.overall_verdict(["reproduced", "not comparable"])[0] == "reproduced"
    assert compare.overall_verdict(["reproduced", "inconclusive"])[0] == "inconclusive"
    assert compare.overall_verdict(["reproduced", "below", "not comparable"])[0] == "not reproduced"
    assert compare.overall_verdict(["above"])[0] == "not reproduced"
    assert compare.overall_verdict(["not comparable", "not comparable"])[0] == "not comparable"
    assert compare.overall_verdict([])[0] == "not comparable"
    assert compare.overall_verdict(["reproduced", "below", "not comparable"])[1] == (
        "2 of the 3 results the paper reports are comparable (1 reproduced, 1 below, 1 not comparable)."
    )


def test_a_reported_dataset_names_a_card_ignoring_case_and_punctuation():
    assert compare.same_dataset("CIFAR-10", "cifar10")
    assert compare.same_dataset("Oxford Flowers-102", "oxford_flowers102")
    assert not compare.same_dataset("CIFAR-100", "cifar10")
    assert not compare.same_dataset("ImageNet (ILSVRC 2012)", "digits")
    assert not compare.same_dataset("none", "digits")
