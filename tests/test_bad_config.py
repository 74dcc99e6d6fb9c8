"""Bad configuration and environment (issue 6 sections 3 and 4): every wrong card value or --set
is one `error: ...` line naming the file and the key (exit 2, no traceback); an unwritable runs/
is a clear error; cards, overrides, saved models and custom adapters are loaded safely."""

import re
from pathlib import Path

import pytest

from project.commands.cli import main

SPACE = "learning_rate: {min: %s, max: %s%s}"


def run(capsys, *argv):
    """(exit status, stderr) of `python -m project ...`, in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "training.batch_size=abc",
            "training.batch_size: Input should be a valid integer, unable to parse string as an integer (got 'abc')",
        ),
        (
            "training.optimizer=adamax",
            "training.optimizer: Input should be 'sgd', 'momentum', 'nesterov', 'adam', 'adamw' or 'rmsprop' (got 'adamax')",
        ),
        ("model.head.activation=swishy", "model.head.activation: Input should be 'relu', 'leaky_relu'"),
        ("model.backbone=ResNet9", "model.backbone: unknown backbone 'ResNet9'; valid names: ConvNeXtSmall"),
        ("model.input_size=4", "input_size [4, 4] is below the minimum of scratch"),
        ("data.drop_duplicates=maybe", "data.drop_duplicates: Input should be a valid boolean"),
        ("training.stages.0.epochs=-1", "training.stages.0.epochs: Input should be greater than or equal to 0"),
        ("dataset.adapter=foo", "adapter: unknown adapter 'foo'; accepted: folder, csv, digits"),
        (
            "training.early_stopping.monitor=val_acc",
            "training.early_stopping.monitor: Input should be 'val_accuracy', 'val_macro_f1'",
        ),
    ],
)
def test_a_bad_override_names_the_file_and_the_key(tmp_path, capsys, tiny_paper_card, digits_card, override, expected):
    paper = tiny_paper_card(tmp_path)
    status, err = run(capsys, "validate", "--paper", paper, "--dataset", digits_card, "--set", override)
    assert status == 2
    [line] = [line for line in err.splitlines() if line]
    card = digits_card if override.startswith("dataset.") else paper
    assert line.startswith(f"error: {card} (after --set): ")
    assert expected in line


@pytest.mark.parametrize(
    "section, expected",
    [
        (
            {"training": {"optimiser": "adam"}},
            "training.optimiser: unknown key; allowed here: batch_size, class_weight",
        ),
        (
            {"model": {"backbone": "MobileNetV2", "input_size": 16}},
            "input_size [16, 16] is below the minimum of MobileNetV2: use at least 32x32",
        ),
        (
            {"search": {"space": {"learning_rate": {"min": 0.1, "max": 0.01}}}},
            "search.space.learning_rate: min (0.1) must be below max (0.01)",
        ),
        (
            {"search": {"space": {"learning_rate": {"min": 0, "max": 0.1, "sampling": "log"}}}},
            "search.space.learning_rate: log sampling needs min > 0, got 0.0",
        ),
        (
            {"search": {"space": {"learning_rat": {"min": 0.1, "max": 1}}}},
            "search.space: unknown hyperparameter learning_rat; searchable: learning_rate",
        ),
    ],
)
def test_a_bad_paper_card_names_the_file_and_the_key(tmp_path, capsys, tiny_paper_card, digits_card, section, expected):
    paper = tiny_paper_card(tmp_path, **section)
    status, err = run(capsys, "validate", "--paper", paper, "--dataset", digits_card)
    assert status == 2
    assert f"error: {paper}: " in err and expected in err


# ------------------------------------------------------------------ one validate(config) for every later check


def test_validate_refuses_a_search_range_that_tune_would_refuse(project_env, tmp_path, tiny_paper_card, digits_card):
    """The schema takes any min < max; the card key the range sets takes dropout < 1 only."""
    search = {"space": {"dropout": {"min": 0, "max": 1.5}}}
    paper = tiny_paper_card(tmp_path, search=search)
    result = project_env.run("validate", "--paper", paper, "--dataset", digits_card, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line == (
        f"error: {paper}: search.space.dropout: 1.5 is not a valid model.head.dropout (accepted: 0 <= value < 1)"
    )


@pytest.mark.parametrize(
    "card, expected",
    [
        (
            {"search": {"space": {"optimizer": {"min": 1, "max": 3}}}},
            "search.space.optimizer: optimizer is categorical: give choices",
        ),
        (
            {"search": {"space": {"head_units": {"min": 16, "max": 64.5}}}},
            "search.space.head_units: head_units takes whole numbers; got min 16, max 64.5",
        ),
        (
            {"search": {"space": {"batch_size": {"choices": [0, 32]}}}},
            "search.space.batch_size: 0 is not a valid training.batch_size (accepted: 1 <= value <= 65536)",
        ),
        (
            {"search": {"space": {"head_activation": {"choices": ["relu", "swishy"]}}}},
            "search.space.head_activation: 'swishy' is not a valid model.head.activation (Input should be 'relu'",
        ),
        (
            {"search": {"objective": "val_auc", "space": {"dropout": {"min": 0, "max": 0.5}}}},
            "search.objective 'val_auc' is not recorded per epoch; accepted: val_accuracy",
        ),
        ({"augmentation": [{"name": "Rotat"}]}, "augmentation.0.name: unknown albumentations transform 'Rotat'"),
        ({"augmentation": [{"name": "Rotate", "limit": "lots"}]}, "augmentation.0 (Rotate): invalid arguments"),
    ],
)
def test_validate_runs_the_checks_of_every_later_stage(tmp_path, capsys, tiny_paper_card, digits_card, card, expected):
    paper = tiny_paper_card(tmp_path, **card)
    status, err = run(capsys, "validate", "--paper", paper, "--dataset", digits_card)
    assert status == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {paper}: ") and expected in line


def test_tune_refuses_with_the_same_check(tmp_path, capsys, tiny_paper_card, digits_card):
    """tune calls the shared check itself too (project.tune.tuning.tune is also a library function)."""
    from project.config.cards import load_config
    from project.errors import UserError
    from project.tune.tuning import tune

    paper = tiny_paper_card(tmp_path, search={"space": {"dropout": {"min": 0, "max": 1.5}}})
    config = load_config(str(paper), str(digits_card))
    with pytest.raises(UserError, match=r"search.space.dropout: 1.5 is not a valid model.head.dropout \(accepted"):
        tune(config, tmp_path / "runs", verbose=0)


def test_the_shipped_paper_cards_pass_validate():
    from project.commands.validate import load
    from project.paths import PAPERS_DIR

    for card in sorted(PAPERS_DIR.glob("*.yaml")):
        assert load(card.stem, "digits").paper_name == card.stem


def test_a_bad_dataset_card_names_the_file_and_the_key(tmp_path, capsys, tiny_paper_card):
    paper = tiny_paper_card(tmp_path)
    dataset = tmp_path / "bad.yaml"
    dataset.write_text("adapter: folders\noptions: {path: data}\nsplit: {val: 0.5, test: 0.5}\n")
    status, err = run(capsys, "validate", "--paper", paper, "--dataset", dataset)
    assert status == 2
    assert f"error: {dataset}: adapter: unknown adapter 'folders'; accepted: folder, csv" in err
    assert f"{dataset}: split: val + test = 1 leaves too little to train on (must be < 0.9)" in err


def test_missing_cards_list_the_available_ones(capsys):
    status, err = run(capsys, "validate", "--paper", "nosuch")
    assert status == 2 and "no paper card named 'nosuch' in " in err and "available: " in err and "demo" in err
    status, err = run(capsys, "validate", "--dataset", "nosuch")
    assert status == 2 and "no dataset card named 'nosuch' in " in err and "digits" in err.split("available: ")[1]


def test_bad_override_syntax_and_unknown_sections(capsys):
    status, err = run(capsys, "validate", "--set", "training.batch_size")
    assert status == 2 and "--set 'training.batch_size': expected KEY=VALUE with a dotted key" in err
    status, err = run(capsys, "validate", "--set", "trainig.batch_size=3")
    assert status == 2 and "--set trainig.batch_size: unknown key 'trainig'; paper card keys: " in err


def test_an_unwritable_runs_folder_is_a_clear_error(tmp_path, capsys, tiny_paper_card, digits_card, image_folder):
    """Root ignores permissions, so runs/ lies under a regular file: it can never be created."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    runs = blocker / "runs"
    paper = tiny_paper_card(tmp_path)
    status, err = run(capsys, "train", "--paper", paper, "--dataset", digits_card, "--runs-dir", runs)
    assert status == 2
    assert f"error: cannot use {runs}/tiny__digits/locks: Not a directory (check --runs-dir" in err
    image_folder(tmp_path / "data", classes={"a": 3, "b": 3})
    dataset = tmp_path / "folder.yaml"
    dataset.write_text("adapter: folder\noptions: {path: data}\n")
    status, err = run(capsys, "check-data", "--paper", paper, "--dataset", dataset, "--runs-dir", runs)
    assert status == 2
    assert f"error: cannot write {runs}/tiny__folder/data_scan.csv: Not a directory" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ safe loading


