"""The search in TensorBoard's HParams dashboard, read back with TensorBoard's own reader."""

import numpy as np
import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util.tensor_util import make_ndarray

from project.tune.hparams_log import write_hparams

SPACE = {
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-1, "sampling": "log"},
    "batch_size": {"type": "choice", "choices": [16, 32]},
}


def _table():
    return pd.DataFrame(
        {
            "trial_id": ["00", "01", "00"],
            "stage": ["coarse", "coarse", "fine"],
            "learning_rate": [1e-3, 5e-2, 2e-3],
            "batch_size": [16, 32, 16],
            "best_val_accuracy": [0.8, np.nan, 0.9],
            "epochs_run": [3, 1, 6],
            "status": ["completed", "exploded", "completed"],
        }
    )


def _plugin_data(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }, events


def test_every_trial_is_a_run_with_its_values_and_objective(tmp_path):
    out = write_hparams(tmp_path, _table(), SPACE, "val_accuracy")
    experiment, _ = _plugin_data(out)
    config = next(iter(experiment.values())).experiment
    assert {h.name for h in config.hparam_infos} == {"learning_rate", "batch_size", "stage", "status"}
    assert [m.name.tag for m in config.metric_infos] == ["best_val_accuracy"]
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["coarse-00", "coarse-01", "fine-00"]
    data, events = _plugin_data(out / "fine-00")
    session = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    assert session.hparams["learning_rate"].number_value == 2e-3
    assert session.hparams["stage"].string_value == "fine"
    score = events.Tensors("best_val_accuracy")[0]
    assert score.step == 6 and np.isclose(float(make_ndarray(score.tensor_proto)), 0.9)
    # an exploded trial keeps its values but has no objective
    _, exploded = _plugin_data(out / "coarse-01")
    assert "best_val_accuracy" not in exploded.Tags()["tensors"]


def test_rewriting_replaces_the_experiment(tmp_path):
    write_hparams(tmp_path, _table(), SPACE, "val_accuracy")
    out = write_hparams(tmp_path, _table().iloc[:1], SPACE, "val_accuracy")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["coarse-00"]
    assert not (tmp_path / ".hparams.tmp").exists()
