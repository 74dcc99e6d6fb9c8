"""The search space from a card and the coarse -> fine math, on hand-made values (no TensorFlow)."""

import math

import pytest

from project.config.cards import load_config
from project.errors import UserError
from project.tune.search_space import card_space, card_values, edge_warnings, narrow, position

SPACE = {
    "learning_rate": {"min": 1e-5, "max": 1e-1, "sampling": "log"},
    "dropout": {"min": 0.0, "max": 0.5},
    "batch_size": {"choices": [16, 32, 64]},
    "optimizer": {"choices": ["adam", "nesterov", "rmsprop"]},
    "head_units": {"min": 16, "max": 256, "step": 16},
    "unfreeze": {"choices": [0, 20, "all"]},
}


def card(tmp_path, tiny_paper_card, digits_card, space=None, **search):
    section = {
        "coarse": {"trials": 4, "epochs": 2},
        "fine": {"trials": 2, "epochs": 3},
        "space": SPACE if space is None else space,
        **search,
    }
    return load_config(str(tiny_paper_card(tmp_path / "cards", search=section)), str(digits_card))


def test_space_from_a_card_keeps_sampling_ranges_and_choices(tmp_path, tiny_paper_card, digits_card):
    space = card_space(card(tmp_path, tiny_paper_card, digits_card).paper.search)
    assert space["learning_rate"] == {"type": "float", "min": 1e-5, "max": 1e-1, "sampling": "log", "step": None}
    assert space["dropout"] == {"type": "float", "min": 0.0, "max": 0.5, "sampling": "linear", "step": None}
    assert space["head_units"] == {"type": "int", "min": 16, "max": 256, "sampling": "linear", "step": 16}
    assert space["batch_size"] == {"type": "choice", "choices": [16, 32, 64], "text": False}
    assert space["optimizer"]["choices"] == ["adam", "nesterov", "rmsprop"]
    # Keras Tuner's Choice holds one type: mixed choices travel as text and come back as they were
    assert space["unfreeze"] == {"type": "choice", "choices": ["0", "20", "all"], "text": True}
    values = card_values(space, {"unfreeze": "20", "head_units": 64, "optimizer": "adam"}, hidden_layers=2)
    assert values == {"training.stages.-1.unfreeze": 20, "model.head.hidden": [64, 64], "training.optimizer": "adam"}
    assert card_values(space, {"head_units": 32}, hidden_layers=0) == {"model.head.hidden": [32]}


@pytest.mark.parametrize(
    "space, key, words",
    [
        ({}, "search.space", "empty"),
        ({"learning_rate": {"min": 0.1, "max": 0.01}}, "search.space.learning_rate", "must be below max"),
        (
            {"learning_rate": {"min": 0.0, "max": 0.1, "sampling": "log"}},
            "search.space.learning_rate",
            "log sampling needs min > 0",
        ),
        ({"learnig_rate": {"min": 0.001, "max": 0.1}}, "search.space", "unknown hyperparameter learnig_rate"),
        ({"optimizer": {"choices": ["adam"]}}, "search.space.optimizer", "at least 2 values"),
    ],
)
def test_bad_search_space_names_the_card_key(tmp_path, tiny_paper_card, digits_card, space, key, words):
    with pytest.raises(UserError) as error:
        card(tmp_path, tiny_paper_card, digits_card, space=space)
    assert f"{key}:" in str(error.value) and words in str(error.value)


@pytest.mark.parametrize(
    "space, key, words",
    [
        ({"optimizer": {"min": 1, "max": 3}}, "search.space.optimizer", "give choices"),
        ({"batch_size": {"min": 16.5, "max": 64}}, "search.space.batch_size", "whole numbers"),
    ],
)
def test_ranges_a_hyperparameter_cannot_take_name_the_card_key(
    tmp_path, tiny_paper_card, digits_card, space, key, words
):
    with pytest.raises(UserError) as error:
        card_space(card(tmp_path, tiny_paper_card, digits_card, space=space).paper.search)
    assert f"{key}:" in str(error.value) and words in str(error.value)


