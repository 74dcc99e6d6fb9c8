"""`make list`, `make new-paper`, `make new-dataset`, `make weights`, `make download`.

The commands write into folders given as arguments (default: project/papers and datasets/); the
tests point them at tmp_path and only read the real card folders.
"""

import subprocess
from argparse import Namespace

import numpy as np
import pytest
import yaml
from conftest import OFFLINE, ROOT, make_image_folder, write_card, write_tiny_paper_card
from PIL import Image

from project.commands import library, new_dataset, weights
from project.commands.cli import main
from project.config import cards
from project.config.schema import Dataset, Paper
from project.errors import UserError

# The scratch card made tiny: one block of 8 filters at 16x16, one epoch.
TINY = [
    "model.input_size=16",
    "model.scratch.blocks=[8]",
    "model.head.hidden=[16]",
    "training.batch_size=8",
    "training.stages=[{name: scratch, epochs: 1}]",
    "training.early_stopping=null",
]


def paper_args(name, from_card=None):
    return Namespace(name=name, from_card=from_card)


def dataset_args(name, path, adapter="folder", overrides=()):
    return Namespace(name=name, path=None if path is None else str(path), adapter=adapter, overrides=list(overrides))


def folder_with_problems(root):
    """3 classes x 12 images of 16x16, plus a broken file, an empty class folder, a text file in a
    class folder (skipped) and a README beside the class folders (not data: not mentioned)."""
    make_image_folder(root, classes={"red": 12, "green": 12, "blue": 12}, size=(16, 16))
    (root / "green" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "empty").mkdir()
    (root / "green" / "notes.txt").write_text("labels by hand")
    (root / "README.txt").write_text("where the images come from")
    return root


# ------------------------------------------------------------------ list


def test_list_shows_every_card(capsys):
    library.list_cli(Namespace())
    out = capsys.readouterr().out
    assert "Paper cards" in out and "Dataset cards" in out
    for name in cards.available(cards.PAPERS_DIR) + cards.available(cards.DATASETS_DIR):
        assert f"\n{name} " in out, f"{name} missing from `make list`"
    kermany = next(line for line in out.splitlines() if line.startswith("kermany2018 "))
    assert "InceptionV3" in kermany and "96.6% accuracy" in kermany and "2018" in kermany
    digits = next(line for line in out.splitlines() if line.startswith("digits "))
    assert "yes" in digits and " 10 " in digits


def test_list_marks_invalid_cards_and_missing_data(tmp_path, capsys):
    papers, datasets = tmp_path / "papers", tmp_path / "datasets"
    write_tiny_paper_card(papers, "good")
    write_tiny_paper_card(papers, "typo", modle={})
    make_image_folder(datasets / "here", classes={"a": 2, "b": 2})
    write_card(datasets / "present.yaml", {"adapter": "folder", "options": {"path": "here"}, "num_classes": 2})
    write_card(datasets / "absent.yaml", {"adapter": "folder", "options": {"path": "not_downloaded"}})
    library.list_cli(Namespace(), papers, datasets)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()}
    assert "INVALID" in lines["typo"] and "modle" in lines["typo"]
    assert "Author: A tiny test CNN" in lines["good"] and "scratch" in lines["good"] and "90% accuracy" in lines["good"]
    assert "yes" in lines["present"] and " 2 " in lines["present"]
    assert "no: expected at" in lines["absent"] and "not_downloaded" in lines["absent"]


# ------------------------------------------------------------------ new-paper


def test_new_paper_writes_a_commented_card_with_everything_assumed(tmp_path, capsys):
    library.new_paper_cli(paper_args("smith2021"), tmp_path)
    path = tmp_path / "smith2021.yaml"
    text = path.read_text()
    paper = cards.validate(Paper, yaml.safe_load(text), path)
    assert "wrote" in capsys.readouterr().out
    assert paper.citation.title.startswith("TODO") and paper.reported == []
    assert set(library.RECIPE_KEYS) <= set(paper.assumed)
    assert len([line for line in text.splitlines() if "#" in line]) >= 60, "every field commented"
    for key in ("backbone:", "input_size:", "stages:", "augmentation:", "assumed:", "search:"):
        line = next(i for i, line in enumerate(text.splitlines()) if line.strip().startswith(key))
        assert "#" in text.splitlines()[line] or text.splitlines()[line - 1].strip().startswith("#"), (
            f"{key} uncommented"
        )
    assert len(paper.training.stages) == 2 and paper.training.stages[0].unfreeze == 0


def test_new_paper_from_a_card_keeps_its_recipe_and_marks_it_assumed(tmp_path):
    library.new_paper_cli(paper_args("mine", "kermany2018"), tmp_path)
    text = (tmp_path / "mine.yaml").read_text()
    new = cards.validate(Paper, yaml.safe_load(text), "mine")
    source = cards.validate(Paper, cards.read_yaml(cards.PAPERS_DIR / "kermany2018.yaml"), "kermany2018")
    assert new.model == source.model and new.training == source.training and new.augmentation == source.augmentation
    assert new.search.space.keys() == source.search.space.keys()
    assert new.citation.title.startswith("TODO") and new.reported == [] and new.caveats == []
    assert new.target_accuracy == Paper.model_fields["target_accuracy"].default != source.target_accuracy
    assert "the recipe of kermany2018" in text
    assert set(library.RECIPE_KEYS) <= set(new.assumed)


