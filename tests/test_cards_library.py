"""The shipped paper and dataset cards: each validates, builds its model, says where its numbers
come from, and describes a data layout that the adapters really read."""

import copy
import inspect
import os
import typing

import numpy as np
import pytest
import yaml
from conftest import make_image_folder, write_card

from project.config import cards
from project.config.schema import POOLINGS, Dataset, Paper, Scratch, scratch_sizes
from project.data.adapters import ADAPTERS, load_sources
from project.data.augment import build_augmentation
from project.data.split import make_split
from project.errors import UserError

PAPERS = [
    "kermany2018",
    "tan2019_efficientnet",
    "kornblith2019",
    "rahaman2020_covid",
    "too2019_plantvillage",
    "helber2019_eurosat",
    "sandler2018_mobilenetv2",
    "scratch_cnn",
]
DATASETS = [
    "chest_xray_pneumonia",
    "eurosat_rgb",
    "plantvillage",
    "oxford_pets",
    "oxford_flowers102",
    "cifar10",
    "cifar100",
    "beans",
    "intel_image_classification",
    "digits",
]
# Building InceptionV3, VGG19 (with its 25088x1024 head) and DenseNet121 is slow on two shared cores;
# ResNet50 and MobileNetV2 at 224 are built in the fast suite by helber2019_eurosat (64x64) and others.
HEAVY = {"kermany2018", "rahaman2020_covid", "too2019_plantvillage", "kornblith2019", "sandler2018_mobilenetv2"}
# Options a card needs that its adapter does not offer yet (the card says so; loading it fails loudly).
KNOWN_GAPS = {}


def paper_data(name):
    return cards.read_yaml(cards.PAPERS_DIR / f"{name}.yaml")


def paper(name):
    return cards.validate(Paper, paper_data(name), name)


def dataset(name):
    return cards.validate(Dataset, cards.read_yaml(cards.DATASETS_DIR / f"{name}.yaml"), name)


def test_the_library_ships_the_cards():
    assert set(PAPERS) <= set(cards.available(cards.PAPERS_DIR))
    assert set(DATASETS) <= set(cards.available(cards.DATASETS_DIR))


# ------------------------------------------------------------------ paper cards


@pytest.mark.parametrize("name", PAPERS + ["demo"])
def test_paper_card_validates_and_says_where_its_numbers_come_from(name):
    p = paper(name)
    assert (
        build_augmentation([t.model_dump() for t in p.augmentation], 1.0, source=name) is not None or not p.augmentation
    )
    c = p.citation
    assert c.title and c.authors and c.venue and 2015 <= c.year <= 2022 and c.link.startswith("https://")
    assert not any("TODO" in text for text in (c.title, c.venue, c.link, *c.authors))
    assert p.reported, "a paper card needs the paper's own numbers"
    for r in p.reported:
        assert r.dataset and r.metric and r.where and 0 < r.value <= 1
        assert r.test_size or r.note, f"{name}: {r.dataset}: give test_size, or say in note why it is unknown"
    assert p.assumed, "every card assumes something; list it"
    assert p.caveats and p.summary
    assert p.search is not None and p.search.space


def test_a_card_without_where_or_with_an_unknown_assumed_key_is_rejected():
    data = paper_data("kermany2018")
    broken = copy.deepcopy(data)
    del broken["reported"][0]["where"]
    with pytest.raises(UserError, match=r"reported\.0\.where"):
        cards.validate(Paper, broken, "kermany2018 copy")
    broken = copy.deepcopy(data)
    broken["assumed"].append("training.epochs_per_stage")
    with pytest.raises(UserError, match="training.epochs_per_stage"):
        cards.validate(Paper, broken, "kermany2018 copy")


def test_kermany_card_is_the_paper_recipe():
    p = paper("kermany2018")
    assert (p.model.backbone, p.model.weights, p.model.input_size) == ("InceptionV3", "imagenet", [299, 299])
    assert [s.unfreeze for s in p.training.stages] == [0], "convolutional base frozen, only the final layer trained"
    assert p.model.head.hidden == []
    assert (p.training.optimizer, p.training.learning_rate) == ("adam", 0.001)
    assert {(r.value, r.test_size) for r in p.reported} == {(0.966, 1000), (0.928, 624)}
    assert "model.input_size" in p.assumed and "training.learning_rate" not in p.assumed


def test_kornblith_search_space_is_the_papers_grid():
    p = paper("kornblith2019")
    lr, wd = p.search.space["learning_rate"], p.search.space["weight_decay"]
    assert (lr.min, lr.max, lr.sampling) == (1e-4, 0.1, "log")
    assert (wd.min, wd.max, wd.sampling) == (1e-6, 1e-3, "log")
    assert (p.training.optimizer, p.training.momentum, p.training.batch_size) == ("nesterov", 0.9, 256)
    assert p.training.stages[-1].unfreeze == "all"
    assert [t.name for t in p.augmentation] == ["RandomResizedCrop", "HorizontalFlip"]


