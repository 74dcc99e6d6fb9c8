"""The before/after report: reports/<paper>__<dataset>/{report.md, report.html, figures/, ...}.

Generated only from what is in runs/ (never re-trains), read through project.records (report.load).
The report is a list of sections, each a list of blocks (report.blocks); two small Jinja templates
render the same blocks as Markdown and as one self-contained HTML page, so both hold the same content
in the same order. Numbers are formatted with fixed formats, and the one date in the report is the
completion time of the newest run used, so the same runs give byte-identical files.
"""

import base64
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from project import figures, logs
from project.artifacts import atomic_write, run_root, write_json
from project.records import Comparison
from project.report import summary as report_summary
from project.report.blocks import accuracy_ci, figure
from project.report.calibration import calibration_section
from project.report.explain import gradcam_section
from project.report.hyperparameters import hyperparameters
from project.report.load import Tuning, best_hyperparameters, commands, load_runs, load_tuning, rank_agreement
from project.report.pdf import HOW_TO_GET, write_pdf
from project.report.sections_provenance import compute_section, model_card_section, reproduce_section, sanity_section
from project.report.sections_runs import (
    curves_section,
    data_section,
    examples_section,
    model_section,
    per_class_section,
)
from project.report.sections_search import search_section

log = logs.get(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
SECTIONS = [
    "Summary",
    "Paper vs reproduction",
    "Hyperparameters",
    "Search",
    "Learning curves",
    "Per-class results",
    "Calibration",
    "Examples",
    "Where the model looks",
    "Data",
    "Model",
    "Sanity checks",
    "Compute and environment",
    "Reproduce",
    "Model card",
]


def metric_summary(m):
    """One run's numbers in the report's metrics.json (m: a records.Metrics)."""
    lo, hi = accuracy_ci(m)
    return {
        "run": m.run,
        "seed": m.seed,
        "test_accuracy": m.test_accuracy,
        "test_accuracy_ci95": [lo, hi],
        "test_macro_f1": m.test_macro_f1,
        "test_balanced_accuracy": m.test.balanced_accuracy,
        "test_loss": m.test_loss,
        "test_count": m.test.count,
        "test_majority_share": m.test.majority_share,
        "val_accuracy": m.val_accuracy,
        "deterministic": m.deterministic,
        "machine": m.machine.model_dump() if m.machine else None,
        "per_class": {name: scores.model_dump() for name, scores in m.per_class.items()},
        "confusion_matrix": m.confusion_matrix,
    } | ({"fold": m.fold, "test_subset": m.test_subset} if m.fold else {})


def build(config, root, target=None, ranks=None):
    """Everything the report holds: sections of blocks, figures (PNG bytes) and the JSON files."""
    root = Path(root)
    runs = load_runs(config, root)
    card = config.paper
    goal = target if target is not None else card.target_accuracy
    goal_source = "TARGET= / --target" if target is not None else "the paper card's target_accuracy"
    cmd = commands(config)
    searched = bool(runs["baseline"][0]["config"]["paper"]["search"])
    tuning = load_tuning(root, cmd) if searched else Tuning(None, None, None)
    best = best_hyperparameters(runs, cmd)
    figs = {}
    compared = report_summary.comparison(runs, card, config)
    hyper_blocks, hyper_data = hyperparameters(runs, card, config, best)
    calibration_blocks, calibration = calibration_section(runs, figs)
    figs["summary.png"] = figures.before_after(
        [
            (
                f"{label}\n({name})",
                [r["metrics"].test_accuracy for r in runs[name]],
                accuracy_ci(runs[name][0]["metrics"]),
            )
            for label, name in (("before", "baseline"), ("after", "tuned"))
            if runs[name]
        ],
        goal,
    )
    bodies = [
        [figure("summary.png", "test accuracy before and after optimisation, 95% intervals; other seeds as dots")]
        + report_summary.summary(compared, runs, goal, goal_source, cmd),
        report_summary.paper_section(compared, card, config, runs),
        hyper_blocks,
        search_section(runs, root, tuning, best, cmd, figs, ranks),
        curves_section(runs, goal, figs),
        per_class_section(runs, figs),
        calibration_blocks,
        examples_section(runs, root, figs),
        gradcam_section(runs, root, figs, card.report.gradcam_layer),
        data_section(runs, root),
        model_section(runs),
        sanity_section(root, cmd, figs),
        compute_section(runs, tuning),
        reproduce_section(runs, root, config, target, tuning),
        model_card_section(card, runs, goal),
    ]
    sections = [
        {"title": t, "id": re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-"), "blocks": b}
        for t, b in zip(SECTIONS, bodies)
    ]
    completed = max(r["completed"] for g in runs.values() for r in g)
    before = runs["baseline"][0]["metrics"]
    after = runs["tuned"][0]["metrics"] if runs["tuned"] else None
    metrics = {
        "before": metric_summary(before),
        "after": metric_summary(after) if after else None,
        "change": {
            k: report_summary.value(after, k) - report_summary.value(before, k)
            for _, k in report_summary.SUMMARY_METRICS
        }
        if after
        else None,
        "target": {"accuracy": goal, "source": goal_source, "met": (after or before).test_accuracy >= goal},
        "calibration": calibration,
        "seeds": {name: [metric_summary(r["metrics"]) | {"folder": r["name"]} for r in runs[name]] for name in runs},
    }
    return {
        "title": f"{config.paper_name} on {config.dataset_name}: before and after optimisation",
        "citation": card.citation.title,
        "generated_at": completed,
        "run_name": config.run_name,
        "sections": sections,
        "figures": figs,
        "hyperparameters": hyper_data,
        "metrics": metrics,
        "comparison": compared,
        "trials_file": root / "tuning" / "trials.csv" if tuning.trials is not None else None,
        "run_configs": {r["name"]: r["folder"] / "config.resolved.yaml" for g in runs.values() for r in g},
        "summary_table": next(b for b in sections[0]["blocks"] if b["type"] == "table" and b["head"][0] == "metric"),
    }


def md_line(text):
    """Text on one Markdown line: a line break in a class name, a file name or a card's text would
    end the heading, paragraph, list item or table row it stands in."""
    return re.sub(r"\r\n|\r|\n", " ", str(text))


def md_cell(text):
    """One Markdown table cell: on one line, each '|' escaped, and the backslashes before a '|'
    doubled, so that they cannot escape the escape ('a\\|b' stays one cell, as GitHub splits cells)."""
    return re.sub(r"(\\*)\|", lambda m: m.group(1) * 2 + "\\|", md_line(text))


def markdown_table(block):
    """A table block as Markdown: the one writer of every table of report.md and of the console."""
    head = block["head"]
    lines = ["| " + " | ".join(md_cell(c) for c in head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in block["rows"]]
    return "\n".join(lines)


def inline_html(text):
    """The Markdown inline marks the blocks use (**bold**, *italic*, `code`) as HTML, escaped."""
    html = str(escape(text))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", html)
    return Markup(html)


def environment():
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html.j2"]),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_line"] = md_line
    env.filters["inline"] = inline_html
    env.globals["markdown_table"] = markdown_table
    return env


def render(report):
    env = environment()
    data_uris = {
        name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        for name, data in report["figures"].items()
    }
    markdown = env.get_template("report.md.j2").render(report=report)
    html = env.get_template("report.html.j2").render(report=report, images=data_uris)
    return markdown, html


def write(report, folder):
    """Write (overwrite) the report's own files; nothing else in the folder is touched."""
    folder = Path(folder)
    markdown, html = render(report)
    for name, data in sorted(report["figures"].items()):
        atomic_write(folder / "figures" / name, data)
    atomic_write(folder / "report.md", markdown)
    atomic_write(folder / "report.html", html)
    write_json(folder / "hyperparameters.json", report["hyperparameters"])
    write_json(folder / "metrics.json", report["metrics"])
    Comparison.model_validate(report["comparison"]).write(folder / Comparison.FILE)
    if report["trials_file"] is not None:
        atomic_write(folder / "trials.csv", report["trials_file"].read_bytes())
    for name, path in sorted(report["run_configs"].items()):  # what `make check` retrains
        atomic_write(folder / "configs" / f"{name}.yaml", path.read_bytes())
    return folder / "report.md", folder / "report.html"


def cli(config, args):
    root = run_root(config, args.runs_dir)
    report = build(config, root, target=args.target, ranks=rank_agreement(args.reports_dir, config))
    md_path, html_path = write(report, Path(args.reports_dir) / config.run_name)
    log.info(f"report: {md_path}\n        {html_path}")
    if getattr(args, "pdf", True):
        pdf_path = write_pdf(html_path, html_path.with_suffix(".pdf"), report["generated_at"])
        log.info(f"        {pdf_path}" if pdf_path else f"        no report.pdf: Chromium not found ({HOW_TO_GET})")
    log.info("")
    log.info(report["comparison"]["headline"] + "\n")
    log.info(markdown_table(report["summary_table"]))
    verdict = next(b for b in report["sections"][0]["blocks"] if b["type"] == "p" and b["text"].startswith("**Target"))
    log.info("\n" + verdict["text"].replace("**", ""))
    return 0
