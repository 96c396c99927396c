"""k-nearest-neighbour graphs shared by the neighbourhood metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scib_metrics.nearest_neighbors import NeighborsResults, pynndescent
from sklearn.neighbors import NearestNeighbors

EXACT_MAX_CELLS = 50_000
"""Up to this many cells the graph is exact (scikit-learn); above it, approximate (pynndescent)."""


def nearest_neighbors(X: np.ndarray | NeighborsResults, n_neighbors: int) -> NeighborsResults:
    """Euclidean kNN graph of the rows of ``X``, each cell's own index included (first column).

    Parameters
    ----------
    X
        ``(n_cells, n_dims)`` embedding, or a precomputed
        :class:`~scib_metrics.nearest_neighbors.NeighborsResults` (returned as it is, after a
        shape check, so one graph can serve several metrics).
    n_neighbors
        Neighbours per cell, self included; capped at ``n_cells``.

    Returns
    -------
    :class:`~scib_metrics.nearest_neighbors.NeighborsResults` with ``indices`` and
    ``distances`` of shape ``(n_cells, n_neighbors)``, sorted by distance.
    """
    if isinstance(X, NeighborsResults):
        return X
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d (cells x dims) array, got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values.")
    n_neighbors = min(int(n_neighbors), X.shape[0])
    if n_neighbors < 2:
        raise ValueError(f"Need at least 2 cells and n_neighbors >= 2, got {n_neighbors}.")
    if X.shape[0] > EXACT_MAX_CELLS:
        return pynndescent(X, n_neighbors=n_neighbors, random_state=0)
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(X)
    return NeighborsResults(indices=indices, distances=distances.astype(np.float32))


def neighbors_without_self(neighbors: NeighborsResults) -> np.ndarray:
    """Neighbour indices with each row's own index removed: ``(n_cells, n_neighbors - 1)``.

    Rows whose own index is missing (possible with exact duplicates or approximate search)
    drop their last, farthest neighbour instead.
    """
    idx = np.asarray(neighbors.indices)
    is_self = idx == np.arange(idx.shape[0])[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # drop exactly one entry per row (the first self hit)
    first = is_self.argmax(axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(idx.shape[0]), first] = False
    return idx[keep].reshape(idx.shape[0], idx.shape[1] - 1)


def check_per_cell(values, n_cells: int, name: str) -> np.ndarray:
    """``values`` as an array of one entry per cell, with no missing value (clear errors)."""
    values = np.asarray(values)
    if values.shape != (n_cells,):
        raise ValueError(f"{name} must have shape ({n_cells},), got {values.shape}.")
    if pd.isna(values).any():
        raise ValueError(f"{name} contains missing values.")
    return values
