"""The time budget, the progress line and the plan line (project.tune.search_plan), and a budgeted search."""

import io
import json
import re
from contextlib import redirect_stdout

import pandas as pd
import pytest
from conftest import DIGITS_DATASET, TINY_SEARCH, write_card, write_tiny_paper_card

from project.config.cards import load_config
from project.config.durations import parse_duration
from project.errors import UserError
from project.tune.search_plan import Progress, plan_budget, plan_text


@pytest.mark.parametrize(
    "text, seconds", [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("2", 120), ("1h 5m", 3900)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "20 minutes", "m", "-5m", "5x"])
def test_a_bad_budget_is_one_error_naming_the_key(tmp_path, text):
    card = write_tiny_paper_card(
        tmp_path, search={"space": {"learning_rate": {"min": 0.01, "max": 0.1}}, "budget": text}
    )
    with pytest.raises(UserError, match=r"search\.budget: .*is not a duration: write e\.g\. 20m"):
        load_config(str(card), str(write_card(tmp_path / "d.yaml", DIGITS_DATASET)))


def test_the_budget_is_split_in_the_card_s_proportion_and_the_card_s_counts_stay_limits():
    # first trial: 2 epochs of 3 s after a 10 s first epoch (tracing), 2 s outside fit
    first = {"wall_seconds": 15.0, "epoch_seconds": [10.0, 3.0]}
    counts = {"coarse": (8, 2), "fine": (4, 4)}  # a coarse trial costs 2 + 7 + 6 = 15 s, a fine one 21 s
    plan = plan_budget(150, first, counts)
    assert plan["fixed_seconds"] == pytest.approx(9.0) and plan["trial_seconds"] == {"coarse": 15.0, "fine": 21.0}
    share = 8 * 15 / (8 * 15 + 4 * 21)
    assert plan["trials"] == {"coarse": 1 + int(135 * share // 15), "fine": int(135 * (1 - share) // 21)}
    assert plan_budget(10**6, first, counts)["trials"] == {"coarse": 8, "fine": 4}  # a large budget: the card's counts
    assert plan_budget(1, first, counts)["trials"] == {"coarse": 1, "fine": 1}  # the first trial has run; fine gets one


def test_the_progress_line_counts_best_and_eta():
    table = pd.DataFrame(
        {
            "trial_id": ["0", "1"],
            "stage": ["coarse", "coarse"],
            "best_val_accuracy": [0.5, None],
            "epochs_run": [2, 2],
            "status": ["completed", "exploded"],
            "failure_reason": ["", "exploded: training loss nan in epoch 1, batch 2\n(a second line)"],
            "wall_seconds": [30.0, 10.0],
        }
    )
    progress = Progress({"coarse": (4, 2), "fine": (2, 5)}, retrain_epochs=10, objective="val_accuracy", start=0)
    line = progress.line("coarse", table, "1")
    # 2 coarse trials x 2 epochs + 2 fine x 5 + 10 retrain = 24 epochs left at 40 s / 4 epochs
    assert line.startswith("[coarse] trial 2/4 exploded (training loss nan in epoch 1, batch 2) in 10s: best 0.5000 - ")
    assert "about 4m00s left (ETA " in line
    assert progress.line("coarse", table, "1", "t/error.log").startswith(
        "[coarse] trial 2/4 exploded (training loss nan in epoch 1, batch 2; traceback in t/error.log) in 10s: "
    )
    completed = progress.line("coarse", table, "0", "t/error.log")  # a stale log of an earlier start is not named
    assert completed.startswith("[coarse] trial 2/4 completed in 30s: val_accuracy 0.5000, best 0.5000 - elapsed ")


def test_the_plan_line_says_what_make_all_runs(tmp_path):
    card = write_tiny_paper_card(
        tmp_path,
        search={
            "space": {"learning_rate": {"min": 0.01, "max": 0.1}},
            "coarse": {"trials": 5, "epochs": 6},
            "fine": {"trials": 2, "epochs": 10},
        },
    )
    config = load_config(str(card), str(write_card(tmp_path / "digits.yaml", DIGITS_DATASET)))
    assert plan_text(config, seeds=3, budget="5m") == (
        "make all on tiny x digits: sanity (6 checks) -> baseline (1 epochs x 3 seeds) -> search (coarse 5 trials x 6 epochs, "
        "fine 2 x 10, within 5m) -> final round (2 finalists x 1 epochs, the best is tuned) -> tuned, 2 more seeds -> report"
    )


def test_a_budgeted_search_fixes_its_counts_once_and_keeps_them(tmp_path):
    from project.tune.tuning import tune

    search = {**TINY_SEARCH, "finalists": 1, "coarse": {"trials": 6, "epochs": 1}, "fine": {"trials": 3, "epochs": 1}}
    card = write_tiny_paper_card(tmp_path, search=search)
    config = load_config(str(card), str(write_card(tmp_path / "digits.yaml", DIGITS_DATASET)))
    root = tmp_path / "runs" / config.run_name
    out = io.StringIO()
    with redirect_stdout(out):
        tune(config, root, verbose=0, budget="1s")  # one trial's time: the rest of the budget buys nothing more
    plan = json.loads((root / "tuning" / "budget.json").read_text())
    assert plan["trials"] == {"coarse": 1, "fine": 1} and plan["budget_seconds"] == 1
    trials = pd.read_csv(root / "tuning" / "trials.csv")
    assert trials.groupby("stage").size().to_dict() == {"coarse": 1, "fine": 1}
    # only the learning rate is searched: the fine trial took the coarse one's compiled model
    assert trials["reused"].tolist() == [False, True]
    assert (trials["fixed_seconds"] >= 0).all() and (trials["fixed_seconds"] < trials["wall_seconds"]).all()
    printed = out.getvalue()
    assert "[search] budget 1s: the first trial took" in printed and "so 1 coarse and 1 fine trials" in printed
    assert re.search(
        r"\[coarse\] trial 1/1 completed in \d+s: val_accuracy \d\.\d{4}, best \d\.\d{4} - elapsed \d+s", printed
    )
    summary = json.loads((root / "tuning" / "summary.json").read_text())
    assert summary["budget"] == plan and (root / "tuned" / "COMPLETE").exists()
    with pytest.raises(UserError, match="planned for a budget of 1s, not 20m00s: rerun with --fresh"):
        tune(config, root, verbose=0, budget="20m")
