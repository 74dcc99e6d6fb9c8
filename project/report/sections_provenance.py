"""Where the results come from and how far to trust them: the sanity checks, compute and environment,
the commands that reproduce the report, and the model card."""

import subprocess
from pathlib import Path

import pandas as pd

from project.paths import REPO_ROOT
from project.records import Sanity
from project.report.blocks import accuracy_ci, ci_text, code, describe, f4, figure, h3, p, plain, span, table, ul
from project.report.load import commands, load_sanity
from project.train.metrics import IMBALANCED, imbalance_ratio

# ------------------------------------------------------------------ sanity


def sanity_section(root, cmd, figs):
    """runs/<run>/sanity.json (make sanity): each check with its status, numbers, advice and plot."""
    sanity = load_sanity(root, cmd)
    if sanity is None:
        return [p(f"No sanity results in runs/ ({Sanity.FILE} is missing): run `make sanity {cmd['cards']}`.")]
    rows, blocks = [], []
    for check in sanity.checks:
        shown = ", ".join(f"{k} {_num(v)}" for k, v in check.numbers.items() if v is not None and not _long(v))
        advice = check.advice + (f". Augmentation: {check.augmentation}" if check.augmentation else "")
        rows.append([check.title, check.status, shown, advice])
        if check.plot and (Path(root) / check.plot).is_file():
            figs[f"sanity_{check.name}.png"] = (Path(root) / check.plot).read_bytes()
            blocks.append(figure(f"sanity_{check.name}.png", f"sanity check: {check.title}"))
    return [
        p(f"**Overall: {sanity.status}** (`make sanity`, {Sanity.FILE}, backbone weights {sanity.weights_used})."),
        table(["check", "result", "numbers", "advice"], rows),
        *blocks,
    ]


def _long(value):
    return isinstance(value, (dict, list)) and len(value) > 4


