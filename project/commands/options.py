"""Which options each command takes: one table, so an option a command would ignore is an error.

Each command's list holds what its function reads from `args` (`all`: what its stages read).
--quiet and -v/--verbose belong to every command (COMMON).
"""

import os

CARDS = ("--paper", "--dataset", "--set")

TAKES = {
    "train": (*CARDS, "--runs-dir", "--seeds", "--fresh"),
    "tune": (*CARDS, "--runs-dir", "--trials", "--epochs", "--stage", "--budget", "--seeds", "--fresh"),
    "sanity": (*CARDS, "--runs-dir", "--force"),
    "report": (*CARDS, "--runs-dir", "--reports-dir", "--target", "--no-pdf"),
    "check": (*CARDS, "--runs-dir", "--reports-dir", "--quick"),
    "evaluate": ("--run",),
    "predict": ("--run", "--images", "--output"),
    "check-data": (*CARDS, "--runs-dir"),
    "weights": CARDS,
    "download": CARDS,
    "validate": CARDS,
    "plan": (*CARDS, "--seeds", "--budget"),
    "list": (),
    "new-paper": ("--name", "--from"),
    "new-dataset": ("--name", "--adapter", "--path", "--set"),
    "card-reference": ("--output",),
    "bench": (*CARDS, "--quick", "--output", "--reports-dir"),
    "bench-data": ("--quick", "--output", "--reports-dir"),
}
ALL_STAGES = ("plan", "sanity", "train", "tune", "report")  # what `all` runs, in order
TAKES["all"] = tuple(dict.fromkeys(option for stage in ALL_STAGES for option in TAKES[stage]))

COMMON = ("--quiet", "--verbose")


def specs():
    """option -> add_argument keywords (defaults read from the environment now, as make passes them)."""
    env = os.environ.get
    return {
        "--paper": {"default": env("PAPER") or "demo", "help": "paper card name or path (default: demo)"},
        "--dataset": {"default": env("DATASET") or "digits", "help": "dataset card name or path (default: digits)"},
        "--set": {
            "dest": "overrides",
            "action": "append",
            "default": [],
            "metavar": "KEY=VALUE",
            "help": "override a card value by dotted key, e.g. training.learning_rate=0.01 (repeatable)",
        },
        "--runs-dir": {"default": env("PROJECT_RUNS", "runs"), "help": "where runs are kept (default: runs)"},
        "--reports-dir": {"default": "reports", "help": "where reports are written (default: reports)"},
        "--fresh": {"action": "store_true", "help": "start over; the previous state is moved aside, never deleted"},
        "--force": {"action": "store_true", "help": "go on despite failed sanity checks"},
        "--seeds": {"type": int, "default": int(env("SEEDS") or 1), "help": "repeat training with this many seeds"},
        "--trials": {"type": int, "default": None, "help": "trials per search stage (default: the card's)"},
        "--epochs": {"type": int, "default": None, "help": "epochs per trial (default: the card's)"},
        "--stage": {"default": "all", "choices": ("coarse", "fine", "all"), "help": "search stages to run"},
        "--budget": {"default": env("BUDGET") or None, "help": "time for the search's trials, e.g. 20m"},
        "--target": {"type": float, "default": None, "help": "target test accuracy (default: the card's)"},
        "--run": {"default": None, "help": "a run folder, e.g. runs/demo__digits/tuned"},
        "--images": {"default": None, "help": "a folder or image files"},
        "--output": {"default": None, "help": "an output file or folder"},
        "--name": {"default": None, "help": "the new card's name"},
        "--from": {"dest": "from_card", "default": None, "help": "copy this paper card"},
        "--adapter": {"default": "folder", "help": "the dataset's adapter (default: folder)"},
        "--path": {"default": None, "help": "the data's folder or manifest"},
        "--quick": {"action": "store_true", "help": "tiny sizes (seconds, for tests)"},
        "--no-pdf": {"dest": "pdf", "action": "store_false", "help": "skip report.pdf (printed by headless Chromium)"},
    }


def add_common(parser):
    parser.add_argument(
        "--quiet", action="store_true", help="warnings and errors only, no progress bars (or one line per epoch)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug messages, and TensorFlow's start-up lines unfiltered"
    )


def add_options(parser, command):
    table = specs()
    for option in TAKES[command]:
        parser.add_argument(option, **table[option])


def takes_value(option):
    """Whether `option` is followed by a value on the command line."""
    return specs().get(option, {}).get("action") != "store_true" and option not in (*COMMON, "-v")


def refusal(command, extras):
    """The one-line message for arguments `command` does not take."""
    unknown = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
    taken = ", ".join((*TAKES[command], *COMMON))
    if unknown:
        owners = [c for c, options in TAKES.items() if unknown[0] in options and c != "all"]
        hint = f" ({unknown[0]} is an option of {', '.join(owners)})" if 0 < len(owners) <= 3 else ""
        return f"{command} does not take {', '.join(unknown)}{hint}; it takes: {taken}"
    return f"{command}: unexpected argument {' '.join(extras)}; it takes: {taken}"