def test_efficientnet_card_reports_table_5():
    values = {(r.dataset, r.value) for r in paper("tan2019_efficientnet").reported}
    assert {
        ("CIFAR-10", 0.981),
        ("CIFAR-100", 0.881),
        ("Oxford Flowers-102", 0.988),
        ("Stanford Cars", 0.947),
        ("CIFAR-10", 0.989),
    } == values


def test_rahaman_card_carries_the_shortcut_learning_caveat():
    p = paper("rahaman2020_covid")
    caveat = p.caveats[0].lower()
    assert "shortcut" in caveat and "51%" in caveat and "pediatric" in caveat
    assert (p.model.backbone, p.model.head.pooling, p.model.head.hidden) == ("VGG19", "flatten", [1024, 512])
    assert (p.training.optimizer, p.training.learning_rate, p.training.schedule) == ("rmsprop", 0.001, "plateau")
    assert p.training.stages[0].epochs == 50 and p.training.stages[0].unfreeze == 0


def test_scratch_card_spells_out_every_scratch_option():
    text = (cards.PAPERS_DIR / "scratch_cnn.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["model"]["backbone"] == "scratch"
    assert set(data["model"]["scratch"]) == set(Scratch.model_fields), "every scratch option written out"
    assert data["model"]["preprocessing"] == "rescale" and data["model"]["scratch"]["padding"] == "valid"  # the paper's
    for field in ("activation", "initializer", "normalization", "padding"):
        for value in typing.get_args(Scratch.model_fields[field].annotation):
            assert value in text, f"the card should name {field} choice {value!r}"
    for value in (*POOLINGS, "per_channel_mean", "mean_image", "rescale", "flatten"):
        assert value in text
    assert not any("padding" in caveat or "1/255" in caveat for caveat in data["caveats"]), "no gap left to explain"


def _stats(m):
    h, w = m.input_size
    return {"mean": [120.0] * 3, "variance": [900.0] * 3, "mean_image": np.full((h, w, 3), 120.0).tolist()}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in PAPERS])
def test_paper_card_builds_its_model_without_weights(name):
    """Each card's model builds, and each of its stages applies (unfreeze, train_batchnorm) and compiles
    (its lr_multipliers) as fit_stages does, with the optimizer built."""
    from project.model.classifier import apply_stage, backbone_of, build_model
    from project.train.training import compile_model

    p = cards.validate(Paper, {**paper_data(name), "model": {**paper_data(name)["model"], "weights": "none"}}, name)
    model, weights = build_model(p.model, 3, _stats(p.model), l2=p.training.l2)
    assert model.input_shape == (None, *p.model.input_size, 3)
    assert model.output_shape == (None, 3)
    assert weights.kind == "random"
    if p.model.backbone == "scratch":
        assert backbone_of(model).output_shape[1:3] == scratch_sizes(p.model.scratch, p.model.input_size)[-1][1:]
    if p.training.l2:
        assert any(v.regularizer is not None for v in backbone_of(model).weights), "training.l2 reaches the backbone"
    for stage in p.training.stages:
        apply_stage(model, stage.unfreeze, weights, stage.train_batchnorm)
        compile_model(model, p, stage.learning_rate or p.training.learning_rate, 10, max(1, stage.epochs), stage=stage)
        assert model.optimizer.built


def test_model_input_sizes_are_the_cards():
    sizes = {name: paper(name).model.input_size for name in PAPERS}
    assert (
        sizes["kermany2018"] == [299, 299]
        and sizes["helber2019_eurosat"] == [64, 64]
        and sizes["scratch_cnn"] == [200, 200]
    )
    assert sizes["rahaman2020_covid"] == [224, 224] and sizes["sandler2018_mobilenetv2"] == [224, 224]


# ------------------------------------------------------------------ dataset cards


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_card_describes_its_data(name):
    d = dataset(name)
    for field in ("description", "source", "license", "resolution", "layout"):
        assert getattr(d, field).strip(), f"{name}: {field} is empty"
    assert d.num_classes and d.num_images and d.num_images > d.num_classes
    if d.classes is not None:
        assert len(d.classes) == d.num_classes == len(set(d.classes))
    assert d.adapter in ADAPTERS
    accepted = set(inspect.signature(ADAPTERS[d.adapter]).parameters) - {"base", "classes"}
    assert sorted(set(d.options) - accepted) == KNOWN_GAPS.get(name, [])


