"""Methods × datasets × metrics: training recipes, the quick start and (later) the report."""

from ._novelty import leave_one_type_out
from ._quickstart import quickstart
from ._runs import FitResult, cell_split, evaluate_models, fit_capvi, fit_scvi, latent_metrics

__all__ = [
    "FitResult",
    "cell_split",
    "evaluate_models",
    "fit_capvi",
    "fit_scvi",
    "latent_metrics",
    "leave_one_type_out",
    "quickstart",
]