def _num(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    return plain(value)


# ------------------------------------------------------------------ compute


def code_version():
    """The last commit that touched the code (project/), so committing a report does not change it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%H", "--", "project")
        dirty = git("status", "--porcelain", "--", "project")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return (commit or "unknown (not a git checkout)") + (" with uncommitted changes in project/" if dirty else "")


def determinism_text(runs):
    """Whether every run was deterministic (runtime.deterministic), so whether rerunning gives the same numbers."""
    flags = {r["name"]: r["metrics"].deterministic for group in runs.values() for r in group}
    if all(flags.values()):
        return (
            "**Deterministic:** yes, every run (runtime.deterministic): the same code, cards, data and seed on this "
            "machine give identical numbers; only the timing fields differ."
        )
    off = ", ".join(name for name, on in flags.items() if not on)
    return (
        f"**Deterministic:** no, for {off} (runtime.deterministic: false): a rerun may give slightly different numbers."
    )


def compute_section(runs, tuning):
    base = runs["baseline"][0]["metrics"]
    dev = base.device
    blocks = [
        ul(
            [
                f"**Device:** {dev.type} {dev.name}" + (f" ×{dev.count}" if dev.count > 1 else ""),
                f"**Runtime:** {describe(base.runtime.model_dump())}",
                determinism_text(runs),
                f"**Code version:** {base.git_commit or code_version()}",
            ]
        )
    ]
    rows = []
    for name in ("baseline", "tuned"):
        for r in runs[name]:
            m = r["metrics"]
            for s in m.stages:
                rows.append([r["name"], s.stage, str(s.epochs), f"{s.seconds:.1f}", f"{s.images_per_second:.1f}"])
            rows.append(
                [
                    r["name"],
                    "total (incl. data and evaluation)",
                    "",
                    f"{m.wall_seconds:.1f}",
                    f"{m.train_images_per_second:.1f}",
                ]
            )
    trials = tuning.trials.frame() if tuning.trials is not None else None
    if trials is not None:
        rows.append(["tuning", f"all {len(trials)} trials", "", f"{trials['wall_seconds'].sum():.1f}", ""])
    blocks.append(table(["run", "stage", "epochs", "seconds", "images/s"], rows))
    versions = [runs["baseline"][0]] + runs["tuned"][:1]
    keys = sorted({k for r in versions for k in r["metrics"].versions})
    blocks.append(
        table(
            ["package", *[r["name"] for r in versions]],
            [[k, *[r["metrics"].versions.get(k, "—") for r in versions]] for k in keys],
        )
    )
    paper = runs["baseline"][0]["config"]["paper"]
    seeds = [f"{r['name']} {r['metrics'].seed}" for g in runs.values() for r in g]
    items = [f"**Training seeds:** {', '.join(seeds)}", f"**Split seed:** {base.split_seed}"]
    if paper["search"]:
        items.append(f"**Search seed:** {paper['search']['seed']}")
    if trials is not None:
        trial_seeds = pd.to_numeric(trials["seed"], errors="coerce").dropna()
        if len(trial_seeds):
            items.append(
                f"**Trial seeds:** {span(trial_seeds.min(), trial_seeds.max())} (recorded per trial in trials.csv)"
            )
    blocks.append(ul(items))
    return blocks


# ------------------------------------------------------------------ reproduce, model card


def reproduce_section(runs, root, config, target_arg, tuning):
    cmd = commands(config)
    overrides = runs["baseline"][0]["config"]["overrides"]
    args = (" ARGS='" + " ".join(f"--set {o}" for o in overrides) + "'") if overrides else ""
    seeds = max(len({r["metrics"].seed for r in group}) for group in runs.values() if group)
    extra = (f" SEEDS={seeds}" if seeds > 1 else "") + args
    tune_extra = ""
    search = runs["baseline"][0]["config"]["paper"]["search"]
    if tuning.trials is not None and search:
        counts = tuning.trials.frame().groupby("stage").size()
        card = {s: search[s]["trials"] for s in ("coarse", "fine")}
        if any(counts.get(s, 0) != card[s] for s in card) and counts.nunique() == 1:
            tune_extra = f" TRIALS={int(counts.iloc[0])}"
    target = f" TARGET={target_arg:g}" if target_arg is not None else ""
    lines = [f"make all {cmd['cards']}{tune_extra}{extra}{target}", "", "# or step by step:"]
    if (Path(root) / Sanity.FILE).exists():
        lines.append(f"make sanity {cmd['cards']}{args}")
    lines.append(f"make train {cmd['cards']}{extra}")
    if runs["tuned"]:
        lines.append(f"make tune {cmd['cards']}{tune_extra}{extra}")
    lines.append(f"make report {cmd['cards']}{target}{args}")
    run = (runs["tuned"] or runs["baseline"])[0]["name"]
    lines.append(f"make evaluate RUN={Path(root) / run}")
    return [
        p("The commands that produced this report (on a fresh clone they install the pinned environment first):"),
        code(lines),
    ]


def model_card_section(card, runs, target):
    final = runs["tuned"][0] if runs["tuned"] else runs["baseline"][0]
    m = final["metrics"]
    d = final["config"]["dataset"]
    worst = min(m.per_class.items(), key=lambda kv: (kv[1].f1, kv[0]))
    model = final["config"]["paper"]["model"]
    recommendations = list(card.caveats)
    if m.test_accuracy < target:
        recommendations.append(
            f"The test accuracy {f4(m.test_accuracy)} is below the target {target:.4f}: do not rely on it where that target matters."
        )
    if m.weights_kind == "random_fallback":
        recommendations.append(
            "The backbone was trained from random initialisation because ImageNet weights were unavailable."
        )
    lo, hi = accuracy_ci(m)
    if hi - lo > 0.05:
        recommendations.append(
            f"The test set is small ({m.test.count} images): the 95% interval {ci_text((lo, hi))} is wide."
        )
    if imbalance_ratio(m.counts.train) > IMBALANCED:
        recommendations.append(
            f"The classes are imbalanced (ratio above {IMBALANCED:g}): read per-class recall, not only accuracy."
        )
    return [
        ul(
            [
                f"**Model:** {model['backbone']} classifier ({final['name']} run), reproducing {card.citation.title} ({card.citation.year}).",
                f"**Intended use:** {card.intended_use}",
                f"**Training data:** {final['config']['dataset_name']}"
                + (f" ({d['description'].rstrip('.')})" if d["description"] else "")
                + f", {sum(m.counts.train.values())} training and {sum(m.counts.val.values())} validation images.",
                (
                    f"**Evaluation data:** the held-out test subset, {m.test.count} images, the same for before and after."
                    if m.test_subset == "test"
                    else f"**Evaluation data:** no test subset (split.test 0): the run's held-out fold, {m.test.count} "
                    f"images, which also chose its checkpoint (optimistic)."
                ),
                f"**Metrics:** test accuracy {f4(m.test_accuracy)} {ci_text((lo, hi))} (trivial baseline, the majority class's share: "
                f"{f4(m.test.majority_share)}), macro-F1 {f4(m.test_macro_f1)}, "
                f"balanced accuracy {f4(m.test.balanced_accuracy)}; "
                f"weakest class {worst[0]} (F1 {f4(worst[1].f1)}).",
            ]
        ),
        h3("Caveats and recommendations"),
        ul(recommendations or ["None stated in the paper card (`caveats:`)."]),
    ]