def test_chest_xray_card_keeps_test_and_carves_val_from_train(tmp_path):
    d = dataset("chest_xray_pneumonia")
    assert d.split.provided and d.split.val_from_train
    root = tmp_path / d.options["path"]  # the layout the card describes, under a stand-in datasets/ folder
    make_image_folder(root, classes={"NORMAL": 0, "PNEUMONIA": 0}, presplit={"train": 20, "val": 1, "test": 5})
    sources = load_sources(d.adapter, d.options, tmp_path, d.classes)
    assert sources.class_names == ["NORMAL", "PNEUMONIA"]
    subsets = make_split(sources.labels, d.split, sources.subsets)
    counts = {s: int((subsets == s).sum()) for s in ("train", "val", "test")}
    assert counts["test"] == 10, "the provided test folder is kept as is"
    assert abs(counts["val"] - 0.1 * 42) <= 1 and counts["train"] == 42 - counts["val"], "val: 10% of train + val"
    assert set(np.asarray(sources.subsets)[subsets == "test"]) == {"test"}


def test_oxford_pets_card_reads_the_official_split_from_its_list_files(tmp_path):
    d = dataset("oxford_pets")
    manifests = {subset: tmp_path / name for subset, name in d.options["manifests"].items()}
    images = manifests["train"].parent / d.options["root"]
    images.mkdir(parents=True)
    from PIL import Image

    for subset, manifest in manifests.items():
        lines = []
        for class_id, breed in ((1, d.classes[0]), (2, d.classes[1]), (37, d.classes[36])):
            for n in range(10 if subset == "train" else 2):
                Image.new("RGB", (8, 8), (class_id, n, 0)).save(images / f"{breed}_{subset}{n}.jpg")
                lines.append(f"{breed}_{subset}{n} {class_id} 1 {n}")
        manifest.write_text("\n".join(lines) + "\n")
    sources = load_sources(d.adapter, d.options, tmp_path, None)
    assert len(sources) == 36 and all(os.path.exists(item) and item.endswith(".jpg") for item in sources.items)
    assert sources.class_names == ["1", "2", "37"] and sorted(set(sources.labels.tolist())) == [0, 1, 2]
    subsets = make_split(sources.labels, d.split, sources.subsets)
    assert (subsets == "test").sum() == 6 and set(np.asarray(sources.ids)[subsets == "test"]) == {
        f"{breed}_test{n}.jpg" for breed in (d.classes[0], d.classes[1], d.classes[36]) for n in range(2)
    }


def test_intel_card_reads_the_kaggle_archive_as_it_unzips(tmp_path):
    d = dataset("intel_image_classification")
    root = tmp_path / d.options["path"]
    for subset, folder in d.options["subsets"].items():
        make_image_folder(root / folder, classes={c: {"train": 10, "test": 3}[subset] for c in d.classes})
    (root / "seg_pred" / "seg_pred").mkdir(parents=True)  # unlabelled images: not read
    from PIL import Image

    for n in range(4):
        Image.new("RGB", (8, 8)).save(root / "seg_pred" / "seg_pred" / f"{n}.jpg")
    sources = load_sources(d.adapter, d.options, tmp_path, d.classes)
    subsets = make_split(sources.labels, d.split, sources.subsets)
    assert sources.class_names == d.classes and len(sources) == 6 * 13
    assert (subsets == "test").sum() == 18 and abs((subsets == "val").sum() - 6) <= 1


@pytest.mark.parametrize("name, per_class", [("eurosat_rgb", 10), ("plantvillage", 10)])
def test_folder_card_layout_is_read_with_the_cards_split(tmp_path, name, per_class):
    d = dataset(name)
    classes = d.classes or ["Apple___Apple_scab", "Apple___healthy", "Tomato___healthy"]
    make_image_folder(tmp_path / d.options["path"], classes={c: per_class for c in classes})
    sources = load_sources(d.adapter, d.options, tmp_path, d.classes)
    assert sources.class_names == (d.classes or sorted(classes))
    subsets = make_split(sources.labels, d.split, sources.subsets)
    total = per_class * len(classes)
    assert abs((subsets == "test").sum() - d.split.test * total) <= 1
    assert abs((subsets == "val").sum() - d.split.val * total) <= 1


def test_oxford_pets_card_names_all_37_breeds_in_id_order():
    d = dataset("oxford_pets")
    assert len(d.classes) == 37 and d.classes[0] == "Abyssinian" and d.classes[-1] == "yorkshire_terrier"


def test_a_card_copy_with_a_typo_is_rejected(tmp_path):
    data = cards.read_yaml(cards.DATASETS_DIR / "eurosat_rgb.yaml")
    data["split"] = {**data["split"], "vall": 0.1}
    path = write_card(tmp_path / "eurosat_copy.yaml", data)
    with pytest.raises(UserError, match="split.*vall"):
        cards.validate(Dataset, cards.read_yaml(path), path)