def test_a_card_with_a_python_tag_is_refused_and_never_run(tmp_path, capsys, digits_card):
    marker = tmp_path / "pwned"
    card = tmp_path / "evil.yaml"
    card.write_text(f'citation: !!python/object/apply:os.system ["touch {marker}"]\n')
    status, err = run(capsys, "validate", "--paper", card, "--dataset", digits_card)
    assert status == 2
    assert f"error: {card}: line 1: YAML tags that build objects are refused" in err
    assert not marker.exists()


def test_an_override_is_data_never_code(tmp_path, capsys, tiny_paper_card, digits_card):
    from project.config.cards import load_config

    marker = tmp_path / "pwned"
    paper = tiny_paper_card(tmp_path)
    code = f"__import__('os').system('touch {marker}')"
    config = load_config(str(paper), str(digits_card), [f"citation.title={code}"])
    assert config.paper.citation.title == code
    status, err = run(
        capsys,
        "validate",
        "--paper",
        paper,
        "--dataset",
        digits_card,
        "--set",
        f"seed=!!python/object/apply:os.system ['touch {marker}']",
    )
    assert status == 2 and "seed: Input should be a valid integer" in err
    assert not marker.exists()


def test_a_custom_adapter_outside_the_repository_is_never_imported(tmp_path, capsys, tiny_paper_card):
    from project.data.adapters import load_sources
    from project.errors import UserError

    marker = tmp_path / "imported"
    adapter = tmp_path / "evil_adapter.py"
    adapter.write_text(f"open({str(marker)!r}, 'w').close()\n\ndef load(base=None, classes=None):\n    return {{}}\n")
    dataset = tmp_path / "custom.yaml"
    dataset.write_text(f"adapter: {adapter}:load\n")
    status, err = run(capsys, "validate", "--paper", tiny_paper_card(tmp_path), "--dataset", dataset)
    assert status == 2
    assert f"error: {dataset}: adapter: custom adapter {adapter} lies outside the repository" in err
    relative = "../" * len(Path(__file__).resolve().parent.parent.parts) + str(adapter).lstrip("/")
    with pytest.raises(UserError, match="lies outside the repository"):
        load_sources(f"{relative}:load", {}, tmp_path)
    assert not marker.exists()


