"""make check: retrain what the committed report describes and compare with it.

reports/<paper>__<dataset>/ holds each run's resolved configuration (configs/<run>.yaml) and its
numbers and machine fingerprint (metrics.json). Every run is retrained from its configuration and
seed in a fresh folder (quick: the baseline's first seed only), and its numbers are compared:
identical when the run was deterministic and this machine's fingerprint (CPU model, TensorFlow
build, oneDNN) is the recorded one; otherwise within a tolerance (oneDNN picks different kernels
on different CPUs, so the last digits move): twice the spread over the report's seeds, at least
TOLERANCE. Exit status 1 on any mismatch, so a fork's CI can run it.
"""

import statistics
import tempfile
from pathlib import Path

from project import logs
from project.artifacts import read_json
from project.config.cards import read_yaml, validate
from project.config.schema import Config
from project.errors import UserError

log = logs.get(__name__)

METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "val_accuracy")
TOLERANCE = {"test_accuracy": 0.01, "test_macro_f1": 0.01, "val_accuracy": 0.01, "test_loss": 0.05}


def committed_runs(folder, quick):
    """[(run folder name, seed, committed numbers, config path)] of the report, baseline first."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: write the report first (make all, or make report)")
    seeds = read_json(path).get("seeds")
    if not seeds or "baseline" not in seeds:
        raise UserError(f"{path} records no runs per seed: regenerate the report with this code (make report)")
    runs = []
    for group in ("baseline", "tuned"):
        for entry in seeds.get(group) or []:
            config = Path(folder) / "configs" / f"{entry['folder']}.yaml"
            if not config.is_file():
                raise UserError(f"{config} is missing: regenerate the report with this code (make report)")
            runs.append((entry["folder"], entry["seed"], entry, config))
    return runs[:1] if quick else runs


def allowed(metric, committed, exact):
    """0 where the numbers must repeat exactly; else the tolerance, widened by the seeds' spread."""
    if exact:
        return 0.0
    spread = [r[metric] for r in committed if r.get(metric) is not None]
    return max(TOLERANCE[metric], 2 * statistics.stdev(spread)) if len(spread) > 1 else TOLERANCE[metric]


def compare(name, committed, fresh, group, here):
    """Rows (run, metric, committed, fresh, difference, allowed, ok) for one retrained run."""
    machine = committed.get("machine")
    exact = bool(committed.get("deterministic")) and machine == here
    rows = []
    for metric in METRICS:
        difference = fresh[metric] - committed[metric]
        limit = allowed(metric, group, exact)
        rows.append((name, metric, committed[metric], fresh[metric], difference, limit, abs(difference) <= limit))
    return rows, exact


def table(rows):
    head = f"{'run':<16} {'metric':<14} {'committed':>10} {'fresh':>10} {'difference':>11} {'allowed':>8}  ok"
    lines = [head, "-" * len(head)]
    for name, metric, old, new, diff, limit, ok in rows:
        shown = "exact" if limit == 0 else f"{limit:.4f}"
        lines.append(
            f"{name:<16} {metric:<14} {old:>10.4f} {new:>10.4f} {diff:>+11.2e} {shown:>8}  {'yes' if ok else 'NO'}"
        )
    return "\n".join(lines)


def check(report_folder, runs_dir, quick=False, verbose=0):
    """Retrain and compare; returns (rows, every run exact?)."""
    from project.train.runtime import fingerprint
    from project.train.training import train_run

    here = fingerprint()
    runs = committed_runs(report_folder, quick)
    groups = {g: [entry for n, _, entry, _ in runs if n.startswith(g)] for g in ("baseline", "tuned")}
    rows, exact = [], True
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs_dir, prefix="check-") as tmp:
        for name, seed, entry, config_path in runs:
            config = validate(Config, read_yaml(config_path), config_path)
            log.info(f"[check] retraining {name} (seed {seed}) from {config_path}")
            fold = entry.get("fold")  # a cross-validated run: its own fold of split.csv (split.folds)
            fresh = train_run(config, Path(tmp) / config.run_name, name, seed=seed, verbose=verbose, fold=fold)
            group = groups["tuned" if name.startswith("tuned") else "baseline"]
            found, same = compare(name, entry, fresh, group, here)
            rows += found
            exact = exact and same
    return rows, exact


def cli(config, args):
    folder = Path(args.reports_dir) / config.run_name
    rows, exact = check(folder, args.runs_dir, quick=args.quick, verbose=2 if args.quiet else 0)
    log.info(table(rows))
    mode = (
        "identical numbers expected (same machine fingerprint, deterministic runs)"
        if exact
        else ("within tolerance (another machine fingerprint or a non-deterministic run)")
    )
    bad = [r for r in rows if not r[-1]]
    if bad:
        log.warning(f"make check: {len(bad)} of {len(rows)} numbers differ from {folder / 'metrics.json'} ({mode})")
        return 1
    log.info(f"make check: the report's numbers repeat ({mode})")
    return 0
