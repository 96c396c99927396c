"""Sphinx configuration: myst-nb, sphinx-book-theme, autosummary, bibtex (like scvi-tools)."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))  # document this checkout, not an installed copy

project = "scvi-capvi"
author = "scvi-capvi developers"
copyright = f"{datetime.now():%Y}, {author}"
try:
    release = version("scvi-capvi")
except PackageNotFoundError:  # pragma: no cover
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinxcontrib.bibtex",
]

# ---------------------------------------------------------------- sources
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# The notebooks live in ../tutorials (one copy, executed and stored with outputs); the docs
# show that copy, never a re-executed one.
_NB_SRC, _NB_DST = REPO / "tutorials", HERE / "tutorials"
for _nb in sorted(_NB_SRC.glob("*.ipynb")):
    _target = _NB_DST / _nb.name
    if not _target.exists() or _target.read_bytes() != _nb.read_bytes():
        shutil.copyfile(_nb, _target)

myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_output_stderr = "show"  # warnings and progress as a user sees them
nb_merge_streams = True

# ---------------------------------------------------------------- API docs
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": False}
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_use_bars_union = True

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

# Every reference to this package's own objects must resolve (a broken one fails the -W
# build); references to other packages are checked only where intersphinx is on.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"^(?!scvi_capvi\b).*"),
    # private bases shown by :show-inheritance: (e.g. model._fields.CountsSetupMixin)
    (r"py:class", r"^scvi_capvi\.\w+\._\w+\._?\w+$"),
]

# Intersphinx needs the network: on on Read the Docs (or with DOCS_INTERSPHINX=1), off
# offline and in CI, where an unreachable inventory would fail the -W build.
if os.environ.get("READTHEDOCS") == "True" or os.environ.get("DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
    }

# ---------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_title = "scvi-capvi"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/scverse/scvi-capvi",
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}
pygments_style = "default"
