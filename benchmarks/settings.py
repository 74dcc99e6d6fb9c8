"""What the bench measures and against which targets: sizes (full and --quick), targets, the
figure keys of each command, and the augmentation every pipeline contender applies."""

CLASSES = 4
FULL = {
    "images": 1000,
    "image_size": 256,
    "input_size": 224,
    "batch_size": 32,
    "rounds": 5,
    "overhead_pairs": 3,
    "steady_epochs": 10,
    "steady_pairs": 4,
    "tuner_trials": [3, 20],
    "tuner_epochs": None,
    "scaling_sizes": [2000, 8000, 32000],
    "scaling_rounds": 3,
    "rank_trials": 6,
    "rank_epochs": None,
}
QUICK = {
    "images": 24,
    "image_size": 256,
    "input_size": 224,
    "batch_size": 8,
    "rounds": 1,
    "overhead_pairs": 1,
    "steady_epochs": 2,
    "steady_pairs": 1,
    "tuner_trials": [1, 3],
    "tuner_epochs": 1,
    "scaling_sizes": [24, 48, 96],
    "scaling_rounds": 1,
    "rank_trials": 3,
    "rank_epochs": [2, 4],
}
TARGETS = {
    "per_core": 0.70,
    "scaling_per_core": 0.8,
    "keras_io": 1.0,
    "cache": 3.0,
    "overhead": 1.10,
    "determinism": 0.95,
    "tuner_fixed": 0.15,
    "tuner_share": 0.05,
    "tuner_rss": 1.25,
    "size_rss": 1.10,
    "size_speed": 0.85,
    "accelerator": 0.9,
}
TUNER_LABELS = {
    "tuner_outside_fit_share": "tuner: time outside model.fit per trial",
    "tuner_peak_rss": "tuner: peak RSS",
    "tuner_fixed_share": "tuner: fixed cost of a trial that reuses a compiled model",
}
DATA_FIGURES = [
    "bare_loop",
    "template_one_core",
    "template_all_cores",
    "keras_io",
    "template_vs_keras_io",
    "cache_second_epoch",
    "cache_second_epoch_augmented",
    "albumentations_threads",
    "threads_all_cores",
    "processes_all_cores",
    "per_image_one_core",
    "per_image_all_cores",
    "determinism_off_all_cores",
    "determinism_pipeline",
]
BENCH_FIGURES = DATA_FIGURES + [
    "template_overhead",
    "template_overhead_one_epoch",
    "determinism_epoch",
    "tuner_outside_fit_share",
    "tuner_fixed_share",
    "rank_agreement",
    "tuner_peak_rss",
    "size_peak_rss",
    "size_images_per_second",
    "accelerator",
]


def augmentation(size):
    """The bench's augmentation as a card would write it (project.data.augment builds the Compose)."""
    return [
        {"name": "RandomResizedCrop", "size": list(size)},
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1, "p": 1.0},
    ]
