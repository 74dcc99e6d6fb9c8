"""Cards -> config: validation errors name the file and the key, overrides are typed by the schema."""

import pytest
import yaml
from conftest import TINY_PAPER, write_card, write_tiny_paper_card

from project.config.backbone_table import BACKBONES
from project.config.cards import load_config, resolved_yaml, with_values
from project.config.schema import Config
from project.errors import UserError


def error_of(paper, dataset, overrides=()):
    with pytest.raises(UserError) as caught:
        load_config(str(paper), str(dataset), overrides)
    return str(caught.value)


def test_the_shipped_cards_validate():
    config = load_config("demo", "digits")
    assert config.run_name == "demo__digits"
    assert config.paper.model.backbone in BACKBONES
    assert config.dataset.adapter == "digits"


def test_tiny_card_loads_with_defaults_filled(tmp_path, digits_card):
    config = load_config(str(write_tiny_paper_card(tmp_path)), str(digits_card))
    assert config.paper_name == "tiny" and config.dataset_name == "digits"
    assert config.paper.model.input_size == [16, 16]
    # a scratch CNN has no backbone preprocessing: it subtracts the training mean instead
    assert config.paper.model.preprocessing == "per_channel_mean"
    assert config.paper.training.stages[0].epochs == 1


def test_empty_input_size_takes_the_backbone_default(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, model={"backbone": "InceptionV3", "input_size": []})
    assert load_config(str(card), str(digits_card)).paper.model.input_size == [299, 299]


def test_unknown_top_level_key_lists_the_allowed_keys(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, trainig={"batch_size": 8})
    message = error_of(card, digits_card)
    assert str(card) in message and "trainig: unknown key" in message
    assert "allowed here:" in message and "training" in message and "augmentation" in message


def test_unknown_nested_key_names_the_dotted_path(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, **{"model.head.dropot": 0.5}), digits_card)
    assert (
        "model.head.dropot: unknown key; allowed here: activation, dropout, hidden, normalization, pooling" in message
    )


def test_wrong_type_names_the_key_and_the_value(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, **{"training.batch_size": "big"}), digits_card)
    assert "training.batch_size" in message and "integer" in message and "'big'" in message


def test_out_of_range_names_the_key_and_the_bound(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, **{"model.head.dropout": 1.5}), digits_card)
    assert "model.head.dropout" in message and "less than 1" in message


def test_wrong_choice_lists_the_accepted_values(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, **{"training.optimizer": "adamax"}), digits_card)
    assert "training.optimizer" in message
    for name in ("sgd", "nesterov", "adamw", "rmsprop"):
        assert name in message


def test_unknown_backbone_names_the_key_and_lists_the_names(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, model={"backbone": "ResNet51"}), digits_card)
    assert "model.backbone" in message and "ResNet51" in message
    for name in ("ResNet50", "MobileNetV2", "InceptionV3", "EfficientNetB0", "scratch"):
        assert name in message


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_input_below_the_minimum_names_the_minimum(tmp_path, digits_card, name):
    minimum = BACKBONES[name]["min_size"]
    ok = write_tiny_paper_card(tmp_path, "ok", model={"backbone": name, "input_size": minimum})
    assert load_config(str(ok), str(digits_card)).paper.model.input_size == [minimum, minimum]
    small = write_tiny_paper_card(tmp_path, "small", model={"backbone": name, "input_size": [minimum, minimum - 1]})
    message = error_of(small, digits_card)
    assert "input_size" in message and f"minimum of {name}" in message and f"{minimum}x{minimum}" in message


def test_several_errors_one_line_each(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, **{"training.batch_size": 0, "model.head.pooling": "mean"})
    lines = error_of(card, digits_card).splitlines()
    assert len(lines) == 2
    assert any("training.batch_size" in line for line in lines) and any("model.head.pooling" in line for line in lines)


def test_assumed_must_name_existing_keys(tmp_path, digits_card):
    message = error_of(write_tiny_paper_card(tmp_path, assumed=["training.batch_size", "training.epoch"]), digits_card)
    assert "'training.epoch' is not a key" in message


def test_search_space_is_validated(tmp_path, digits_card):
    bad_name = write_tiny_paper_card(tmp_path, "a", search={"space": {"learnig_rate": {"min": 0.001, "max": 0.1}}})
    assert "unknown hyperparameter learnig_rate" in error_of(bad_name, digits_card)
    bad_range = write_tiny_paper_card(tmp_path, "b", search={"space": {"learning_rate": {"min": 0.1, "max": 0.01}}})
    assert "search.space.learning_rate" in error_of(bad_range, digits_card)
    good = write_tiny_paper_card(
        tmp_path, "c", search={"space": {"learning_rate": {"min": 1e-4, "max": 0.1, "sampling": "log"}}}
    )
    assert load_config(str(good), str(digits_card)).paper.search.space["learning_rate"].sampling == "log"


def test_invalid_yaml_names_the_file_and_line(tmp_path, digits_card):
    card = tmp_path / "broken.yaml"
    card.write_text("citation:\n  title: x\n model: [\n")
    message = error_of(card, digits_card)
    assert str(card) in message and "line" in message and "not valid YAML" in message


def test_missing_card_lists_the_available_ones(digits_card):
    message = error_of("no_such_paper", digits_card)
    assert "no paper card named 'no_such_paper'" in message and "demo" in message
    message = error_of("demo", "no_such_data")
    assert "no dataset card named 'no_such_data'" in message and "digits" in message


