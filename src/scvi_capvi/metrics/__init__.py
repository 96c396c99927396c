"""Latent-space and classification metrics: pure functions of arrays, no models."""

from ._calibration import expected_calibration_error
from ._classification import (
    accuracy,
    confusion_matrix,
    max_posterior_probability,
    weighted_accuracy,
)
from ._clustering import clustering_agreement, components_used
from ._latent import (
    active_units,
    cell_type_asw,
    latent_covariance,
    latent_unit_activity,
    n_pcs_for_variance,
)
from ._lisi import clisi, ilisi, pairwise_ilisi
from ._mixing import batch_entropy_mixing, knn_jaccard, knn_purity
from ._neighbors import nearest_neighbors, query_enrichment
from ._probe import PROBE_KS, pca_features, probe_accuracy, probe_table
from ._scib import scib_scores

__all__: list[str] = []
__all__ += [
    "accuracy",
    "batch_entropy_mixing",
    "clustering_agreement",
    "components_used",
    "clisi",
    "confusion_matrix",
    "expected_calibration_error",
    "ilisi",
    "knn_jaccard",
    "knn_purity",
    "max_posterior_probability",
    "nearest_neighbors",
    "pairwise_ilisi",
    "query_enrichment",
    "weighted_accuracy",
]

__all__ += [
    "active_units",
    "cell_type_asw",
    "latent_covariance",
    "latent_unit_activity",
    "n_pcs_for_variance",
]

__all__ += ["PROBE_KS", "pca_features", "probe_accuracy", "probe_table", "scib_scores"]
