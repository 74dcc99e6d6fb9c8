"""`python -m project`: help without TensorFlow, bad input as one `error:` line and exit status 2."""

import json
import re
from pathlib import Path

import pytest
from conftest import TINY_SEARCH, write_card, write_tiny_paper_card

from project.commands import options
from project.commands.cli import COMMANDS, main, parser

ROOT = Path(__file__).resolve().parent.parent


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_help_lists_every_command(project_env):
    result = project_env.run("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert "Traceback" not in result.stderr


def test_help_and_validate_do_not_import_tensorflow(project_env, tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path)
    code = (
        "import json, sys\n"
        "from project.commands.cli import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit as exit:\n"
        "    help_status = exit.code\n"
        f"status = main(['validate', '--paper', {str(card)!r}, '--dataset', {str(digits_card)!r}])\n"
        "print('RESULT', json.dumps([help_status, status, 'tensorflow' in sys.modules, 'keras' in sys.modules]))\n"
    )
    result = project_env.python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    assert json.loads(line[7:]) == [0, 0, False, False]
    assert f"ok: {card} and {digits_card} are valid" in result.stdout


def test_validate_a_bad_card_exits_2_with_one_line(project_env, tmp_path, digits_card):
    card = write_tiny_paper_card(tmp_path, **{"training.batch_size": "lots"})
    result = project_env.run("validate", "--paper", card, "--dataset", digits_card, timeout=120)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert str(card) in line and "training.batch_size" in line and "'lots'" in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "training.learnig_rate=0.1"], "training.learnig_rate: unknown key"),
        (["--set", "optimiser=adam"], "--set optimiser: unknown key 'optimiser'"),
        (["--set", "model.backbone=ResNet"], "model.backbone: unknown backbone 'ResNet'; valid names:"),
        (["--set", "model.backbone=InceptionV3", "--set", "model.input_size=64"], "minimum of InceptionV3"),
        (["--set", "augmentation=[{name: Rotat}]"], "unknown albumentations transform 'Rotat'"),
        (["--set", "training.stages=[]"], "training.stages"),
    ],
)
def test_validate_errors(tmp_path, digits_card, capsys, args, expected):
    card = write_tiny_paper_card(tmp_path)
    assert main(["validate", "--paper", str(card), "--dataset", str(digits_card), *args]) == 2
    assert expected in one_error_line(capsys.readouterr().err)


