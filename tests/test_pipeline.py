"""Input pipeline: shapes, dtypes and value ranges; every image becomes RGB; augmentation on train only."""

import io

import numpy as np
import pytest
from conftest import write_card, write_tiny_paper_card
from PIL import Image

from project.config.cards import load_config
from project.data import pipeline
from project.data.augment import build_augmentation
from project.data.prepare import prepare
from project.errors import UserError
from project.train.training import feed_of

COLOUR = (200, 40, 90)


def batches(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_arrays_to_float_batches_and_one_hot():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    images[0] = 255
    images[1] = 0
    labels = np.arange(10) % 4
    data = pipeline.make_dataset(images, labels, "array", size=(16, 12), num_classes=4, batch_size=4)
    shapes = [tuple(x.shape) for x, _ in data]
    assert shapes == [(4, 16, 12, 3), (4, 16, 12, 3), (2, 16, 12, 3)]
    x, y = batches(data)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 255.0 and x.mean() > 50  # raw 0-255, not rescaled
    assert np.all(x[0] == 255.0) and np.all(x[1] == 0.0)
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])  # grey -> RGB
    assert y.shape == (10, 4) and np.all(y.sum(axis=1) == 1.0) and np.array_equal(y.argmax(axis=1), labels)


def test_rgba_arrays_drop_alpha():
    images = np.zeros((2, 4, 4, 4), np.uint8)
    images[..., :3] = COLOUR
    images[..., 3] = 7
    x, _ = batches(pipeline.make_dataset(images, [0, 1], "array", size=(4, 4), num_classes=2, batch_size=2))
    assert x.shape == (2, 4, 4, 3) and np.all(x == np.array(COLOUR, np.float32))


def image_bytes(mode, fmt):
    rgb = Image.new("RGB", (6, 5), COLOUR)
    image = rgb.convert(mode) if mode != "RGBA" else Image.merge("RGBA", (*rgb.split(), Image.new("L", (6, 5), 30)))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# (Pillow mode, format, tolerance against Pillow's own decoding): grey, grey+alpha, RGBA and palette become RGB
FORMATS = [
    ("RGB", "PNG", 0),
    ("L", "PNG", 0),
    ("RGBA", "PNG", 0),
    ("LA", "PNG", 0),
    ("P", "GIF", 0),
    ("RGB", "BMP", 0),
    ("RGB", "JPEG", 3),
    ("L", "JPEG", 3),
    ("RGB", "WEBP", 3),
]


@pytest.mark.parametrize("mode, fmt, tolerance", FORMATS, ids=[f"{m}-{f}" for m, f, _ in FORMATS])
def test_files_decode_to_rgb(tmp_path, mode, fmt, tolerance):
    data = image_bytes(mode, fmt)
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
    x, y = batches(pipeline.make_dataset([str(path)], [1], "files", size=(5, 6), num_classes=2, batch_size=1))
    assert x.shape == (1, 5, 6, 3) and y.tolist() == [[0.0, 1.0]]
    assert np.abs(x[0] - expected).max() <= tolerance, (x[0, 0, 0], expected[0, 0])
    if mode in ("RGB", "RGBA"):
        assert np.abs(x[0] - np.array(COLOUR)).max() <= 2 * tolerance + 1


def test_encoded_bytes_and_resize_keep_the_range(tmp_path):
    gradient = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    buffer = io.BytesIO()
    Image.fromarray(gradient, "L").save(buffer, "PNG")
    x, _ = batches(
        pipeline.make_dataset([buffer.getvalue()] * 2, [0, 1], "encoded", size=(16, 16), num_classes=2, batch_size=2)
    )
    assert x.shape == (2, 16, 16, 3) and x.min() >= 0.0 and x.max() <= 255.0
    assert x[0, 0, 0, 0] < 10 and x[0, 0, -1, 0] > 245  # left dark, right bright: resized, not cropped


