"""The tuner's own cost (time outside model.fit, a reused trial's fixed cost, memory over trials) and
how far a coarse trial's ranking agrees with full-length trials."""

import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.measure import peak_rss_mb, run_probe
from benchmarks.settings import TARGETS, TUNER_LABELS
from benchmarks.table import figure, not_measured


def card_arguments(config):
    """What a probe needs to load the same config: the cards and the overrides."""
    return {
        "paper": str(config.paper_file or config.paper_name),
        "dataset": str(config.dataset_file or config.dataset_name),
        "overrides": list(config.overrides or []),
    }


def tuner_probe(arguments):
    """Keras Tuner search of `trials[0]` trials, resumed up to `trials[1]`: per trial, wall time and
    time inside model.fit (the tuner's meta.json); peak RSS after each search."""
    import io

    from project.config.cards import load_config
    from project.tune.trials import META
    from project.tune.tuning import tune

    config = load_config(arguments["paper"], arguments["dataset"], arguments["overrides"])
    root = Path(arguments["root"])
    result = {}
    start = time.perf_counter()
    for trials in arguments["trials"]:
        with contextlib.redirect_stdout(io.StringIO()):  # stdout carries the JSON result
            tune(config, root, trials=trials, epochs=arguments["epochs"], stage="coarse", verbose=0)
        metas = [json.loads(p.read_text()) for p in sorted((root / "tuning" / "coarse").glob(f"trial_*/{META}"))]
        result[str(trials)] = {
            "search_seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
            "trial_seconds": sum(m["wall_seconds"] for m in metas),
            "fit_seconds": sum(m["fit_seconds"] for m in metas),
            "trials": len(metas),
            "exploded": sum(m["status"] == "exploded" for m in metas),
            "reused_fixed_shares": [
                m["fixed_seconds"] / m["wall_seconds"] for m in metas if m["reused"] and m["status"] == "completed"
            ],
            "first_fixed_shares": [
                m["fixed_seconds"] / m["wall_seconds"] for m in metas if not m["reused"] and m["status"] == "completed"
            ],
        }
    return result


def measure_tuner(config, settings):
    try:
        import project.tune.tuning  # noqa: F401
    except ImportError as error:
        reason = not_measured(f"tuning not available ({error})")
        return {key: figure(label, reason) for key, label in TUNER_LABELS.items()}, {}
    first, last = settings["tuner_trials"]
    epochs = settings["tuner_epochs"] or config.paper.search.coarse.epochs
    with tempfile.TemporaryDirectory(prefix="bench-tuner-") as tmp:
        result = run_probe(
            tuner_probe,
            {
                **card_arguments(config),
                "root": tmp,
                "trials": [first, last],
                "epochs": epochs,
            },
        )
    end = result[str(last)]
    outside = end["trial_seconds"] - end["fit_seconds"]
    rows = {
        "tuner_outside_fit_share": figure(
            TUNER_LABELS["tuner_outside_fit_share"],
            outside / end["trial_seconds"],
            "of trial time",
            target=("<=", TARGETS["tuner_share"]),
            note=f"{end['trials']} trials of {epochs} epochs ({end['exploded']} exploded): "
            f"{end['trial_seconds']:.1f}s in trials, {end['fit_seconds']:.1f}s in model.fit, "
            f"{outside / end['trials']:.2f}s outside per trial; the whole search "
            f"(start-up and resume included) {end['search_seconds']:.1f}s",
        ),
        "tuner_fixed_share": figure(
            TUNER_LABELS["tuner_fixed_share"],
            statistics.median(end["reused_fixed_shares"])
            if end["reused_fixed_shares"]
            else not_measured("no trial reused a compiled model"),
            "of a coarse trial",
            target=("<=", TARGETS["tuner_fixed"]),
            note=f"median over {len(end['reused_fixed_shares'])} trials that reused a compiled model: wall time less epochs x "
            f"their steady epoch time; a trial that builds and traces: "
            + (f"{statistics.median(end['first_fixed_shares']):.2f}" if end["first_fixed_shares"] else "none"),
        ),
        "tuner_peak_rss": figure(
            f"{TUNER_LABELS['tuner_peak_rss']} after {last} trials",
            end["peak_rss_mb"],
            "MB",
            f"after {first} trials",
            result[str(first)]["peak_rss_mb"],
            ("<=", TARGETS["tuner_rss"]),
        ),
    }
    return rows, result


# ------------------------------------------------------------------ rank agreement


def rank_probe(arguments):
    """The same configurations (one search seed) as trials of the coarse length and of the card's full
    length: each trial's best objective at both lengths."""
    import io

    import pandas as pd

    from project.config.cards import load_config
    from project.tune.tuning import tune

    config = load_config(arguments["paper"], arguments["dataset"], arguments["overrides"])
    scores = {}
    for length, epochs in arguments["epochs"].items():
        root = Path(arguments["root"]) / length
        with contextlib.redirect_stdout(io.StringIO()):
            tune(config, root, trials=arguments["trials"], epochs=epochs, stage="coarse", verbose=0)
        table = pd.read_csv(root / "tuning" / "trials.csv")
        scores[length] = table[f"best_{config.paper.search.objective}"].tolist()
    return scores


def measure_rank_agreement(config, settings):
    """Spearman's rank correlation between short-trial and full-length scores of the same configurations:
    how far a coarse trial's ranking can be trusted, which sizes the card's coarse epochs."""
    from scipy.stats import spearmanr

    search = config.paper.search
    short, full = settings["rank_epochs"] or (search.coarse.epochs, sum(s.epochs for s in config.paper.training.stages))
    epochs = {"coarse": short, "full": full}
    with tempfile.TemporaryDirectory(prefix="bench-rank-") as tmp:
        scores = run_probe(
            rank_probe,
            {
                **card_arguments(config),
                "root": tmp,
                "trials": settings["rank_trials"],
                "epochs": epochs,
            },
        )
    pairs = [
        (a, b)
        for a, b in zip(scores["coarse"], scores["full"])
        if a == a and b == b and a is not None and b is not None
    ]
    rho = spearmanr(*zip(*pairs)).statistic if len(pairs) >= 2 else None
    row = figure(
        f"search: rank agreement, {epochs['coarse']}-epoch vs {epochs['full']}-epoch trials",
        rho if rho == rho else not_measured("constant scores"),
        "Spearman rho",
        note=f"{len(pairs)} configurations of the card's space (search seed {search.seed}), {search.objective}; "
        f"coarse {[round(a, 3) for a, _ in pairs]}, full {[round(b, 3) for _, b in pairs]}",
    )
    return {"rank_agreement": row}, {
        **scores,
        "paper": config.paper_name,
        "dataset": config.dataset_name,
        "epochs": epochs,
        "configurations": len(pairs),
        "rho": rho if rho == rho else None,
    }
