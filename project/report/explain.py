"""Where the model looks: Grad-CAM heatmaps (project.model.gradcam) of the same test images before
and after optimisation, side by side: the most confidently misclassified images after optimisation,
and one correctly classified image per class (the most frequent classes first, at most 12)."""

import numpy as np

from project import figures
from project.errors import UserError
from project.report.blocks import figure, p, warning
from project.report.load import run_config

MISTAKES = 6
CLASSES = 12


def chosen_images(table, class_names):
    """(source, true class, caption) of the images shown: the chosen run's most confident mistakes,
    then its most confident right answer in each of the most frequent classes."""
    wrong = table[table["true"] != table["predicted"]].sort_values(
        ["confidence", "source"], ascending=[False, True], kind="stable"
    )
    right = table[table["true"] == table["predicted"]].sort_values(
        ["confidence", "source"], ascending=[False, True], kind="stable"
    )
    frequent = table["true"].value_counts(sort=False).sort_values(ascending=False, kind="stable").index[:CLASSES]
    chosen = [(r.source, r.true, f"wrong: {r.true} as {r.predicted}") for r in wrong.head(MISTAKES).itertuples()]
    for name in (n for n in class_names if n in set(frequent)):
        first = right[right["true"] == name].head(1)
        chosen += [(r.source, r.true, f"right: {r.true}") for r in first.itertuples()]
    return chosen


def test_pixels(config, root, sources):
    """uint8 images at the model's input size, through the training pipeline's decode and resize."""
    from project.data.pipeline import decoded_dataset
    from project.data.prepare import prepare

    data = prepare(config, root)
    index = {source: i for i, source in enumerate(data.sources.ids)}
    missing = [s for s in sources if s not in index]
    if missing:
        raise UserError(f"test image {missing[0]} is not in the dataset any more")
    items = [data.sources.items[index[s]] for s in sources]
    items = np.asarray(items) if data.sources.kind == "array" else items
    size = tuple(config.paper.model.input_size)
    batches = decoded_dataset(items, np.zeros(len(items)), data.sources.kind, size).batch(64)
    return np.concatenate([images.numpy() for images, _ in batches])


def gradcam_section(runs, root, figs, layer=None):
    from project.model.gradcam import gradcam, upsampled
    from project.train.evaluate import load_model

    sides = [(label, runs[name][0]) for label, name in (("before", "baseline"), ("after", "tuned")) if runs[name]]
    shown = sides[-1][1]
    names = shown["metrics"].class_names
    chosen = chosen_images(shown["predictions"], names)
    blocks = [
        p(
            "Grad-CAM (Selvaraju et al. 2017): red where the feature map that decides the predicted class is "
            f"strongest, {'before and after optimisation' if len(sides) == 2 else 'before optimisation (no tuned run yet)'}"
            f", on the same test images: the {MISTAKES} most confident mistakes of the {sides[-1][0]} model and one "
            f"right answer per class (at most {CLASSES} classes). Heatmaps read "
            + (
                f"the backbone layer `{layer}` (report.gradcam_layer)."
                if layer
                else "the backbone's last feature map with at least 4x4 positions (a 1x1 map cannot say where)."
            )
        )
    ]
    try:
        images = test_pixels(run_config(shown), root, [s for s, _, _ in chosen])
    except UserError as error:
        return blocks + [warning(f"No Grad-CAM: the test images could not be loaded: {error}")]
    panels = []
    for label, run in sides:
        model = load_model(run["folder"])
        predicted = model.predict(images.astype("float32"), verbose=0).argmax(axis=1)
        panels.append((label, upsampled(gradcam(model, images, predicted, layer), images.shape[1:3]), predicted))
    captions = [caption for _, _, caption in chosen]
    figs["gradcam.png"] = figures.gradcam_grid(images, panels, captions, names)
    return blocks + [figure("gradcam.png", "Grad-CAM heatmaps of the same test images before and after optimisation")]
