"""Methods × datasets × metrics: training recipes, registries, model selection, the report."""

from ._novelty import leave_one_type_out
from ._quickstart import quickstart
from ._registry import (
    METHODS,
    BenchmarkConfig,
    Method,
    MethodOutput,
    MethodSkipped,
    Split,
    available_datasets,
    load_dataset,
    make_split,
)
from ._runs import (
    FitResult,
    cell_split,
    evaluate_models,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi,
    fit_scvi_as_users_run_it,
    latent_metrics,
)
from ._suite import run_benchmark, write_report

__all__ = [
    "METHODS",
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
