"""Metrics from predictions (scikit-learn): the numbers every run, evaluation and report share."""

import math
import warnings

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

IMBALANCED = 3.0  # largest / smallest class count in train above which accuracy alone misleads


def cross_entropy(y_true, probabilities):
    """Mean cross-entropy of the true class (no label smoothing, no regularisation)."""
    p = np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def balanced_accuracy(y_true, probabilities):
    return _balanced(y_true, probabilities.argmax(axis=1))


def _balanced(y_true, y_pred):
    """Mean recall over the classes present in y_true (sklearn warns when y_pred holds others: expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def macro_f1(y_true, probabilities):
    labels = list(range(probabilities.shape[1]))
    return float(f1_score(y_true, probabilities.argmax(axis=1), labels=labels, average="macro", zero_division=0))


def roc_auc(y_true, probabilities):
    """Binary: AUC of the positive (second) class; multi-class: one-vs-rest, macro. None when a class is
    missing from y_true (its AUC is undefined)."""
    classes = probabilities.shape[1]
    if len(np.unique(y_true)) < classes:
        return None
    if classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    # the mean of each class's binary AUC is what roc_auc_score(multi_class="ovr") computes, without its demand that
    # rows sum to 1, which probabilities read back (rounded) from predictions.csv miss; renormalising would break ties
    return float(np.mean([roc_auc_score(y_true == k, probabilities[:, k]) for k in range(classes)]))


def top5_accuracy(y_true, probabilities):
    """None with 5 classes or fewer, where every image would count as right."""
    classes = probabilities.shape[1]
    if classes <= 5:
        return None
    return float(top_k_accuracy_score(y_true, probabilities, k=5, labels=list(range(classes))))


# the scalar metrics a paper card may report that are not plain proportions (the report bootstraps them)
SCALAR = {"macro_f1": macro_f1, "balanced_accuracy": balanced_accuracy, "roc_auc": roc_auc}


def trivial_baseline(y_true, class_names):
    """Always predicting the subset's majority class: its accuracy (the majority share), balanced accuracy and macro-F1."""
    y_true = np.asarray(y_true, dtype=int)
    labels = list(range(len(class_names)))
    counts = np.bincount(y_true, minlength=len(labels))
    majority = int(np.argmax(counts))
    constant = np.full(len(y_true), majority)
    return {
        "predicts": class_names[majority],
        "accuracy": float(counts[majority] / len(y_true)),
        "balanced_accuracy": _balanced(y_true, constant),
        "macro_f1": float(f1_score(y_true, constant, labels=labels, average="macro", zero_division=0)),
    }


def classification_metrics(y_true, probabilities, class_names):
    y_true = np.asarray(y_true)
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    negatives = len(y_true) - matrix.sum(axis=1)
    false_positives = matrix.sum(axis=0) - np.diag(matrix)
    specificity = [float((n - fp) / n) if n else 0.0 for n, fp in zip(negatives, false_positives)]
    trivial = trivial_baseline(y_true, class_names)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": cross_entropy(y_true, probabilities),
        "macro_f1": float(np.mean(f1)),
        "balanced_accuracy": balanced_accuracy(y_true, probabilities),
        "roc_auc": roc_auc(y_true, probabilities),
        "top5_accuracy": top5_accuracy(y_true, probabilities),
        "majority_share": trivial["accuracy"],
        "trivial_baseline": trivial,
        "count": int(len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "sensitivity": float(recall[i]),
                "specificity": specificity[i],
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }


def wilson_interval(successes, total, z=1.959963984540054):
    """95% Wilson score interval for a proportion (accuracy on `total` test images)."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def imbalance_ratio(counts):
    """Largest / smallest non-empty class count ({class: count}); nan without classes."""
    present = [v for v in counts.values() if v > 0]
    return max(present) / min(present) if present else float("nan")


def class_weights(labels, num_classes):
    """'balanced' weights, n / (k * count), for `class_weight: auto`."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {i: float(len(labels) / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}
