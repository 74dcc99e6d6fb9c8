"""A run folder is kept while the recipe is the same and moved aside (never deleted) when it changes;
the code's commit is recorded, or None outside a git checkout."""

import os
import shutil
import stat
import subprocess
import sys

import pytest

from project.artifacts import atomic_write
from project.config.cards import load_config, resolved_yaml
from project.paths import REPO_ROOT
from project.train.training import git_commit, prepare_run_folder


def _prepare(folder, overrides):
    prepare_run_folder(folder, resolved_yaml(load_config("demo", "digits", overrides)))
    (folder / "marker").write_text("kept")


def test_descriptive_edits_keep_the_run_and_recipe_edits_archive_it(tmp_path):
    folder = tmp_path / "demo__digits" / "baseline"
    _prepare(folder, [])
    prepare_run_folder(
        folder,
        resolved_yaml(
            load_config("demo", "digits", ["caveats=[a new caveat]", "target_accuracy=0.9", "search.coarse.trials=2"])
        ),
    )
    assert (folder / "marker").read_text() == "kept", "editing caveats or the search must not retrain the baseline"
    assert "a new caveat" in (folder / "config.resolved.yaml").read_text(), "the resolved config is brought up to date"
    prepare_run_folder(folder, resolved_yaml(load_config("demo", "digits", ["training.learning_rate=0.01"])))
    assert not (folder / "marker").exists()
    archived = list((tmp_path / "demo__digits" / "archive").glob("*-baseline/marker"))
    assert len(archived) == 1 and archived[0].read_text() == "kept"


def test_fresh_archives_even_the_same_recipe(tmp_path):
    folder = tmp_path / "baseline"
    _prepare(folder, [])
    prepare_run_folder(folder, resolved_yaml(load_config("demo", "digits", [])), fresh=True)
    assert not (folder / "marker").exists() and len(list((tmp_path / "archive").iterdir())) == 1


def test_written_files_are_not_owner_only(tmp_path):
    atomic_write(tmp_path / "a.txt", "x")
    mode = (tmp_path / "a.txt").stat().st_mode
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_git_commit_is_recorded_in_a_checkout():
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout (e.g. a fork downloaded as a ZIP): no commit to record")
    commit = git_commit()
    assert commit is not None and len(commit.split("+")[0]) == 40


def test_git_commit_is_none_outside_a_checkout(tmp_path):
    """A copy of the code without .git, as a ZIP download gives: the run records no commit, no error."""
    copy = tmp_path / "download"
    shutil.copytree(REPO_ROOT / "project", copy / "project", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    code = "from project.train import training; print(training.__file__); print(training.git_commit())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=copy,
        env={**env, "PYTHONPATH": str(copy), "GIT_CEILING_DIRECTORIES": str(tmp_path)},  # git looks no higher
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    module, commit = out.stdout.strip().splitlines()[-2:]
    assert module.startswith(str(copy)) and commit == "None"
