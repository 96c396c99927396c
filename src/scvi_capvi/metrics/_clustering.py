"""Agreement of a clustering with an annotation (GMVAE components, k-means, Leiden)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def clustering_agreement(labels, clusters) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information of ``clusters`` against ``labels``.

    Both are 1 for the same partition up to renaming; the ARI is 0 in expectation for a
    random one. Thin wrappers of :func:`sklearn.metrics.adjusted_rand_score` and
    :func:`sklearn.metrics.normalized_mutual_info_score` (arithmetic normalisation).

    Parameters
    ----------
    labels, clusters
        ``(n_cells,)`` annotation and cluster assignment (any hashable values).
    """
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError(
            f"`labels` and `clusters` must be 1-d of the same length, got {labels.shape} "
            f"and {clusters.shape}."
        )
    return {
        "ari": float(adjusted_rand_score(labels, clusters)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
    }


def components_used(clusters, n_components: int, min_fraction: float = 0.01) -> int:
    """Number of the ``n_components`` integer components holding at least ``min_fraction`` of
    the cells (a collapsed mixture uses few)."""
    clusters = np.asarray(clusters, dtype=int)
    if clusters.size == 0:
        raise ValueError("`clusters` is empty.")
    if clusters.min() < 0 or clusters.max() >= n_components:
        raise ValueError(f"`clusters` must hold integers in [0, {n_components}).")
    fraction = np.bincount(clusters, minlength=n_components) / clusters.size
    return int((fraction >= min_fraction).sum())
