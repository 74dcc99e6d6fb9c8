"""Accelerator defaults (mixed precision, XLA, mirrored) and start-up without TensorFlow."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from project.config.cards import load_config
from project.config.schema import Runtime

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "model.backbone=scratch",
    "model.input_size=16",
    "model.scratch.blocks=[16]",
    "model.scratch.convs_per_block=1",
    "model.head.pooling=flatten",
    "training.stages=[{name: train, epochs: 1}]",
    "training.batch_size=64",
    "augmentation=[]",
    "training.early_stopping=null",
]


def test_cpu_defaults_change_nothing():
    from project.train import runtime

    r = Runtime()  # the card's defaults
    settings = runtime.choose(r.mixed_precision, r.jit_compile, r.distribution, r.deterministic)
    assert settings == {
        "precision": "float32",
        "jit_compile": False,
        "distribution": "none",
        "device": "CPU",
        "replicas": 1,
        "deterministic": True,
    }


def test_mixed_precision_policy_applied_with_float32_output():
    import keras

    from project.model.classifier import build_model
    from project.train import runtime

    config = load_config("demo", "digits", TINY)
    try:
        settings, _ = runtime.apply(mixed_precision="mixed_bfloat16", jit_compile=True)
        model, _ = build_model(config.paper.model, 10, {"mean": [0.0] * 3, "variance": [1.0] * 3, "mean_image": None})
        conv = model.get_layer("backbone").get_layer("block1_conv1")
        assert settings["precision"] == "mixed_bfloat16" and settings["jit_compile"] is True
        assert conv.dtype_policy.name == "mixed_bfloat16" and conv.compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_float32_request_keeps_float32_layers():
    import keras

    from project.model.classifier import build_model
    from project.train import runtime

    config = load_config("demo", "digits", TINY)
    runtime.apply(mixed_precision="float32")
    model, _ = build_model(config.paper.model, 10, {"mean": [0.0] * 3, "variance": [1.0] * 3, "mean_image": None})
    assert model.get_layer("backbone").get_layer("block1_conv1").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus_matches_single_device(tmp_path):
    """Two logical CPU devices in a fresh process: same toy problem, both runs learn it."""
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from project.config.cards import load_config
        from project.train.training import train_run
        out = {{}}
        for name, extra in (("single", []), ("mirrored", ["runtime.distribution=mirrored"])):
            config = load_config("demo", "digits", {TINY!r} + ["training.stages=[{{name: train, epochs: 4}}]",
                                 "training.learning_rate=0.003"] + extra)
            metrics = train_run(config, sys.argv[1], name, verbose=0)
            out[name] = (metrics["test_accuracy"], metrics["runtime"]["replicas"])
        print(json.dumps(out))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    (single, one), (mirrored, two) = out["single"], out["mirrored"]
    assert (one, two) == (1, 2)
    assert single > 0.5 and mirrored > 0.5, out
    assert abs(single - mirrored) < 0.2, out


def test_help_and_validation_work_without_tensorflow(tmp_path):
    """A fake `tensorflow` that fails to import: --help and validate must not need it."""
    blocker = tmp_path / "tensorflow"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('tensorflow is hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    for args in (["--help"], ["train", "--help"], ["validate"]):
        result = subprocess.run(
            [sys.executable, "-m", "project", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (args, result.stderr[-2000:])
    bad = subprocess.run(
        [sys.executable, "-m", "project", "validate", "--set", "training.optimizr=adam"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "training.optimizr" in bad.stderr and "Traceback" not in bad.stderr


def test_runtime_choice_is_validated():
    from project.errors import UserError

    with pytest.raises(UserError) as error:
        load_config("demo", "digits", ["runtime.mixed_precision=fp8"])
    assert "runtime.mixed_precision" in str(error.value) and "mixed_bfloat16" in str(error.value)
