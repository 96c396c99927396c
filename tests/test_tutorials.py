"""The tutorials are stored executed, and the docs list every notebook and public name.

The docs build shows the notebooks as stored (``nb_execution_mode = "off"``), so a notebook
saved without outputs, or with an error, would be published that way: these tests stop it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import scvi_capvi

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("*.ipynb"))
MAX_NOTEBOOK_BYTES = 1_500_000


def notebook_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why a notebook is not 'stored executed': unexecuted code cells and error outputs."""
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if not code:
        problems.append("no code cells")
    for i, cell in enumerate(code):
        if cell.get("execution_count") is None:
            problems.append(f"code cell {i} was not executed")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"code cell {i} has an error output ({out.get('ename')})")
    counts = [c.execution_count for c in code if c.get("execution_count") is not None]
    if counts != sorted(counts):
        problems.append("code cells were executed out of order")
    return problems


def test_there_are_tutorials():
    assert {p.stem for p in TUTORIALS} >= {
        "capvi_quickstart",
        "label_transfer",
        "vampvi",
        "paper_figures",
    }


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_stored_executed(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert notebook_problems(nb) == []
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, "reduce figure dpi / outputs"
    # the notebooks run anywhere: no machine-specific absolute paths
    assert "/work/" not in path.read_text()


def test_notebook_problems_catches_unexecuted_and_error_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    assert notebook_problems(nb) == ["code cell 0 was not executed"]
    nb.cells[0].execution_count = 1
    assert notebook_problems(nb) == []
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x")]
    assert notebook_problems(nb) == ["code cell 0 has an error output (ValueError)"]


def test_docs_list_every_tutorial():
    index = (REPO / "docs" / "tutorials" / "index.md").read_text()
    toctree = re.search(r"```\{toctree\}(.*?)```", index, re.S).group(1)
    listed = {line.strip() for line in toctree.splitlines()[1:] if line.strip()}
    listed = {name for name in listed if not name.startswith(":")}
    assert listed == {p.stem for p in TUTORIALS}


SUBPACKAGES = ["model", "module", "train", "metrics", "benchmark", "data", "pl"]


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_api_page_lists_every_public_name(subpackage: str):
    """Functions and classes in an autosummary table; constants named in the text."""
    api = (REPO / "docs" / "api.md").read_text()
    module = getattr(scvi_capvi, subpackage)
    listed = set(re.findall(rf"^\s+{subpackage}\.(\w+)\s*$", api, re.M))
    objects = {n for n in module.__all__ if callable(getattr(module, n))}
    constants = set(module.__all__) - objects
    assert objects == listed, f"docs/api.md vs scvi_capvi.{subpackage}.__all__"
    assert all(f"`{subpackage}.{n}`" in api for n in constants)


def test_docs_bibliography_has_the_five_papers():
    bib = (REPO / "docs" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{(\w+),", bib))
    assert {"Clivio22", "Dony20", "Bolos20", "Svensson20", "Xu21"} <= keys
