"""Metrics from predictions (scikit-learn): the numbers every run, evaluation and report share."""

import math

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def cross_entropy(y_true, probabilities):
    """Mean cross-entropy of the true class (no label smoothing, no regularisation)."""
    p = np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def classification_metrics(y_true, probabilities, class_names):
    y_true = np.asarray(y_true)
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": cross_entropy(y_true, probabilities),
        "macro_f1": float(np.mean(f1)),
        "count": int(len(y_true)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
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


def class_weights(labels, num_classes):
    """'balanced' weights, n / (k * count), for `class_weight: auto`."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {i: float(len(labels) / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}