def test_saved_models_load_in_safe_mode_only(tmp_path, tiny_config):
    """The project's loader refuses a model.keras carrying Python code (a Lambda) without running
    it, and loads the template's own models (standard layers only) in the same safe mode."""
    import keras
    import numpy as np

    from project.model.classifier import build_model
    from project.train.evaluate import load_model

    marker = tmp_path / "ran"
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x, path=str(marker): x + len(open(path, "a").name) * 0)(inputs)
    (tmp_path / "evil").mkdir()
    keras.Model(inputs, outputs).save(tmp_path / "evil" / "model.keras")
    marker.unlink()  # building the model ran the lambda once; loading must not
    with pytest.raises(ValueError, match="Lambda.*arbitrary code execution"):
        load_model(tmp_path / "evil")
    assert not marker.exists()

    stats = {"mean": [100.0] * 3, "variance": [900.0] * 3, "mean_image": np.full((16, 16, 3), 100.0).tolist()}
    model, _ = build_model(tiny_config.paper.model, 10, stats)
    (tmp_path / "ours").mkdir()
    model.save(tmp_path / "ours" / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        load_model(tmp_path / "ours").predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )


def test_no_module_loads_models_or_yaml_unsafely():
    """A guard over the source: every Keras model load passes safe_mode=True, YAML is only ever
    read with safe_load, and nothing turns unsafe deserialisation on."""
    root = Path(__file__).resolve().parent.parent / "project"
    for file in root.rglob("*.py"):
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{file.name}:{number}: {line.strip()}"
            if "load_model(" in line and "def load_model" not in line and ("keras" in line or "saving" in line):
                assert "safe_mode=True" in line, where
            assert "safe_mode=False" not in line and "enable_unsafe_deserialization" not in line, where
            assert "yaml.load(" not in line and "yaml.unsafe_load" not in line and "yaml.full_load" not in line, where
            assert not re.search(r"(?<![\w.])(eval|exec)\(", line), where