def test_the_shared_check_sets_every_end_on_the_card_mixed_choices_included(tmp_path, tiny_paper_card, digits_card):
    from project.tune.search_check import check_search

    _, space = check_search(card(tmp_path, tiny_paper_card, digits_card))  # unfreeze: [0, 20, "all"]
    assert space["unfreeze"]["text"]
    config = card(tmp_path, tiny_paper_card, digits_card, space={"unfreeze": {"choices": [-1, "all"]}})
    with pytest.raises(UserError) as error:
        check_search(config)
    assert str(error.value).startswith(f"{config.paper_file}: search.space.unfreeze: -1 is not a valid training.stages")
    assert "unfreeze must be >= 0" in str(error.value)
    plain = load_config(str(tiny_paper_card(tmp_path / "plain")), str(digits_card))  # no search section
    assert check_search(plain, required=False) == (None, {})
    with pytest.raises(UserError, match="the paper card has no search section"):
        check_search(plain)


LR = {"type": "float", "min": 1e-5, "max": 1e-1, "sampling": "log", "step": None}
DROPOUT = {"type": "float", "min": 0.0, "max": 0.5, "sampling": "linear", "step": None}
UNITS = {"type": "int", "min": 16, "max": 256, "sampling": "linear", "step": 16}
OPT = {"type": "choice", "choices": ["adam", "nesterov", "rmsprop"], "text": False}


def test_fine_ranges_are_the_top_k_span_widened_in_log_space():
    fine = narrow({"learning_rate": LR}, [{"learning_rate": 1e-3}, {"learning_rate": 1e-2}])
    # log10 range is 4 decades: 10% of it (0.4 decade) on each side of [1e-3, 1e-2]
    assert math.log10(fine["learning_rate"]["min"]) == pytest.approx(-3.4)
    assert math.log10(fine["learning_rate"]["max"]) == pytest.approx(-1.6)
    assert fine["learning_rate"]["sampling"] == "log"


def test_fine_ranges_are_linear_for_linear_params_and_clipped_to_the_card_range():
    fine = narrow(
        {"dropout": DROPOUT, "learning_rate": LR},
        [{"dropout": 0.02, "learning_rate": 0.09}, {"dropout": 0.2, "learning_rate": 0.05}],
    )
    assert fine["dropout"]["min"] == pytest.approx(0.0)  # 0.02 - 0.05 clipped at the card's 0
    assert fine["dropout"]["max"] == pytest.approx(0.25)  # 0.2 + 10% of 0.5
    assert fine["learning_rate"]["max"] == pytest.approx(0.1)  # clipped at the card's max
    assert math.log10(fine["learning_rate"]["min"]) == pytest.approx(math.log10(0.05) - 0.4)


def test_fine_integer_ranges_stay_on_the_card_grid():
    fine = narrow({"head_units": UNITS}, [{"head_units": 64}, {"head_units": 96}])
    assert fine["head_units"] == {**UNITS, "min": 32, "max": 128}  # 64-24 -> 32, 96+24 -> 128


def test_choices_are_restricted_to_the_top_k_and_one_left_is_fixed():
    two = narrow({"optimizer": OPT}, [{"optimizer": "rmsprop"}, {"optimizer": "adam"}, {"optimizer": "rmsprop"}])
    assert two["optimizer"] == {**OPT, "choices": ["adam", "rmsprop"]}
    one = narrow({"optimizer": OPT}, [{"optimizer": "nesterov"}])
    assert one["optimizer"] == {"type": "fixed", "value": "nesterov", "text": False}


def test_no_completed_trial_leaves_nothing_to_narrow():
    with pytest.raises(UserError, match="no coarse trial completed"):
        narrow({"optimizer": OPT}, [])


def test_edge_of_range_warning_at_the_edges_and_not_in_the_middle():
    space = {"learning_rate": LR, "dropout": DROPOUT}
    upper = edge_warnings(space, {"learning_rate": 9.5e-2, "dropout": 0.25})
    assert upper == [
        "best learning_rate 0.095 is at the upper edge of [1e-05, 0.1] (log scale): widen the range (search.space.learning_rate)"
    ]
    lower = edge_warnings(space, {"learning_rate": 1e-3, "dropout": 0.01})
    assert len(lower) == 1 and "best dropout 0.01 is at the lower edge of [0, 0.5]" in lower[0]
    assert edge_warnings(space, {"learning_rate": 1e-3, "dropout": 0.25}) == []
    # log space: 3e-5 is 12% of the way up 4 decades (not an edge); linearly it would be 0.02%
    assert position(LR, 3e-5) == pytest.approx(math.log10(3) / 4)
    assert edge_warnings(space, {"learning_rate": 3e-5}) == []
    assert edge_warnings(space, {"learning_rate": 2e-5}) != []
