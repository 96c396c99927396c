"""Methods × datasets × metrics: training recipes, registries, model selection, the report.

The modules, by job: ``_datasets`` (loading), ``_splits`` (the seeded splits), ``_recipes``
(how SCVI, SCANVI and CapVI are trained), ``_methods`` (the registry of fit functions),
``_evaluation`` (metrics of fitted models), ``_suite`` and ``_report`` (``scvi-capvi
benchmark`` and its report), ``_selection`` (model selection), ``_quickstart``, ``_novelty``
and ``_clustering`` (the other benchmarks).
"""

from ._config import BenchmarkConfig
from ._datasets import available_datasets, load_dataset
from ._evaluation import evaluate_models, latent_metrics
from ._methods import METHODS, Method, MethodOutput, MethodSkipped
from ._novelty import leave_one_type_out
from ._quickstart import quickstart
from ._recipes import (
    ARCHES_NETWORK,
    SCARCHES_QUERY_TRAIN,
    FitResult,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi,
    fit_scvi_as_users_run_it,
)
from ._report import write_report
from ._splits import Split, cell_split, make_split
from ._suite import run_benchmark

__all__ = [
    "ARCHES_NETWORK",
    "METHODS",
    "SCARCHES_QUERY_TRAIN",
    "BenchmarkConfig",
    "FitResult",
    "Method",
    "MethodOutput",
    "MethodSkipped",
    "Split",
    "available_datasets",
    "cell_split",
    "evaluate_models",
    "fit_capvi",
    "fit_scanvi_from_scvi",
    "fit_scvi",
    "fit_scvi_as_users_run_it",
    "latent_metrics",
    "leave_one_type_out",
    "load_dataset",
    "make_split",
    "quickstart",
    "run_benchmark",
    "write_report",
]
