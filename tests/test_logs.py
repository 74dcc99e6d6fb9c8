"""The project logger (plain messages on stdout, --quiet, -v, silence()) and TensorFlow's known
start-up noise dropped from file descriptor 2 while every other line gets through."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, write_tiny_paper_card

from project import logs

# The lines as TensorFlow 2.21 and absl write them on this CPU machine
REAL_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796128555.615043   19682 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796128555.616200   19682 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796128558.749777   19682 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796128574.719764   19682 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset; signature=input_dataset:variant> NodeDef: "
    "{{node ParallelMapDatasetV2/_6}}",
]


@pytest.fixture
def level():
    before = logs.LOGGER.level
    yield
    logs.LOGGER.setLevel(before)


def test_messages_go_to_stdout_warnings_to_stderr_and_silence_keeps_warnings(capsys, level):
    log = logs.get("project.somewhere")
    log.info("hello")
    log.debug("hidden")
    assert capsys.readouterr() == ("hello\n", "")
    logs.silence()
    log.info("not shown")
    log.warning("careful")
    assert capsys.readouterr() == ("", "careful\n")


def test_quiet_and_verbose_last_one_command(capsys, level):
    log = logs.get("project.somewhere")
    with logs.at_level(quiet=True):
        log.info("not shown")
    with logs.at_level(verbose=True):
        log.debug("details")
    log.info("back")
    assert capsys.readouterr().out == "details\nback\n"


def run_python(code, text=True, **env):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=text,
        timeout=300,
    )


def test_the_filter_drops_the_listed_lines_only(tmp_path):
    """Written to fd 2 as TensorFlow's C++ code writes them, with a real line and a progress bar between."""
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(REAL_NOISE))
    result = run_python(
        f"""
        import os, sys
        from project import logs
        with logs.filtered_stderr():
            for line in open({str(lines)!r}).read().splitlines():
                os.write(2, (line + "\\n").encode())
                os.write(2, b"E0000 real.cc:1] a real error\\n")
            sys.stderr.write("\\r 1/2 bar\\r 2/2 bar\\n")
            os.write(2, b"no newline at the end")
        sys.stderr.write("|after")
        """,
        text=False,  # keep the \r
    )
    assert result.returncode == 0, result.stderr
    expected = (
        b"E0000 real.cc:1] a real error\n" * len(REAL_NOISE) + b"\r 1/2 bar\r 2/2 bar\nno newline at the end|after"
    )
    assert result.stderr == expected


def test_tensorflow_and_keras_noise_is_dropped_and_real_errors_show():
    """Real TensorFlow with every C++ log level on: its start-up lines and Keras' ran-out-of-data warning
    are dropped; a line TensorFlow's C++ code writes (tf.print) and a Python traceback get through."""
    result = run_python(
        """
        import sys
        from project import logs
        with logs.filtered_stderr():
            logs.ignore_python_noise()
            import keras
            import tensorflow as tf
            x = tf.data.Dataset.from_tensor_slices((tf.zeros((4, 2)), tf.zeros((4, 1)))).batch(2)
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            model.compile("sgd", "mse")
            model.fit(x.map(lambda a, b: (a, b), num_parallel_calls=2), steps_per_epoch=5, epochs=1, verbose=0)
            tf.print("E0000 a real TensorFlow error line", output_stream=sys.stderr)
            raise RuntimeError("a real Python error")
        """,
        TF_CPP_MIN_LOG_LEVEL="0",
    )
    assert result.returncode == 1
    for text in (*logs.NOISE, *logs.PYTHON_NOISE):
        assert text not in result.stderr, result.stderr
    assert "E0000 a real TensorFlow error line" in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: a real Python error")


@pytest.mark.slow
def test_a_real_command_prints_none_of_the_listed_lines(project_env, tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path)
    result = project_env.run("train", "--paper", card, "--dataset", digits_card, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr
    for text in (*logs.NOISE, *logs.PYTHON_NOISE):
        assert text not in result.stderr and text not in result.stdout, result.stderr
    broken = project_env.run(
        "train", "--paper", card, "--dataset", digits_card, "--set", "training.stages.0.unfreeze=no_such_layer"
    )
    assert broken.returncode == 2
    assert (
        broken.stderr.strip().splitlines()[-1].startswith("error: training.stages.unfreeze: no layer 'no_such_layer'")
    )
    for text in logs.NOISE:
        assert text not in broken.stderr, broken.stderr