def test_unreadable_files_are_skipped(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(image_bytes("RGB", "PNG"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    x, y = batches(
        pipeline.make_dataset([str(bad), str(good)], [0, 1], "files", size=(4, 4), num_classes=2, batch_size=4)
    )
    assert len(x) == 1 and y.argmax(axis=1).tolist() == [1]


def test_augmentation_applies_to_training_batches_only():
    image = np.zeros((1, 6, 6, 3), np.uint8)
    image[:, :, :3] = 255  # left half white
    flip = build_augmentation([{"name": "HorizontalFlip", "p": 1.0}], seed=0)
    train, _ = batches(
        pipeline.make_dataset(
            image, [0], "array", size=(6, 6), num_classes=2, batch_size=1, training=True, augmentation=flip
        )
    )
    plain, _ = batches(
        pipeline.make_dataset(
            image, [0], "array", size=(6, 6), num_classes=2, batch_size=1, training=False, augmentation=flip
        )
    )
    assert np.all(train[0, :, 3:] == 255) and np.all(train[0, :, :3] == 0)
    assert np.all(plain[0, :, :3] == 255) and np.all(plain[0, :, 3:] == 0)
    # strength 0 scales every p to 0: nothing changes
    never = build_augmentation([{"name": "HorizontalFlip", "p": 1.0}], strength=0.0, seed=0)
    same, _ = batches(
        pipeline.make_dataset(
            image, [0], "array", size=(6, 6), num_classes=2, batch_size=1, training=True, augmentation=never
        )
    )
    assert np.array_equal(same, plain)


def test_augmentation_errors_name_the_transform():
    with pytest.raises(UserError, match="augmentation.0.name: unknown albumentations transform 'Flipp'"):
        build_augmentation([{"name": "Flipp"}])
    with pytest.raises(UserError, match=r"augmentation.1 \(Affine\): invalid arguments"):
        build_augmentation([{"name": "HorizontalFlip"}, {"name": "Affine", "rotate": "lots"}])
    assert build_augmentation([]) is None


def test_train_batches_change_across_epochs_are_derived_from_the_epoch_val_batches_do_not(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, augmentation=[{"name": "Affine", "rotate": [-30, 30], "p": 1.0}])
    config = load_config(str(card), str(digits_card))
    data = prepare(config, tmp_path / "run")
    train = data.dataset("train", feed_of(config.paper), epochs=(0, 2))
    both = batches(train)
    count = len(data.indices("train"))
    first, second = (both[0][:count], both[1][:count]), (both[0][count:], both[1][count:])
    assert first[0].shape == second[0].shape == (count, 16, 16, 3)
    again = batches(
        data.dataset("train", feed_of(config.paper), epochs=(1, 2))
    )  # epoch 1 alone, as a resumed run starts it
    assert np.array_equal(again[0], second[0]) and np.array_equal(again[1], second[1])
    # same images, reshuffled and re-augmented: even sorted, the pixels differ
    assert not np.array_equal(
        np.sort(first[0].reshape(len(first[0]), -1).sum(1)), np.sort(second[0].reshape(len(second[0]), -1).sum(1))
    )
    assert np.array_equal(np.sort(first[1].argmax(1)), np.sort(second[1].argmax(1)))
    val = data.dataset("val", feed_of(config.paper))
    (x1, y1), (x2, y2) = batches(val), batches(val)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(y1.argmax(1), data.labels("val"))


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 5, 5, 3), dtype=np.uint8)
    stats = pipeline.channel_stats(images, "array", (5, 5))
    pixels = images.astype(np.float64)
    assert np.allclose(stats["mean"], pixels.mean(axis=(0, 1, 2)))
    assert np.allclose(stats["variance"], pixels.var(axis=(0, 1, 2)))
    assert np.allclose(stats["mean_image"], pixels.mean(axis=0))


def test_disk_cache(tmp_path):
    images = np.full((3, 4, 4, 1), 9, np.uint8)
    prefix = tmp_path / "cache" / "train"
    prefix.parent.mkdir()
    for _ in range(2):
        x, _ = batches(
            pipeline.make_dataset(
                images, [0, 1, 0], "array", size=(4, 4), num_classes=2, batch_size=2, cache=str(prefix)
            )
        )
        assert np.all(x == 9.0)
    assert any(p.name.startswith("train") for p in prefix.parent.iterdir())


def test_a_folder_of_grey_jpegs_end_to_end(tmp_path, image_folder):
    image_folder(tmp_path / "data", {"a": 10, "b": 10, "c": 10}, size=(20, 14), mode="L", fmt="jpg")
    card = write_card(
        tmp_path / "grey.yaml", {"adapter": "folder", "options": {"path": "data"}, "split": {"val": 0.2, "test": 0.2}}
    )
    config = load_config(str(write_tiny_paper_card(tmp_path)), str(card))
    data = prepare(config, tmp_path / "run")
    assert data.class_names == ["a", "b", "c"] and data.counts()["test"] == {"a": 2, "b": 2, "c": 2}
    for subset in ("train", "val", "test"):
        x, y = batches(data.dataset(subset, feed_of(config.paper)))
        assert x.shape == (len(data.indices(subset)), 16, 16, 3) and y.shape == (len(x), 3)
        assert np.array_equal(x[..., 0], x[..., 2]) and 0 <= x.min() and x.max() <= 255
