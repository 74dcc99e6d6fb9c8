"""Where things are: the repository root (cards, datasets/, runs/ and reports/ are found from it)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PAPERS_DIR = REPO_ROOT / "project" / "papers"
DATASETS_DIR = REPO_ROOT / "datasets"
