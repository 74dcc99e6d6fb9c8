"""The final round of a search: its top `search.finalists` trials trained like the baseline (the card's
full epochs and seed) into finalists/, the best on val copied to tuned/, then more seeds of it.
Short trials rank roughly; the full length decides.
"""

import shutil
from pathlib import Path

from project import logs
from project.artifacts import COMPLETE, archive, is_complete, mark_complete, read_json
from project.config.cards import with_values
from project.errors import UserError
from project.records import Candidate, FineSpace, Metrics, TuningSummary
from project.train.training import cross_validation_line, fold_runs, train_run
from project.tune.search_plan import BUDGET
from project.tune.search_space import card_values, decode, edge_warnings
from project.tune.trials import ranked

log = logs.get(__name__)


def candidate(folder, config, space, stage, trial):
    """A ranked trial as the summary records it: its values decoded and as card keys."""
    values = trial["hyperparameters"]["values"]
    fine = Path(folder) / "fine_space.json"
    stage_space = FineSpace.read(fine).space if stage == "fine" and fine.exists() else space
    return {
        "stage": stage,
        "trial_id": trial["trial_id"],
        "score": trial["score"],
        "objective": config.paper.search.objective,
        "values": values,
        "hyperparameters": {k: decode(stage_space.get(k, {}), v) for k, v in values.items()},
        "card_values": card_values(stage_space, values, len(config.paper.model.head.hidden)),
    }


def summarize(folder, config, space, stages, trial_seconds):
    """summary.json: the spaces, the budget and the search's top `finalists` trials (the final round
    picks the best of them: final_round)."""
    search = config.paper.search
    best = ranked(folder, stages, search.direction)
    if not best:
        raise UserError(
            f"no trial of {', '.join(stages)} completed: see {folder / 'trials.csv'} for why, then fix the card's search ranges"
        )
    fine, budget = folder / "fine_space.json", folder / BUDGET
    summary = {
        "objective": search.objective,
        "direction": search.direction,
        "stages": stages,
        "coarse_space": space,
        "fine_space": FineSpace.read(fine).space if fine.exists() else None,
        "budget": read_json(budget) if budget.exists() else None,
        "finalists": [candidate(folder, config, space, stage, trial) for stage, trial in best[: search.finalists]],
        "best": None,
        "final_round": None,
        "warnings": [],
        "trial_seconds": round(float(trial_seconds), 1),  # all trials, all workers
    }
    TuningSummary.model_validate(summary).write(folder / "summary.json")
    log.info(
        "finalists: "
        + "; ".join(
            f"{f['stage']} trial {f['trial_id']} ({search.objective} {f['score']:.4f})" for f in summary["finalists"]
        )
    )
    return summary


def finalist_runs(config, name, seed=None):
    """(folder, fold) of a finalist's runs: with split.folds, one per fold a trial is scored on
    (search.folds, default 1) as <name>-fold<k>; else the one run <name>."""
    folds = (config.paper.search.folds or 1) if config.dataset.split.folds else None
    return [(run, fold) for run, _, fold in fold_runs(name, config.paper.seed if seed is None else seed, 1, folds)]


