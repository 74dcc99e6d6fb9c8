"""Inputs at the edges: grey + alpha arrays, pre-split data without `split: provided`."""

import numpy as np

from project.config.schema import Split
from project.data.pipeline import make_dataset
from project.data.split import make_split


def test_grey_plus_alpha_arrays_become_grey_rgb():
    images = np.zeros((4, 6, 6, 2), dtype=np.uint8)
    images[..., 0] = 200  # grey
    images[..., 1] = 10  # alpha, dropped
    x, y = next(iter(make_dataset(images, [0, 1, 0, 1], "array", size=(6, 6), num_classes=2, batch_size=4)))
    assert x.shape == (4, 6, 6, 3)
    assert np.allclose(x.numpy(), 200.0)


def test_presplit_data_without_provided_is_split_again_with_a_note(capsys):
    labels = np.array([0, 1] * 20)
    presplit = np.array(["train"] * 30 + ["test"] * 10)
    subsets = make_split(labels, Split(val=0.2, test=0.2, seed=0), presplit)
    assert "pre-split" in capsys.readouterr().err  # a warning
    assert sorted(set(subsets)) == ["test", "train", "val"]
    assert not np.array_equal(subsets == "test", presplit == "test"), "the given test subset is not kept"


def test_out_of_memory_names_the_batch_size_and_a_smaller_one():
    import pytest
    import tensorflow as tf

    from project.errors import UserError
    from project.train.training import out_of_memory_advice

    with pytest.raises(UserError) as error:
        with out_of_memory_advice(256):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[256,112,112,96]")
    assert "batch size 256" in str(error.value) and "training.batch_size=128" in str(error.value)
    with out_of_memory_advice(8):
        pass  # nothing else is touched
