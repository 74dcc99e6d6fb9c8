"""Grad-CAM finds where a model looks: models trained on images whose class is carried by one corner
only have heatmaps that peak in that corner (and move when the corner does)."""

import keras
import numpy as np
import pytest

from project.config.schema import Model
from project.errors import UserError
from project.model.classifier import build_model
from project.model.gradcam import feature_layers, gradcam, upsampled

SIZE = 32


def corner_data(corner, n=240, seed=0):
    """Noise everywhere; the class is a bright square (class 1) or a dark one (class 0) in one corner."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(60, 200, (n, SIZE, SIZE, 3)).astype("float32")
    labels = np.arange(n) % 2
    rows, cols = (slice(0, 10), slice(0, 10)) if corner == "top-left" else (slice(-10, None), slice(-10, None))
    images[labels == 1, rows, cols] = 255.0
    images[labels == 0, rows, cols] = 0.0
    return images, labels


def trained(corner, policy="float32"):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        card = Model(
            backbone="scratch",
            weights="none",
            input_size=SIZE,
            preprocessing="none",
            scratch={"blocks": [8, 16], "convs_per_block": 1},
        )
        model, _ = build_model(card, 2)
        images, labels = corner_data(corner)
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        model.fit(images / 1.0, labels, epochs=8, batch_size=32, verbose=0)
        return model, *corner_data(corner, n=40, seed=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def peaks(model, images, labels, layer=None):
    heat = upsampled(gradcam(model, images, labels, layer), (SIZE, SIZE))
    flat = heat.reshape(len(heat), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, (SIZE, SIZE)), axis=1), heat


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_the_heatmap_peaks_where_the_class_is(corner):
    model, images, labels = trained(corner)
    assert (model.predict(images, verbose=0).argmax(axis=1) == labels).mean() >= 0.95
    where, heat = peaks(model, images, labels)
    inside = (where < SIZE // 2).all(axis=1) if corner == "top-left" else (where >= SIZE // 2).all(axis=1)
    assert inside.mean() >= 0.9, where
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_mixed_precision_and_a_named_layer_work():
    model, images, labels = trained("top-left", policy="mixed_float16")
    backbone = model.get_layer("backbone")
    names = feature_layers(backbone)
    heat = gradcam(model, images[:4], labels[:4], names[-1])
    assert heat.shape[0] == 4 and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0)
    with pytest.raises(UserError, match=r"report.gradcam_layer: 'nope' is not a feature map of the backbone; accepted"):
        gradcam(model, images[:1], labels[:1], "nope")


def test_a_saved_model_with_the_templates_own_layers_loads_in_a_fresh_process(tmp_path):
    """The report loads model.keras for Grad-CAM in a process that never built one: HeadDropout
    must be registered by load_model itself."""
    import subprocess
    import sys

    card = Model(backbone="scratch", weights="none", input_size=SIZE, preprocessing="none", head={"dropout": 0.3})
    model, _ = build_model(card, 2)
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    code = "import sys; from project.train.evaluate import load_model; print(load_model(__import__('pathlib').Path(sys.argv[1])).name)"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == model.name


def test_a_1x1_last_feature_map_is_passed_over_for_one_that_can_say_where():
    from project.model.gradcam import MIN_POSITIONS, default_layer

    card = Model(backbone="MobileNetV2", weights="none", input_size=32, width=0.35)
    model, _ = build_model(card, 3)
    backbone = model.get_layer("backbone")
    assert tuple(backbone.output.shape[1:3]) == (1, 1)
    chosen = backbone.get_layer(default_layer(backbone)).output.shape
    assert chosen[1] * chosen[2] >= MIN_POSITIONS
    heat = gradcam(model, np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)), [0, 1])
    assert heat.shape[1] * heat.shape[2] >= MIN_POSITIONS
