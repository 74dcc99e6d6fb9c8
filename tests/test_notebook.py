"""notebooks/run_on_colab.ipynb: its template cells, run by nbclient in a real kernel on the tiny
card (the clone and install cells need a network and are left out), end with the report inline."""

import sys

import nbformat
import pytest
import yaml
from conftest import DIGITS_DATASET, ROOT, TINY_PAPER, TINY_SEARCH
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "run_on_colab.ipynb"


def tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def test_the_notebook_has_parameters_setup_and_template_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(tags(c) & {"parameters", "setup", "template"} for c in code)
    install = next(c.source for c in code if "pip install" in c.source)
    assert "-r requirements.txt" in install and "tensorflow[and-cuda]==" in install


@pytest.mark.slow
def test_the_template_cells_run_make_all_and_show_the_report(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny.yaml").write_text(yaml.safe_dump(TINY_PAPER | {"search": TINY_SEARCH}))
    (cards / "digits.yaml").write_text(yaml.safe_dump(DIGITS_DATASET))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code" and tags(c) & {"parameters", "template"}]
    assert "parameters" in tags(nb.cells[0])
    nb.cells.insert(
        1,
        nbformat.v4.new_code_cell(
            f"PAPER = {str(cards / 'tiny.yaml')!r}\nDATASET = {str(cards / 'digits.yaml')!r}\n"
            f"ARGS = '--runs-dir {tmp_path / 'runs'} --reports-dir {tmp_path / 'reports'} --no-pdf --quiet'"
        ),
    )
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.km_kwargs = {"kernel_cmd": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]}
    client.execute()
    shown = nb.cells[-1].outputs[0]
    assert (
        shown["output_type"] == "display_data"
        and "tiny on digits: before and after optimisation" in shown["data"]["text/html"]
    )
    assert (tmp_path / "reports" / "tiny__digits" / "report.md").exists()
