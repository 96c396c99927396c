"""Multimodal latent priors for single-cell RNA-seq VAEs, as an scvi-tools plugin.

The subpackages are imported on first use (PEP 562), so ``import scvi_capvi`` and the
``scvi-capvi`` command line start without loading scvi-tools, PyTorch or scanpy;
``scvi_capvi.model``, ``from scvi_capvi.model import CapVI`` etc. work as usual.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("scvi-capvi")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["benchmark", "data", "metrics", "model", "module", "pl", "train", "__version__"]

_SUBPACKAGES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import benchmark, data, metrics, model, module, pl, train


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        # importing the submodule also sets it as an attribute of this package
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBPACKAGES})
