"""`python -m project <command>`: argument parsing and dispatch.

Nothing heavy is imported here: `--help` and card validation answer without loading
TensorFlow, and a bad card is reported before TensorFlow is imported.
"""

import argparse
import errno
import importlib
import os
import sys

from project.errors import UserError

# command: (module:function, needs a config, help). Each function takes (config, args) or (args).
COMMANDS = {
    "train": ("project.train.training:cli", True, "train the baseline with the paper's hyperparameters"),
    "tune": ("project.tune.tuning:cli", True, "random search coarse -> fine, then retrain the best"),
    "sanity": ("project.train.sanity:cli", True, "babysitting checks: initial loss, overfit 20, lr sweep, ..."),
    "report": ("project.report.render:cli", True, "write reports/<paper>__<dataset>/report.md and report.html"),
    "evaluate": ("project.train.evaluate:evaluate_cli", False, "recompute test metrics of a saved run (RUN=...)"),
    "predict": ("project.train.evaluate:predict_cli", False, "predict a folder or files with a saved run"),
    "check-data": ("project.data.datacheck:cli", True, "scan the dataset and list what cannot be used"),
    "weights": ("project.commands.weights:cli", True, "download the ImageNet weights a paper card needs"),
    "download": ("project.commands.weights:download_cli", True, "download a dataset with a programmatic source"),
    "validate": ("project.commands.cli:validate", True, "validate the paper and dataset cards"),
    "plan": ("project.tune.search_plan:cli", True, "say in one line what make all will run"),
    "all": ("project.commands.cli:run_all", True, "plan, sanity, train, tune and report in one process (make all)"),
    "list": ("project.commands.library:list_cli", False, "list paper cards and dataset cards"),
    "new-paper": ("project.commands.library:new_paper_cli", False, "write a new paper card from a template"),
    "new-dataset": ("project.commands.new_dataset:new_dataset_cli", False, "scan data and write a new dataset card"),
    "bench": ("benchmarks.bench:cli", True, "measure pipeline, overhead and tuner figures"),
    "bench-data": ("benchmarks.bench:data_cli", False, "measure input pipeline throughput"),
}


def parser():
    root = argparse.ArgumentParser(prog="python -m project", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", metavar="command")
    for name, (_, _, text) in COMMANDS.items():
        p = commands.add_parser(name, help=text, description=text)
        p.add_argument(
            "--paper", default=os.environ.get("PAPER") or "demo", help="paper card name or path (default: demo)"
        )
        p.add_argument(
            "--dataset",
            default=os.environ.get("DATASET") or "digits",
            help="dataset card name or path (default: digits)",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a card value by dotted key, e.g. training.learning_rate=0.01 (repeatable)",
        )
        p.add_argument(
            "--runs-dir", default=os.environ.get("PROJECT_RUNS", "runs"), help="where runs are kept (default: runs)"
        )
        p.add_argument("--reports-dir", default="reports", help="where reports are written (default: reports)")
        p.add_argument(
            "--fresh", action="store_true", help="start over; the previous state is moved aside, never deleted"
        )
        p.add_argument("--force", action="store_true", help="go on despite failed sanity checks")
        p.add_argument(
            "--seeds", type=int, default=int(os.environ.get("SEEDS") or 1), help="repeat training with this many seeds"
        )
        p.add_argument("--trials", type=int, default=None, help="tune: trials per search stage")
        p.add_argument("--epochs", type=int, default=None, help="tune: epochs per trial")
        p.add_argument("--stage", default="all", help="tune: coarse, fine or all")
        p.add_argument(
            "--budget", default=os.environ.get("BUDGET") or None, help="tune: time for the search's trials, e.g. 20m"
        )
        p.add_argument("--target", type=float, default=None, help="report: target test accuracy (default: the card's)")
        p.add_argument("--run", default=None, help="a run folder, e.g. runs/demo__digits/tuned")
        p.add_argument("--images", default=None, help="predict: a folder or image files")
        p.add_argument("--output", default=None, help="an output file or folder")
        p.add_argument("--name", default=None, help="new-paper / new-dataset: the card's name")
        p.add_argument("--from", dest="from_card", default=None, help="new-paper: copy this card")
        p.add_argument("--adapter", default="folder", help="new-dataset: the adapter")
        p.add_argument("--path", default=None, help="new-dataset: the data's folder or manifest")
        p.add_argument("--quick", action="store_true", help="bench: tiny sizes (seconds, for tests)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    return root


def load(args):
    """The validated config, augmentation included, before any TensorFlow import."""
    from project.config.cards import load_config
    from project.data.augment import build_augmentation

    config = load_config(args.paper, args.dataset, args.overrides)
    build_augmentation([t.model_dump() for t in config.paper.augmentation], 1.0, source=config.paper_file)
    return config


def run_all(config, args):
    """`make all` in one process: TensorFlow starts once, and a FAIL in sanity stops it (unless --force)."""
    for name in ("plan", "sanity", "train", "tune", "report"):
        module_name, function_name = COMMANDS[name][0].split(":")
        status = getattr(importlib.import_module(module_name), function_name)(config, args)
        if status:
            return status
    return 0


def validate(config, args):
    print(f"ok: {config.paper_file} and {config.dataset_file} are valid")
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.command:
        parser().print_help()
        return 0
    target, needs_config, _ = COMMANDS[args.command]
    module_name, function_name = target.split(":")
    try:
        config = load(args) if needs_config else None
        function = getattr(importlib.import_module(module_name), function_name)
        result = function(config, args) if needs_config else function(args)
        return int(result or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (
        PermissionError,
        NotADirectoryError,
        FileExistsError,
        IsADirectoryError,
    ) as error:  # e.g. an unwritable runs/
        print(
            f"error: cannot use {error.filename}: {error.strerror} (check --runs-dir / --reports-dir: "
            f"they must be folders you can write to)",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise
        print(
            f"error: cannot write {error.filename or ''}: {error.strerror} (free some space or use another --runs-dir)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