def test_missing_card_path_is_named(tmp_path, digits_card):
    assert f"{tmp_path / 'gone.yaml'} does not exist" in error_of(tmp_path / "gone.yaml", digits_card)


def test_overrides_are_typed_by_the_schema(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path)
    config = load_config(
        str(card),
        str(digits_card),
        [
            "training.learning_rate=0.05",
            "training.stages.0.epochs=3",
            "model.backbone=ResNet50",
            "model.input_size=32",
            "dataset.split.seed=5",
            "paper.training.batch_size=8",
        ],
    )
    paper = config.paper
    assert paper.training.learning_rate == 0.05 and paper.training.stages[0].epochs == 3
    assert paper.model.backbone == "ResNet50" and paper.model.input_size == [32, 32]
    assert paper.training.batch_size == 8 and config.dataset.split.seed == 5
    assert config.overrides[0] == "training.learning_rate=0.05"


def test_override_of_an_unknown_key_is_named(tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path)
    message = error_of(card, digits_card, ["trainig.learning_rate=0.1"])
    assert "--set trainig.learning_rate: unknown key 'trainig'" in message and "training" in message
    message = error_of(card, digits_card, ["training.learnig_rate=0.1"])
    assert "(after --set)" in message and "training.learnig_rate: unknown key" in message and "learning_rate" in message
    message = error_of(card, digits_card, ["training.batch_size=many"])
    assert "training.batch_size" in message and "'many'" in message
    assert "KEY=VALUE" in error_of(card, digits_card, ["training.learning_rate"])
    assert "not an index" in error_of(card, digits_card, ["training.stages.4.epochs=1"])


def test_dataset_card_errors_name_the_key(tmp_path):
    paper = write_tiny_paper_card(tmp_path)
    unknown = write_card(tmp_path / "d1.yaml", {"adapter": "digits", "option": {}})
    assert "option: unknown key; allowed here:" in error_of(paper, unknown)
    too_big = write_card(tmp_path / "d2.yaml", {"adapter": "digits", "split": {"val": 0.5, "test": 0.45}})
    assert "split" in error_of(paper, too_big) and "< 0.9" in error_of(paper, too_big)
    missing = write_card(tmp_path / "d3.yaml", {"options": {}})
    assert "adapter: Field required" in error_of(paper, missing)


def test_split_provided_shorthand(tmp_path):
    paper = write_tiny_paper_card(tmp_path)
    card = write_card(tmp_path / "d.yaml", {"adapter": "folder", "options": {"path": "x"}, "split": "provided"})
    assert load_config(str(paper), str(card)).dataset.split.provided is True


def test_resolved_yaml_round_trips(tiny_config):
    again = Config.model_validate(yaml.safe_load(resolved_yaml(tiny_config)))
    assert again == tiny_config


def test_with_values_revalidates(tiny_config):
    changed = with_values(tiny_config, {"training.batch_size": 64, "model.head.hidden": [16]})
    assert changed.paper.training.batch_size == 64 and changed.paper.model.head.hidden == [16]
    assert tiny_config.paper.training.batch_size == TINY_PAPER["training"]["batch_size"]
    with pytest.raises(UserError, match="training.batch_size"):
        with_values(tiny_config, {"training.batch_size": -1})


def test_reported_metric_must_be_one_the_template_computes(tmp_path, digits_card):
    entry = {"dataset": "digits", "metric": "top-1 accuracy", "value": 0.9, "where": "Table 1"}
    card = write_tiny_paper_card(tmp_path, reported=[entry])
    message = error_of(card, digits_card)
    assert "reported.0.metric" in message and "'top-1 accuracy'" in message
    for name in ("accuracy", "macro_f1", "balanced_accuracy", "sensitivity", "specificity", "roc_auc", "top5_accuracy"):
        assert f"'{name}'" in message


def test_reported_class_value_and_tolerance_are_checked(tmp_path, digits_card):
    entry = {"dataset": "digits", "value": 0.9, "where": "Table 1"}
    wrong_class = write_tiny_paper_card(tmp_path, "a", reported=[{**entry, "metric": "accuracy", "class_name": "3"}])
    assert "class_name is for sensitivity and specificity only, not accuracy" in error_of(wrong_class, digits_card)
    percent = write_tiny_paper_card(tmp_path, "b", reported=[{**entry, "value": 92.8}])
    assert "reported.0.value" in error_of(percent, digits_card) and "less than or equal to 1" in error_of(
        percent, digits_card
    )
    no_tolerance = write_tiny_paper_card(tmp_path, "c", reported=[{**entry, "tolerance": 0}])
    assert "reported.0.tolerance" in error_of(no_tolerance, digits_card)
    sensitivity = {**entry, "metric": "sensitivity", "class_name": "3", "tolerance": 0.05}
    good = write_tiny_paper_card(tmp_path, "d", reported=[sensitivity])
    reported = load_config(str(good), str(digits_card)).paper.reported[0]
    assert (reported.metric, reported.class_name, reported.tolerance) == ("sensitivity", "3", 0.05)
    assert load_config(str(write_tiny_paper_card(tmp_path, "e")), str(digits_card)).paper.reported[0].tolerance == 0.02
