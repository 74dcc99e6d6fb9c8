"""Every prediction tied to its image (issue 15, part 1): a file that stops decoding after the data
check is named, counted and listed, and never shifts a row of predictions.csv onto another image;
an epoch short of a training image still has steps_per_epoch batches."""

import json

import keras
import numpy as np
import pandas as pd
from conftest import write_card, write_tiny_paper_card

from project.config.cards import load_config
from project.data.pipeline import decode, resize
from project.data.prepare import prepare
from project.report.render import cli as report_cli
from project.train.training import train_run

CARD = {"adapter": "folder", "options": {"path": "data"}, "split": {"val": 0.2, "test": 0.3, "seed": 0}}


class Truncate(keras.callbacks.Callback):
    """Damages a file at a chosen moment of training: after epoch `after` ends (None: when training ends)."""

    def __init__(self, path, after=None):
        super().__init__()
        self.path, self.after = path, after

    def truncate(self):
        data = self.path.read_bytes()
        self.path.write_bytes(data[: len(data) // 3])

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            self.truncate()

    def on_train_end(self, logs=None):
        if self.after is None:
            self.truncate()


class BatchesPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.counts[-1] += 1


def setup(tmp_path, image_folder, classes=None, **paper):
    image_folder(tmp_path / "data", classes or {"cat": 10, "dog": 10, "owl": 10}, size=(16, 16))
    card = write_card(tmp_path / "data.yaml", CARD)
    config = load_config(str(write_tiny_paper_card(tmp_path, **paper)), str(card))
    root = tmp_path / "runs" / config.run_name
    return config, root, prepare(config, root)  # the data check and the split, before the run


def report_text(config, tmp_path, root):
    class Args:
        runs_dir = str(root.parent)
        reports_dir = str(tmp_path / "reports")
        target = None
        pdf = False

    report_cli(config, Args())
    return (tmp_path / "reports" / config.run_name / "report.md").read_text()


def test_a_test_image_damaged_after_the_data_check_is_skipped_named_and_never_shifts_a_row(
    tmp_path, image_folder, capfd
):
    config, root, data = setup(tmp_path, image_folder)
    test_ids = data.ids("test")
    victim = test_ids[1]  # early in the test subset: a shift would move every later row
    train_run(config, root, verbose=0, extra_callbacks=[Truncate(tmp_path / "data" / victim)])
    err = capfd.readouterr().err
    assert f"test image {victim} could not be decoded and was skipped" in err

    run = root / "baseline"
    split = pd.read_csv(root / "split.csv", dtype=str)
    truth = dict(zip(split["source"], split["label"]))
    table = pd.read_csv(run / "predictions.csv", dtype={"source": str, "true": str})
    assert table["source"].tolist() == [s for s in test_ids if s != victim]
    assert all(truth[source] == true for source, true in zip(table["source"], table["true"]))
    # each row's probabilities are the saved model's for that very file
    model = keras.saving.load_model(run / "model.keras")
    images = np.stack([resize(decode(str(tmp_path / "data" / s)), (16, 16)).numpy() for s in table["source"]])
    expected = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(table[[f"p_{c}" for c in data.class_names]].to_numpy(), expected, atol=1e-5)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_images"] == {"val": [], "test": [victim]}
    assert metrics["test"]["count"] == len(test_ids) - 1 == len(table)
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == len(test_ids) - 1
    assert metrics["test_accuracy"] == np.mean(table["true"] == table["predicted"])

    issues = pd.read_csv(root / "data_issues.csv", dtype=str, keep_default_na=False)
    row = issues[issues["source"] == victim]
    assert row[["reason", "action"]].values.tolist() == [["undecodable", "skipped"]]
    assert "baseline" in row["detail"].iloc[0]

    text = report_text(config, tmp_path, root)
    assert f"baseline: 1 test image was skipped: {victim}" in text
    assert f"over the {len(test_ids) - 1} images evaluated" in text


def test_without_a_damaged_file_nothing_is_reported_skipped(tmp_path, image_folder):
    config, root, data = setup(tmp_path, image_folder)
    train_run(config, root, verbose=0)
    run = root / "baseline"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_images"] == {"val": [], "test": []}
    assert metrics["test"]["count"] == len(data.ids("test"))
    assert pd.read_csv(run / "predictions.csv", dtype=str)["source"].tolist() == data.ids("test")
    issues = pd.read_csv(root / "data_issues.csv", dtype=str, keep_default_na=False)
    assert "skipped" not in set(issues["action"])
    assert "skipped:" not in report_text(config, tmp_path, root)


def test_an_epoch_short_of_a_training_image_still_has_steps_per_epoch_batches(tmp_path, image_folder, capfd):
    # 11 training images in batches of 5: 3 batches; one image fewer would make 2, and without a
    # top-up the second epoch would end early (or take the next epoch's batches)
    config, root, data = setup(
        tmp_path,
        image_folder,
        classes={"cat": 12, "dog": 12},
        training={"batch_size": 5, "stages": [{"name": "train", "epochs": 2, "unfreeze": "all"}]},
        runtime={"cache": "none"},
    )
    train = data.ids("train")
    assert len(train) == 11
    counter = BatchesPerEpoch()
    metrics = train_run(
        config, root, verbose=0, extra_callbacks=[Truncate(tmp_path / "data" / train[0], after=0), counter]
    )
    assert counter.counts == [3, 3]
    assert metrics["stages"][0]["epochs"] == 2
    assert f"1 of {len(train)} images could not be decoded and were skipped" in capfd.readouterr().err
    assert metrics["skipped_images"] == {"val": [], "test": []}  # a training image: not evaluated
