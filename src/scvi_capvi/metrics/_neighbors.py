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


def query_enrichment(
    reference: np.ndarray,
    query: np.ndarray,
    calibration: np.ndarray | None = None,
    n_neighbors: int = 50,
    max_query_in_pool: int | None = None,
    chunk_size: int = 50_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """How much more of a cell's neighbourhood is query than reference: a transductive
    novelty score.

    The reference cells and (a random subset of) the query cells form one pool; each query
    cell's ``n_neighbors`` nearest pool cells (itself excluded) are counted, and its score is
    the fraction that are query cells. Cells of a type the reference has are surrounded by
    reference and query cells in the pool's proportions; cells of a type it lacks only by
    query cells, however close that type sits to a known one. A k-nearest-neighbour
    two-sample classifier of query against reference (Friedman 2003; Schilling 1986);
    ``calibration`` cells (held-out reference cells, not in the pool) get the same score,
    so a split-conformal threshold on them holds for the query's cells of known types.

    Ties between equal fractions are broken by the mean distance to the ``n_neighbors``
    neighbours (farther scores higher), never across fractions.

    Parameters
    ----------
    reference
        ``(n_reference, n_dims)`` embedding of reference cells (known types).
    query
        ``(n_query, n_dims)`` embedding of the cells to score, in the same space.
    calibration
        Optional ``(n_calibration, n_dims)`` embedding of held-out reference cells.
    n_neighbors
        Neighbours per cell.
    max_query_in_pool
        At most this many query cells (drawn at random) join the pool; every query cell is
        scored. Default: as many as the reference has, so neither side outnumbers the other.
    chunk_size
        Cells searched at once (bounds memory for large queries).
    seed
        Seed of the query subset.

    Returns
    -------
    Scores of the query cells and of the calibration cells (``None`` without them), in
    ``[0, 1 + 1 / (n_neighbors + 1))``: higher = more of the neighbourhood is query.
    """
    reference = _embedding(reference, "reference")
    query = _embedding(query, "query")
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"`query` has {query.shape[1]} dimensions, `reference` {reference.shape[1]}."
        )
    n_neighbors = int(n_neighbors)
    if n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be >= 1, got {n_neighbors}.")
    limit = len(reference) if max_query_in_pool is None else int(max_query_in_pool)
    rng = np.random.default_rng(seed)
    in_pool = np.sort(rng.choice(len(query), min(limit, len(query)), replace=False))
    pool = np.concatenate([reference, query[in_pool]])
    k = min(n_neighbors, len(pool) - 1)
    if k < 1:
        raise ValueError("Need at least 2 cells in the reference and query together.")
    is_query = np.r_[np.zeros(len(reference), bool), np.ones(len(in_pool), bool)]
    # each query cell's own position in the pool (-1 when it is not in it)
    own = np.full(len(query), -1)
    own[in_pool] = len(reference) + np.arange(len(in_pool))
    search = NearestNeighbors(n_neighbors=k + 1).fit(pool)

    def score(cells: np.ndarray, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(cells))
        for start in range(0, len(cells), chunk_size):
            stop = start + chunk_size
            dist, idx = search.kneighbors(cells[start:stop], n_neighbors=k + 1)
            drop = idx == positions[start:stop, None]
            # no self hit: drop the farthest instead, so every cell counts k neighbours
            drop[~drop.any(1), -1] = True
            keep = ~drop
            fraction = (is_query[idx] & keep).sum(1) / k
            spread = (dist * keep).sum(1) / k
            out[start:stop] = fraction + spread / (1 + spread) / (k + 1)
        return out

    query_scores = score(query, own)
    if calibration is None:
        return query_scores, None
    calibration = _embedding(calibration, "calibration")
    if calibration.shape[1] != reference.shape[1]:
        raise ValueError(
            f"`calibration` has {calibration.shape[1]} dimensions, `reference` "
            f"{reference.shape[1]}."
        )
    return query_scores, score(calibration, np.full(len(calibration), -1))


def _embedding(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-d (cells x dims) array, got {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return X