def test_missing_cards_list_the_available_ones(capsys):
    assert main(["validate", "--paper", "no_such_paper"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no paper card named 'no_such_paper'" in line and "demo" in line
    assert main(["validate", "--dataset", "no_such_data"]) == 2
    assert "digits" in one_error_line(capsys.readouterr().err)


def test_train_with_a_missing_dataset_path_names_it(tmp_path, capsys, image_folder):
    card = write_tiny_paper_card(tmp_path)
    missing = write_card(tmp_path / "gone.yaml", {"adapter": "folder", "options": {"path": "no_such_folder"}})
    runs = ["--runs-dir", str(tmp_path / "runs"), "--quiet"]
    assert main(["train", "--paper", str(card), "--dataset", str(missing), *runs]) == 2
    assert f"{tmp_path / 'no_such_folder'} does not exist" in one_error_line(capsys.readouterr().err)

    image_folder(tmp_path / "one_class", {"only": 4})
    single = write_card(tmp_path / "single.yaml", {"adapter": "folder", "options": {"path": "one_class"}})
    assert main(["train", "--paper", str(card), "--dataset", str(single), *runs]) == 2
    assert "a classifier needs at least 2" in one_error_line(capsys.readouterr().err)


def test_no_command_prints_the_help(capsys):
    assert main([]) == 0
    assert "validate" in capsys.readouterr().out


@pytest.mark.slow
def test_all_runs_every_step_in_one_process_and_stops_on_a_failed_sanity_check(tmp_path, digits_card, capsys):
    search = {**TINY_SEARCH, "finalists": 1}
    card = write_tiny_paper_card(
        tmp_path, search=search, **{"training.learning_rate": 1e-7}
    )  # cannot overfit 20 images
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = [
        "all",
        "--paper",
        str(card),
        "--dataset",
        str(digits_card),
        "--runs-dir",
        str(runs),
        "--reports-dir",
        str(reports),
    ]
    status = main(args)
    captured = capsys.readouterr()
    assert captured.out.startswith("make all on tiny x digits: sanity (6 checks) -> baseline")
    root = runs / "tiny__digits"
    failed = "FAIL  3 overfit 20 training examples" in captured.err  # a warning: on stderr
    assert status == 1 and failed and not (root / "baseline").exists()
    assert main(args + ["--force"]) == 0  # goes on despite the failed check
    assert (
        (root / "sanity.json").exists()
        and (root / "baseline" / "COMPLETE").exists()
        and (root / "tuned" / "COMPLETE").exists()
    )
    assert (reports / "tiny__digits" / "report.md").exists()


# ------------------------------------------------------------------ one command line per command


def parse(argv, capsys):
    """(exit status or None, stderr) of parsing argv, in this process."""
    try:
        parser().parse_args(argv)
    except SystemExit as exit:
        return exit.code, capsys.readouterr().err
    return None, capsys.readouterr().err


def with_value(option):
    """option, and a value it accepts if it takes one."""
    value = options.specs().get(option, {}).get("choices", ["1"])[0]
    return [option, value] if options.takes_value(option) else [option]


def test_every_command_refuses_the_options_of_other_commands(capsys):
    every = {option for taken in options.TAKES.values() for option in taken}
    assert set(options.TAKES) == set(COMMANDS)
    checked = 0
    for command in COMMANDS:
        foreign = sorted(every - set(options.TAKES[command]))
        assert foreign, command
        for option in foreign:
            status, err = parse([command, *with_value(option)], capsys)
            assert status == 2, (command, option)
            assert one_error_line(err).startswith(f"error: {command} does not take {option}"), err
            checked += 1
        for option in (*options.TAKES[command], "--quiet", "--verbose", "-v"):  # and takes its own
            assert parse([command, *with_value(option)], capsys) == (None, ""), (command, option)
    assert checked > 150


def test_an_ignored_option_is_an_error_in_a_real_process(project_env):
    result = project_env.run("train", "--trials", "5", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    line = one_error_line(result.stderr)
    assert line.startswith("error: train does not take --trials (--trials is an option of tune)")


def test_an_abbreviation_is_no_other_option(capsys):
    status, err = parse(["train", "--run", "x"], capsys)  # not --runs-dir
    assert status == 2 and "train does not take --run" in one_error_line(err)


def test_a_bad_value_is_one_line(capsys):
    status, err = parse(["tune", "--stage", "middle"], capsys)
    assert status == 2 and "argument --stage: invalid choice: 'middle'" in one_error_line(err)
    status, err = parse(["train", "--seeds", "many"], capsys)
    assert status == 2 and "argument --seeds: invalid int value: 'many'" in one_error_line(err)


def makefile_command_lines():
    """(target line, command, options) of every `$(PY) -m project <command> ...` recipe line, with
    the Makefile's own variables (CARDS, TUNE_ARGS) expanded."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+) [:?]?= ?(.*)$", text, re.M))
    found = []
    for line in text.splitlines():
        if "-m project " not in line:
            continue
        expanded = None
        while expanded != line:
            expanded, line = line, re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m[1], m[0]), line)
        command = line.split("-m project ", 1)[1].split()[0]
        found.append((line.strip(), command, re.findall(r"(?<![\w-])--[a-z][\w-]*", line)))
    return found


def test_every_option_the_makefile_passes_is_taken_by_its_command(capsys):
    lines = makefile_command_lines()
    commands = {command for _, command, _ in lines}
    assert commands == set(COMMANDS) - {"plan"}  # plan runs inside `all`
    assert ("tune", ["--paper", "--dataset", "--trials", "--epochs", "--budget", "--fresh"]) in [
        (c, o) for _, c, o in lines
    ]
    for line, command, taken in lines:
        argv = [command] + [part for option in taken for part in with_value(option)]
        assert parse(argv, capsys) == (None, ""), line


def test_quiet_keeps_the_command_silent_and_verbose_is_accepted(tmp_path, digits_card, capsys):
    card = write_tiny_paper_card(tmp_path)
    assert main(["validate", "--paper", str(card), "--dataset", str(digits_card), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["validate", "--paper", str(card), "--dataset", str(digits_card), "-v"]) == 0
    assert "are valid" in capsys.readouterr().out