def final_round(config, root, summary, space, fresh, verbose):
    """Each finalist trained like the baseline (the card's full epochs and seed) into finalists/ (on
    the folds a trial is scored on, by the mean); the best on val becomes tuned/ (tuned-fold<k>).
    Short trials rank roughly: the full length decides."""
    folder, direction = Path(root) / "tuning", summary["direction"]
    metric = "val_" + summary["objective"].removeprefix("val_")
    scored = []
    for finalist in summary["finalists"]:
        runs = finalist_runs(config, f"finalists/{finalist['stage']}-{finalist['trial_id']}")
        values = with_values(config, finalist["card_values"])
        results = [train_run(values, root, run, fresh=fresh, verbose=verbose, fold=fold) for run, fold in runs]
        score = sum(r[metric] for r in results) / len(results)
        scored.append(
            {
                "stage": finalist["stage"],
                "trial_id": finalist["trial_id"],
                "search_score": finalist["score"],
                metric: score,
                "run": runs[0][0],
                **({"folds": len(runs)} if runs[0][1] else {}),
            }
        )
        over = f" (mean of {len(runs)} folds)" if len(runs) > 1 else ""
        log.info(
            f"[final] {finalist['stage']} trial {finalist['trial_id']}: {metric} {score:.4f}{over} after the full epochs"
        )
    winner = (max if direction == "max" else min)(range(len(scored)), key=lambda k: scored[k][metric])
    best = summary["finalists"][winner]
    summary.update(
        best=best, final_round={"metric": metric, "finalists": scored}, warnings=edge_warnings(space, best["values"])
    )
    TuningSummary.model_validate(summary).write(folder / "summary.json")
    log.info(
        f"best: {best['stage']} trial {best['trial_id']}, {metric} {scored[winner][metric]:.4f}, {best['hyperparameters']}"
    )
    for warning in summary["warnings"]:
        log.warning(f"!!! warning: {warning}")
    runs = finalist_runs(config, f"finalists/{best['stage']}-{best['trial_id']}")
    for (run, _), (tuned, _, _) in zip(runs, tuned_runs(config, 1)):
        install(Path(root) / run, Path(root) / tuned, best)
    return best


def tuned_runs(config, seeds):
    """(folder, seed, fold) of the tuned runs (fold_runs of `tuned`): the first ones are the winning finalist's."""
    return fold_runs("tuned", config.paper.seed, seeds, config.dataset.split.folds)


def install(source, target, best):
    """The winning finalist's run as tuned/ (a copy: finalists/ keeps every finalist's record) with
    its trial `best` (best_hyperparameters.json): copied beside, marked complete, then renamed into
    place, so a kill never leaves a tuned/ marked complete that is not (copytree copies the marker
    in no particular order)."""
    if (
        is_complete(target)
        and (target / "config.resolved.yaml").read_text() == (source / "config.resolved.yaml").read_text()
    ):
        return
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a copy a kill cut short: made again
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(COMPLETE))
    metrics = Metrics.read(partial / "metrics.json")
    metrics.model_copy(update={"run": target.name}).write(partial / "metrics.json")
    Candidate.model_validate(best).write(partial / Candidate.FILE)
    mark_complete(partial)
    if target.exists():
        log.info(f"previous tuned run moved to {archive(target)}")
    partial.rename(target)


def retrain(config, root, best, fresh, seeds, verbose):
    """The best values with more seeds, and on every fold with split.folds (the first runs are the
    winning finalist's, installed by final_round), on the baseline's split.csv, like the baseline."""
    tuned = with_values(config, best["card_values"])
    installed = len(finalist_runs(config, "finalists"))
    results = []
    for k, (name, seed, fold) in enumerate(tuned_runs(config, seeds)):
        metrics = (
            read_json(Path(root) / name / "metrics.json")
            if k < installed
            else train_run(tuned, root, name, seed=seed, fresh=fresh, verbose=verbose, fold=fold)
        )
        Candidate.model_validate(best).write(Path(root) / name / "best_hyperparameters.json")
        results.append(metrics)
    if config.dataset.split.folds:
        log.info(cross_validation_line("tuned", results))
    baseline = Path(root) / fold_runs("baseline", config.paper.seed, 1, config.dataset.split.folds)[0][0]
    if is_complete(baseline):
        before, after = Metrics.read(baseline / "metrics.json").test_accuracy, results[0]["test_accuracy"]
        log.info(
            f"test accuracy: {baseline.name} {before:.4f} -> {results[0]['run']} {after:.4f} ({after - before:+.4f})"
        )
    else:
        log.info(
            f"test accuracy: tuned {results[0]['test_accuracy']:.4f} (no baseline in {baseline} yet: `make train`)"
        )
    return results
