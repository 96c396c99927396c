"""Multimodal latent priors for single-cell RNA-seq VAEs, as an scvi-tools plugin."""

from importlib.metadata import PackageNotFoundError, version

from . import benchmark, data, metrics, model, module, pl, train

try:
    __version__ = version("scvi-capvi")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["benchmark", "data", "metrics", "model", "module", "pl", "train", "__version__"]
