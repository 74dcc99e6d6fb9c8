"""`python -m project <command>`: argument parsing and dispatch.

Nothing heavy is imported here: `--help` and card validation answer without loading
TensorFlow, and a bad card is reported before TensorFlow is imported.
"""

import argparse
import importlib
import os
import re
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

from project import locks, logs
from project.artifacts import cannot_write, disk_problem, run_root
from project.commands import options
from project.errors import UserError

# command: (module:function, needs a config, help). Each function takes (config, args) or (args).
COMMANDS = {
    "train": ("project.train.training:cli", True, "train the baseline with the paper's hyperparameters"),
    "tune": ("project.tune.tuning:cli", True, "random search coarse -> fine, then retrain the best"),
    "sanity": ("project.train.sanity:cli", True, "babysitting checks: initial loss, overfit 20, lr sweep, ..."),
    "report": ("project.report.render:cli", True, "write reports/<paper>__<dataset>/report.md and report.html"),
    "check": ("project.commands.check:cli", True, "retrain what the committed report describes and compare"),
    "evaluate": ("project.train.evaluate:evaluate_cli", False, "recompute test metrics of a saved run (RUN=...)"),
    "predict": ("project.train.evaluate:predict_cli", False, "predict a folder or files with a saved run"),
    "check-data": ("project.data.datacheck:cli", True, "scan the dataset and list what cannot be used"),
    "weights": ("project.commands.weights:cli", True, "download the ImageNet weights a paper card needs"),
    "download": ("project.commands.weights:download_cli", True, "download a dataset with a programmatic source"),
    "validate": ("project.commands.validate:cli", True, "validate the paper and dataset cards"),
    "plan": ("project.tune.search_plan:cli", True, "say in one line what make all will run"),
    "all": ("project.commands.cli:run_all", True, "plan, sanity, train, tune and report in one process (make all)"),
    "list": ("project.commands.library:list_cli", False, "list paper cards and dataset cards"),
    "new-paper": ("project.commands.library:new_paper_cli", False, "write a new paper card from a template"),
    "new-dataset": ("project.commands.new_dataset:new_dataset_cli", False, "scan data and write a new dataset card"),
    "card-reference": ("project.commands.card_reference:cli", False, "write every card key into README.md's reference"),
    "bench": ("benchmarks.bench:cli", True, "measure pipeline, overhead and tuner figures"),
    "bench-data": ("benchmarks.bench:data_cli", False, "measure input pipeline throughput"),
}

# command -> the stages of runs/<paper>__<dataset>/ it writes, each locked for the whole command
# (project.locks): a second command on the same stage is refused, naming the holder. Reading commands
# (evaluate, predict, check-data, validate) lock nothing; every stage's first start shares the split
# through its own short lock (project.data.split).
WRITES = {"sanity": ("sanity",), "train": ("train",), "tune": ("tune",), "report": ("report",)}
WRITES["all"] = tuple(lock for stage in options.ALL_STAGES for lock in WRITES.get(stage, ()))


class Parser(argparse.ArgumentParser):
    """Any mistake on the command line is one `error:` line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras and not args.command:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if extras:  # an option of another command: an error, never silently ignored
            self.exit(2, f"error: {options.refusal(args.command, extras)} (see `{self.prog} {args.command} --help`)\n")
        return args


def parser():
    root = Parser(prog="python -m project", description=__doc__.splitlines()[0], allow_abbrev=False)
    commands = root.add_subparsers(dest="command", metavar="command", parser_class=Parser)
    for name, (_, _, text) in COMMANDS.items():
        command = commands.add_parser(name, help=text, description=text, allow_abbrev=False)  # --run is not --runs-dir
        options.add_options(command, name)
        options.add_common(command)
    return root


def load(args):
    """The validated config (project.commands.validate), before any TensorFlow import."""
    from project.commands.validate import load

    return load(args.paper, args.dataset, args.overrides)


def run_all(config, args):
    """`make all` in one process: TensorFlow starts once, and a FAIL in sanity stops it (unless --force)."""
    for name in options.ALL_STAGES:
        if name == "tune" and not config.dataset.split.has_test:  # make tune would refuse: no test subset
            logs.get(__name__).info(
                "[all] split.test is 0 (cross-validation only): no tuning, which needs a test subset"
            )
            continue
        status = command_function(name)(config, args)
        if status:
            return status
    return 0


def command_function(name):
    module_name, function_name = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.command:
        parser().print_help()
        return 0
    with logs.at_level(args.quiet, args.verbose):
        return run(args, shlex.join(["python", "-m", "project", *(sys.argv[1:] if argv is None else map(str, argv))]))


def stage_locks(command):
    """The locks `command` takes. A distributed search's worker writes only the trials it runs, so it
    locks its own tuner id (`tune-tuner1`), never the chief's `tune`: the chief and its workers run
    together, while a second chief, or a second worker with the same id, is refused."""
    names = WRITES.get(command, ())
    tuner = os.environ.get("KERASTUNER_TUNER_ID", "")
    if os.environ.get("KERASTUNER_ORACLE_IP") and tuner and "chief" not in tuner:
        names = tuple(f"tune-{re.sub(r'[^A-Za-z0-9_.-]', '_', tuner)}" if n == "tune" else n for n in names)
    return names


FOLDERS = "check --runs-dir / --reports-dir: they must be folders you can write to"


def written_folder(args, config):
    """Where the command writes, named when a writer (CSVLogger, matplotlib) fails without a file name."""
    if args.command == "report":
        return Path(args.reports_dir) / config.run_name
    if config is not None and getattr(args, "runs_dir", None):
        return run_root(config, args.runs_dir)
    return Path(getattr(args, "output", None) or ".").resolve()


def run(args, command_line=""):
    """The command's function; a UserError or an unusable folder is one `error:` line and status 2."""
    needs_config, config = COMMANDS[args.command][1], None
    try:
        config = load(args) if needs_config else None
        names = stage_locks(args.command)
        lock = locks.hold_all(run_root(config, args.runs_dir), names, command_line) if names else nullcontext()
        with lock, nullcontext() if args.verbose else logs.filtered_stderr():
            logs.ignore_python_noise()
            function = command_function(args.command)  # may import TensorFlow
            result = function(config, args) if needs_config else function(args)
        return int(result or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (NotADirectoryError, FileExistsError, IsADirectoryError) as error:  # e.g. runs/ under a file
        print(f"error: cannot use {error.filename}: {error.strerror} ({FOLDERS})", file=sys.stderr)
        return 2
    except Exception as error:  # a full disk or a read-only folder, whoever was writing
        problem = disk_problem(error)
        if problem is None:
            raise
        path, reason, code = problem
        if isinstance(error, PermissionError) and error.filename:  # e.g. an unwritable runs/
            print(f"error: cannot use {error.filename}: {error.strerror} ({FOLDERS})", file=sys.stderr)
        else:
            print(
                f"error: {cannot_write(path or f'under {written_folder(args, config)}', reason, code)}", file=sys.stderr
            )
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