def test_new_paper_from_a_scratch_card_assumes_the_architecture(tmp_path):
    library.new_paper_cli(paper_args("own_cnn", str(cards.PAPERS_DIR / "scratch_cnn.yaml")), tmp_path)
    new = cards.validate(Paper, cards.read_yaml(tmp_path / "own_cnn.yaml"), "own_cnn")
    assert new.model.scratch.blocks == [32, 64, 128, 128] and "model.scratch" in new.assumed


def test_new_paper_refuses_to_overwrite_and_bad_names(tmp_path):
    library.new_paper_cli(paper_args("taken"), tmp_path)
    path = tmp_path / "taken.yaml"
    path.write_text(path.read_text() + "# edited by the team\n")
    with pytest.raises(UserError, match="already exists.*never overwrites"):
        library.new_paper_cli(paper_args("taken", "kermany2018"), tmp_path)
    assert path.read_text().endswith("# edited by the team\n")
    for bad in ("", "two__parts", "x.yaml", "../escape", "white space"):
        with pytest.raises(UserError, match="card name"):
            library.new_paper_cli(paper_args(bad), tmp_path)
    with pytest.raises(UserError, match="no paper card named 'nonexistent'"):
        library.new_paper_cli(paper_args("fine", "nonexistent"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.yaml"]


def test_cli_errors_exit_2_and_write_nothing(capsys):
    before = sorted(cards.PAPERS_DIR.glob("*.yaml")), sorted(cards.DATASETS_DIR.glob("*.yaml"))
    assert main(["new-paper"]) == 2
    assert main(["new-paper", "--name", "kermany2018"]) == 2
    assert main(["new-dataset", "--name", "zz_never_written", "--path", str(ROOT / "no" / "such" / "folder")]) == 2
    err = capsys.readouterr().err
    assert (
        "error: new-paper needs a card name" in err
        and "kermany2018.yaml already exists" in err
        and "does not exist" in err
    )
    assert (sorted(cards.PAPERS_DIR.glob("*.yaml")), sorted(cards.DATASETS_DIR.glob("*.yaml"))) == before


# ------------------------------------------------------------------ new-dataset


def test_new_dataset_scans_the_folder_and_writes_the_card(tmp_path, capsys):
    folder_with_problems(tmp_path / "mydata")
    new_dataset.new_dataset_cli(dataset_args("mydata", tmp_path / "mydata"), tmp_path)
    out = capsys.readouterr().out
    card = cards.validate(Dataset, cards.read_yaml(tmp_path / "mydata.yaml"), "mydata")
    assert card.options == {"path": "mydata"}, "inside the card's folder the path is relative"
    assert (card.num_classes, card.num_images, card.classes) == (3, 36, ["blue", "green", "red"])
    assert card.resolution == "16x16" and "one folder per class" in card.layout
    assert "1 unreadable image" in out and "green/broken.jpg" in out
    assert "without images" in out and "empty/" in out and "1 non-image file(s) skipped: .txt 1" in out
    assert "blue" in out and "12" in out
    with pytest.raises(UserError, match="already exists"):
        new_dataset.new_dataset_cli(dataset_args("mydata", tmp_path / "mydata"), tmp_path)


def test_new_dataset_on_a_presplit_tree_with_a_tiny_val_carves_val_from_train(tmp_path, capsys):
    make_image_folder(
        tmp_path / "xray", classes={"NORMAL": 0, "PNEUMONIA": 0}, presplit={"train": 15, "val": 1, "test": 4}
    )
    (tmp_path / "xray" / "__MACOSX" / "train").mkdir(parents=True)  # unzipped on a Mac: the adapter skips it
    outside = tmp_path / "elsewhere"
    new_dataset.new_dataset_cli(dataset_args("xray", tmp_path / "xray"), outside)
    card = cards.validate(Dataset, cards.read_yaml(outside / "xray.yaml"), "xray")
    assert card.layout.endswith("train/ val/ test/ sub-folders, each with one folder per class")
    assert card.options["path"] == str((tmp_path / "xray").resolve()), "outside the card's folder the path is absolute"
    assert card.split.provided and card.split.val_from_train
    out = capsys.readouterr().out
    assert "train 15, val 1, test 4" in out and "tiny" in out


def test_new_dataset_csv_with_options_from_set(tmp_path):
    images = make_image_folder(tmp_path / "list" / "img", classes={"x": 6, "y": 6})
    rows = [f"img/{p.parent.name}/{p.name}   {1 if p.parent.name == 'x' else 2}" for p in sorted(images.rglob("*.png"))]
    (tmp_path / "list" / "labels.txt").write_text("\n".join(rows) + "\n")
    args = dataset_args("listed", tmp_path / "list" / "labels.txt", "csv", ["sep=whitespace", "options.header=false"])
    new_dataset.new_dataset_cli(args, tmp_path)
    card = cards.validate(Dataset, cards.read_yaml(tmp_path / "listed.yaml"), "listed")
    assert card.options == {"manifest": "list/labels.txt", "sep": "whitespace", "header": False}
    assert card.classes == ["1", "2"] and card.num_images == 12


def test_new_dataset_rejects_what_it_cannot_scan(tmp_path):
    with pytest.raises(UserError, match="needs the data's location"):
        new_dataset.new_dataset_cli(dataset_args("x", None), tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        new_dataset.new_dataset_cli(dataset_args("x", tmp_path / "missing"), tmp_path)
    with pytest.raises(UserError, match="accepted: folder, csv"):
        new_dataset.new_dataset_cli(dataset_args("x", tmp_path, "datasets/mine.py:load"), tmp_path)
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(UserError, match="at least 2"):
        new_dataset.new_dataset_cli(dataset_args("x", tmp_path / "one"), tmp_path)
    assert not list(tmp_path.glob("*.yaml"))


# ------------------------------------------------------------------ new cards train


def test_new_paper_and_new_dataset_cards_train_one_epoch(tmp_path):
    from project.train.training import train_run

    library.new_paper_cli(paper_args("ours", "scratch_cnn"), tmp_path / "papers")
    folder_with_problems(tmp_path / "datasets" / "ourdata")
    new_dataset.new_dataset_cli(dataset_args("ourdata", tmp_path / "datasets" / "ourdata"), tmp_path / "datasets")
    config = cards.load_config(
        str(tmp_path / "papers" / "ours.yaml"),
        str(tmp_path / "datasets" / "ourdata.yaml"),
        TINY + ["model.preprocessing=mean_image"],
    )
    metrics = train_run(config, tmp_path / "runs" / config.run_name, verbose=0)
    assert metrics["num_classes"] == 3 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["stages"][0]["epochs"] == 1
    assert (tmp_path / "runs" / "ours__ourdata" / "baseline" / "COMPLETE").exists()


# ------------------------------------------------------------------ make targets


@pytest.mark.parametrize(
    "variables, expected",
    [
        (["NAME=x", "DATA=/data/here"], '--path "/data/here"'),
        (["NAME=x", "PATH=/data/there"], '--path "/data/there"'),
        (["NAME=x"], '--path ""'),  # never the environment's PATH
        (["NAME=x", "ADAPTER=csv", "DATA=l.csv"], '--adapter csv --path "l.csv"'),
    ],
)
def test_make_new_dataset_passes_data_or_path(variables, expected):
    out = subprocess.run(
        ["make", "-n", "new-dataset", *variables], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if "-m project new-dataset" in line)
    assert '--name "x"' in line and expected in line


def test_make_new_paper_passes_name_and_from():
    out = subprocess.run(
        ["make", "-n", "new-paper", "NAME=y", "FROM=kermany2018"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert '-m project new-paper --name "y" --from kermany2018' in out


# ------------------------------------------------------------------ weights and download


def test_weights_has_nothing_to_fetch_for_scratch_or_random_init(capsys):
    weights.cli(cards.load_config("scratch_cnn", "digits"), Namespace())
    weights.cli(cards.load_config("sandler2018_mobilenetv2", "digits"), Namespace())
    out = capsys.readouterr().out
    assert "from-scratch CNN" in out and "model.weights is none" in out
    with pytest.raises(UserError, match="weights file /no/such.h5 does not exist"):
        weights.cli(cards.load_config("kermany2018", "digits", ["model.weights=/no/such.h5"]), Namespace())


@pytest.mark.slow
def test_weights_offline_names_the_file_and_the_cache(tmp_path, project_env):
    card = write_tiny_paper_card(
        tmp_path,
        "tiny_imagenet",
        model={"backbone": "MobileNetV2", "weights": "imagenet", "input_size": 96, "width": 0.35},
    )
    home = tmp_path / "keras_home"
    result = project_env.run("weights", "--paper", card, env={**OFFLINE, "KERAS_HOME": str(home)}, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in result.stderr
    assert str(home / "models") in result.stderr and "make weights" in result.stderr


def test_download_says_where_to_get_file_datasets(capsys):
    weights.download_cli(cards.load_config("demo", "plantvillage"), Namespace())
    weights.download_cli(cards.load_config("demo", "digits"), Namespace())
    out = capsys.readouterr().out
    assert "plantvillage: the folder adapter reads files you download yourself" in out
    assert "no: expected at" in out and "plantvillage/color" in out and "spMohanty" in out
    assert "digits: bundled with scikit-learn" in out


def test_download_of_a_tfds_card_without_tfds_says_how_to_install_it(monkeypatch):
    import importlib.util

    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError) as error:
        weights.download_cli(cards.load_config("demo", "beans"), Namespace())
    if importlib.util.find_spec("tensorflow_datasets") is None:
        assert "pip install tensorflow-datasets" in str(error.value)
    else:  # installed, but offline: the name and the failure
        assert "'beans' could not be downloaded" in str(error.value)
