"""The package follows the data flow: nothing imports upward, and the layers a user touches before
training (cards, validation, the command line) never import TensorFlow."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# cards -> config -> data -> model -> train -> tune -> report -> commands; the shared helpers below all
LEVELS = {
    "adapters": 2,  # project/adapters.py: Sources re-exported for custom loaders written before the layout
    "errors": 0,
    "artifacts": 0,
    "paths": 0,
    "figures": 0,
    "records": 0,
    "logs": 0,
    "faults": 0,
    "config": 1,
    "data": 2,
    "model": 3,
    "train": 4,
    "tune": 5,
    "report": 6,
    "commands": 7,
    "__main__": 7,
}


def level(module):
    """The level of a dotted module name inside `project` (benchmarks sit above everything)."""
    parts = module.split(".")
    if parts[0] == "benchmarks":
        return 8
    return LEVELS[parts[1]] if len(parts) > 1 else 0


def imports(path):
    """Every module of ours that `path` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, alias.name)
                for alias in node.names
                if alias.name.split(".")[0] in ("project", "benchmarks")
            ]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("project", "benchmarks")
        ):
            found += [
                (node.lineno, f"{node.module}.{alias.name}" if node.module == "project" else node.module)
                for alias in node.names
            ]
    return found


def upward_imports(package):
    """'module:line imports target' for every import in `package` (a folder named project) that goes up the flow."""
    errors = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        errors += [
            f"{module}:{line} imports {target}" for line, target in imports(path) if level(target) > level(module)
        ]
    return errors


def test_nothing_imports_up_the_flow():
    assert upward_imports(ROOT / "project") == []


def test_the_rule_finds_an_upward_import_even_inside_a_function(tmp_path):
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "pipeline.py").write_text(
        "import os\n\n\ndef f():\n    from project.report import report\n"
    )
    (tmp_path / "project" / "report").mkdir()
    (tmp_path / "project" / "report" / "render.py").write_text(
        "from project.data.pipeline import f\n"
    )  # downward: fine
    assert upward_imports(tmp_path / "project") == ["project.data.pipeline:5 imports project.report"]


@pytest.mark.parametrize("modules", [["project.config.cards", "project.config.schema"], ["project.commands.cli"]])
def test_cards_and_the_command_line_do_not_import_tensorflow(modules):
    code = f"import sys; import {', '.join(modules)}; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_the_adapter_names_cards_accept_are_the_loaders_there_are():
    from project.config.schema import ADAPTER_NAMES
    from project.data.adapters import ADAPTERS

    assert ADAPTER_NAMES == tuple(ADAPTERS)


def test_a_custom_loader_still_imports_sources_from_project_adapters():
    from project.adapters import Sources
    from project.data.adapters import Sources as moved

    assert Sources is moved
