"""project.train.metrics on hand-made probabilities, against values worked out by hand."""

import numpy as np
import pytest

from project.train.metrics import classification_metrics, imbalance_ratio, roc_auc, top5_accuracy, trivial_baseline

# two classes; the second (index 1) is the positive class. argmax predicts [0, 0, 1, 1, 0]
BINARY_Y = np.array([0, 0, 0, 1, 1])
BINARY_P = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])

# three classes; argmax predicts [0, 1, 2, 1, 0, 1]
THREE_Y = np.array([0, 1, 2, 0, 1, 2])
THREE_P = np.array(
    [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]]
)


def test_binary_balanced_accuracy_specificity_auc_and_trivial_baseline():
    m = classification_metrics(BINARY_Y, BINARY_P, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # recall of neg 2/3, of pos 1/2: balanced accuracy is their mean, not the accuracy 0.6
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["per_class"]["pos"]["sensitivity"] == pytest.approx(1 / 2)
    assert m["per_class"]["pos"]["specificity"] == pytest.approx(2 / 3)  # 2 of the 3 negatives called negative
    assert m["per_class"]["neg"]["specificity"] == pytest.approx(1 / 2)
    # AUC of the positive class: of the 2 x 3 (positive, negative) pairs, 4 rank the positive higher
    assert m["roc_auc"] == pytest.approx(4 / 6)
    assert m["top5_accuracy"] is None
    assert m["majority_share"] == pytest.approx(3 / 5)
    # always "neg": F1 of neg 2 * 0.6 * 1 / 1.6 = 0.75, of pos 0; balanced accuracy 1/2
    trivial = {"predicts": "neg", "accuracy": 0.6, "balanced_accuracy": 0.5, "macro_f1": 0.375}
    assert m["trivial_baseline"] == pytest.approx(trivial)


def test_multiclass_auc_is_one_vs_rest_macro_and_specificity_per_class():
    m = classification_metrics(THREE_Y, THREE_P, ["a", "b", "c"])
    # one-vs-rest AUCs by hand (ties count one half): a 7/8, b 5/8, c 7/8
    assert m["roc_auc"] == pytest.approx((7 / 8 + 5 / 8 + 7 / 8) / 3)
    assert [m["per_class"][c]["specificity"] for c in "abc"] == pytest.approx([3 / 4, 2 / 4, 4 / 4])
    assert [m["per_class"][c]["sensitivity"] for c in "abc"] == pytest.approx([0.5, 0.5, 0.5])
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_existing_keys_are_kept():
    m = classification_metrics(THREE_Y, THREE_P, ["a", "b", "c"])
    assert {"accuracy", "loss", "macro_f1", "count", "per_class", "confusion_matrix"} <= set(m)
    assert set(m["per_class"]["a"]) >= {"precision", "recall", "f1", "support"}
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_auc_is_none_when_a_class_is_missing():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.6, 0.2, 0.2]])
    assert roc_auc(np.array([0, 1, 1, 0]), probabilities) is None
    assert roc_auc(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]])) is None


def test_auc_accepts_rows_that_do_not_sum_to_one():
    """predictions.csv keeps 6 decimals, so rows need not sum to 1 (scikit-learn refuses those for one-vs-rest)."""
    assert roc_auc(THREE_Y, THREE_P * 0.999) == pytest.approx((7 / 8 + 5 / 8 + 7 / 8) / 3)


def test_top5_accuracy_counts_the_true_class_among_the_five_most_probable():
    row = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05])  # class 0 most probable ... class 6 least
    probabilities = np.tile(row, (4, 1))
    y_true = np.array([0, 4, 5, 6])  # ranks 1, 5, 6, 7
    assert top5_accuracy(y_true, probabilities) == pytest.approx(2 / 4)
    assert top5_accuracy(np.array([0, 4, 5]), np.tile(row[:6] / row[:6].sum(), (3, 1))) == pytest.approx(2 / 3)
    assert top5_accuracy(np.array([0, 4]), np.tile(row[:5] / row[:5].sum(), (2, 1))) is None
    m = classification_metrics(y_true, probabilities, list("abcdefg"))
    assert m["top5_accuracy"] == pytest.approx(0.5)


def test_trivial_baseline_of_three_classes():
    t = trivial_baseline(np.array([2, 2, 2, 0, 1]), ["a", "b", "c"])
    assert t == pytest.approx({"predicts": "c", "accuracy": 0.6, "balanced_accuracy": 1 / 3, "macro_f1": 0.75 / 3})


def test_imbalance_ratio_ignores_empty_classes():
    assert imbalance_ratio({"a": 300, "b": 50, "c": 0}) == 6.0
    assert imbalance_ratio({"a": 10, "b": 10}) == 1.0
