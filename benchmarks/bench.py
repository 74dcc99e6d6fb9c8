"""Benchmarks: `python -m project bench-data` (the input pipeline) and `python -m project bench`
(the pipeline, the template's overhead around model.fit, the tuner's overhead, scaling with the
dataset's size, the accelerator). Figures go to reports/bench/*.json (and bench.md), each with
its reference, ratio, target and met / not met. The bench never fails the build (a target not
met is a figure, not an error) and the tests never time anything.

The measurements: pipeline.py (bench-data), training.py (overhead, dataset sizes, accelerator),
search.py (tuner, rank agreement); table.py turns them into rows, verdicts and the report.
"""

import os
import time
from pathlib import Path

from benchmarks.pipeline import measure_data
from benchmarks.search import measure_rank_agreement, measure_tuner
from benchmarks.settings import DATA_FIGURES, FULL, QUICK, TUNER_LABELS, augmentation
from benchmarks.table import figure, markdown, not_measured, report, text_table
from benchmarks.training import measure_accelerator, measure_overhead, measure_sizes
from project.artifacts import atomic_write, write_json
from project.errors import UserError


def attempt(name, work, labels, log=print):
    """work() -> (rows, details); on failure, every row of `labels` says why (the bench goes on).
    The details get the section's wall time."""
    start = time.perf_counter()
    try:
        rows, details = work()
    except Exception as error:  # a broken figure must not cost the others
        reason = not_measured(
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        )
        log(f"bench: {name}: {reason}")
        rows, details = {key: figure(label, reason) for key, label in labels.items()}, {"error": reason}
    return rows, {**details, "section_seconds": round(time.perf_counter() - start, 1)}


def output_folder(args):
    """--output (a folder), else <reports-dir>/bench; checked before minutes of measuring."""
    folder = Path(args.output) if args.output else Path(args.reports_dir) / "bench"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"--output {folder}: cannot create this folder for the bench reports ({error.strerror or error}); "
            f"give a writable folder"
        ) from None
    return folder


def _data_section(settings):
    return attempt(
        "input pipeline", lambda: measure_data(settings), {key: key.replace("_", " ") for key in DATA_FIGURES}
    )


def _print(result):
    m = result["machine"]
    print(
        f"\n{m['cpu_count']} CPU cores, {m['device']['type']}; load average {m['load_average_before']} before, "
        f"{m['load_average_after']} after"
    )
    print(", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    print(text_table(result["figures"]))


def data_cli(args):
    """`python -m project bench-data`: the input pipeline's figures -> <output>/bench_data.json."""
    load_before, path = os.getloadavg(), output_folder(args) / "bench_data.json"
    settings = {**(QUICK if args.quick else FULL), "augmentation": augmentation((224, 224))}
    figures, samples = _data_section(settings)
    result = report("bench-data", args.quick, settings, figures, {"samples": samples}, load_before)
    write_json(path, result)
    _print(result)
    print(f"-> {path}")
    return 0


def cli(config, args):
    """`python -m project bench`: bench-data's figures plus overhead, tuner, dataset size and
    accelerator -> <output>/bench.json and bench.md."""
    load_before, folder = os.getloadavg(), output_folder(args)
    settings = {**(QUICK if args.quick else FULL), "augmentation": augmentation((224, 224)), "config": config.run_name}
    figures, samples = _data_section(settings)
    details = {"samples": samples}
    sections = (
        (
            "overhead",
            lambda: measure_overhead(config, settings),
            {
                "template_overhead": "template overhead",
                "template_overhead_one_epoch": "template overhead, one epoch",
                "determinism_epoch": "op determinism, a later epoch",
            },
        ),
        ("tuner", lambda: measure_tuner(config, settings), TUNER_LABELS),
        (
            "rank agreement",
            lambda: measure_rank_agreement(config, settings),
            {"rank_agreement": "search: rank agreement"},
        ),
        (
            "dataset size",
            lambda: measure_sizes(settings),
            {"size_peak_rss": "dataset size: peak RSS", "size_images_per_second": "dataset size: images/s"},
        ),
        (
            "accelerator",
            lambda: _single("accelerator", measure_accelerator(config, settings)),
            {"accelerator": "accelerator"},
        ),
    )
    for name, work, labels in sections:
        rows, found = attempt(name, work, labels)
        figures.update(rows)
        details[name] = found
    result = report("bench", args.quick, settings, figures, details, load_before)
    write_json(folder / "bench.json", result)
    atomic_write(folder / "bench.md", markdown(result))
    _print(result)
    print(f"-> {folder / 'bench.json'}, {folder / 'bench.md'}")
    return 0


def _single(key, pair):
    row, found = pair
    return {key: row}, found
