"""Methods × datasets × metrics: training recipes, the quick start and (later) the report."""

from ._quickstart import quickstart
from ._runs import FitResult, cell_split, evaluate_models, fit_capvi, fit_scvi, latent_metrics

__all__ = [
    "FitResult",
    "cell_split",
    "evaluate_models",
    "fit_capvi",
    "fit_scvi",
    "latent_metrics",
    "quickstart",
]
