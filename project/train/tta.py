"""Test-time augmentation (evaluation.tta): the softmax averaged over the plain test images and the
card's views of them (flips, quarter turns). metrics.json keeps it next to the plain figure
(test_tta_accuracy, tta), which stays the run's test accuracy: TTA never replaces it.

The views are exact pixel rearrangements of the un-augmented test batches, so the figure is as
deterministic as the plain one.
"""

import numpy as np
import tensorflow as tf

from project.config.schema import TTA_VIEWS
from project.train.metrics import classification_metrics

# batches of images [batch, height, width, channels]; rot90 turns counter-clockwise
VIEWS = {
    "hflip": lambda images: tf.reverse(images, axis=[2]),
    "vflip": lambda images: tf.reverse(images, axis=[1]),
    "rot90": lambda images: tf.image.rot90(images, k=1),
    "rot180": lambda images: tf.image.rot90(images, k=2),
    "rot270": lambda images: tf.image.rot90(images, k=3),
}
assert tuple(VIEWS) == TTA_VIEWS, "schema.TTA_VIEWS lists the views the card accepts: the same names"


def tta_probabilities(model, dataset, views):
    """The mean of the model's softmax over the plain images of `dataset` ((images, labels) batches,
    un-augmented) and each view of them, with the labels."""
    images = dataset.map(lambda x, y: x)
    total = np.asarray(model.predict(images, verbose=0), dtype=np.float64)
    for name in views:
        total += np.asarray(model.predict(images.map(VIEWS[name]), verbose=0), dtype=np.float64)
    labels = np.concatenate([np.argmax(y, axis=1) for y in dataset.map(lambda x, y: y).as_numpy_iterator()])
    return total / (1 + len(views)), labels


def tta_scores(model, data, feed, views, subset="test"):
    """metrics.json's `tta` (records.TestTimeAugmentation): the views and the test scores of the
    averaged softmax; None without views. `subset`: where the run's test figures are measured (val:
    the held-out fold, with split.test 0)."""
    if not views:
        return None
    probabilities, labels = tta_probabilities(model, data.dataset(subset, feed, training=False), views)
    scores = classification_metrics(labels, probabilities, data.class_names)
    return {
        "views": list(views),
        "test": {k: v for k, v in scores.items() if k not in ("per_class", "confusion_matrix")},
    }
