"""Local inverse Simpson's index (LISI): per-cell cLISI, iLISI and capVI's pairwise iLISI."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scib_metrics import lisi_knn
from scib_metrics.nearest_neighbors import NeighborsResults

from ._neighbors import check_per_cell, nearest_neighbors


def _neighbors_and_perplexity(
    X: np.ndarray | NeighborsResults, n_neighbors: int, perplexity: float | None
) -> tuple[NeighborsResults, float]:
    neighbors = nearest_neighbors(X, n_neighbors)
    if perplexity is None:
        # Harmony's default: perplexity 30 for 90 neighbours (self included)
        perplexity = float(np.floor(neighbors.n_neighbors / 3))
    if not 0 < perplexity < neighbors.n_neighbors:
        raise ValueError(
            f"perplexity must lie in (0, {neighbors.n_neighbors}) for {neighbors.n_neighbors} "
            f"neighbours, got {perplexity}."
        )
    return neighbors, perplexity


def clisi(
    X: np.ndarray | NeighborsResults,
    labels: np.ndarray,
    n_neighbors: int = 90,
    perplexity: float | None = None,
) -> np.ndarray:
    """Per-cell cell-type LISI: the effective number of cell types in each neighbourhood.

    Korsunsky et al. (2019), *Nat. Methods* 16:1289 (Harmony); computed with
    :func:`scib_metrics.lisi_knn`. Unlike scib's ``clisi_knn`` the value is not rescaled:
    it lies in ``[1, n_cell_types]`` and lower is purer (capVI, :cite:t:`Clivio22`, §4.5).

    Parameters
    ----------
    X
        ``(n_cells, n_dims)`` embedding, or a precomputed kNN graph.
    labels
        ``(n_cells,)`` cell-type labels.
    n_neighbors
        Neighbours per cell, the cell itself included (as Harmony and scib-metrics).
    perplexity
        Effective neighbourhood size of the Gaussian kernel; default ``n_neighbors // 3``.

    Returns
    -------
    ``(n_cells,)`` cLISI values.
    """
    neighbors, perplexity = _neighbors_and_perplexity(X, n_neighbors, perplexity)
    labels = check_per_cell(labels, neighbors.n_samples, "labels")
    return np.asarray(lisi_knn(neighbors, labels, perplexity=perplexity), dtype=np.float64)


def ilisi(
    X: np.ndarray | NeighborsResults,
    batch: np.ndarray,
    n_neighbors: int = 90,
    perplexity: float | None = None,
) -> np.ndarray:
    """Per-cell integration LISI: the effective number of batches in each neighbourhood.

    Korsunsky et al. (2019), *Nat. Methods* 16:1289; computed with
    :func:`scib_metrics.lisi_knn`. Not rescaled: it lies in ``[1, n_batches]``, higher is
    better mixed. See :func:`pairwise_ilisi` for capVI's variant bounded by 2.

    Parameters
    ----------
    X
        ``(n_cells, n_dims)`` embedding, or a precomputed kNN graph.
    batch
        ``(n_cells,)`` batch labels.
    n_neighbors
        Neighbours per cell, the cell itself included.
    perplexity
        Effective neighbourhood size; default ``n_neighbors // 3``.

    Returns
    -------
    ``(n_cells,)`` iLISI values.
    """
    return clisi(X, batch, n_neighbors=n_neighbors, perplexity=perplexity)


def neighbor_probabilities(
    neighbors: NeighborsResults,
    perplexity: float,
    tol: float = 1e-5,
    max_iter: int = 50,
) -> np.ndarray:
    """Gaussian-kernel weights over each cell's neighbours, calibrated to ``perplexity``.

    The binary search on the kernel precision of Harmony's ``compute_simpson_index`` (as in
    ``scib_metrics.utils.compute_simpson_index``), run for all cells at once; the cell itself
    gets weight 0.

    Returns
    -------
    ``(n_cells, n_neighbors)`` weights, each row summing to 1 (or all 0 when degenerate).
    """
    dists = np.asarray(neighbors.distances, dtype=np.float64)
    idx = np.asarray(neighbors.indices)
    not_self = idx != np.arange(idx.shape[0])[:, None]
    n_cells = dists.shape[0]
    target = np.log(perplexity)

    def entropy_and_weights(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P = np.where(not_self, np.exp(-dists * beta[:, None]), 0.0)
        total = P.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        H = np.where(total > 0, np.log(safe) + beta * (dists * P).sum(axis=1) / safe, 0.0)
        return H, P / safe[:, None]

    beta = np.ones(n_cells)
    lo = np.full(n_cells, -np.inf)
    hi = np.full(n_cells, np.inf)
    H, P = entropy_and_weights(beta)
    diff = H - target
    for _ in range(max_iter):
        active = np.abs(diff) >= tol
        if not active.any():
            break
        up = active & (diff > 0)  # too flat: sharpen the kernel
        down = active & (diff <= 0)
        lo = np.where(up, beta, lo)
        hi = np.where(down, beta, hi)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2), beta)
        beta = np.where(down, np.where(np.isinf(lo), beta / 2, (beta + lo) / 2), beta)
        H_new, P_new = entropy_and_weights(beta)
        H = np.where(active, H_new, H)
        P = np.where(active[:, None], P_new, P)
        diff = H - target
    return P


def pairwise_ilisi(
    X: np.ndarray | NeighborsResults,
    batch: np.ndarray,
    n_neighbors: int = 90,
    perplexity: float | None = None,
) -> np.ndarray:
    """Per-cell pairwise iLISI of capVI (:cite:t:`Clivio22`, §4.5), in ``[1, 2]``.

    For a cell of batch ``a`` and each other batch ``b`` present among its neighbours, the
    LISI over ``{a, b}`` alone: with ``p_a``, ``p_b`` the kernel mass of the two batches in the
    neighbourhood (Harmony's perplexity-calibrated weights), the inverse Simpson index of
    ``(p_a, p_b) / (p_a + p_b)``, i.e. the LISI the cell would have if the neighbourhood held
    only cells of ``a`` and ``b``. The cell's value is the median over ``b``; 1 when no other
    batch is in its neighbourhood. With two batches it equals :func:`ilisi`.

    Parameters
    ----------
    X
        ``(n_cells, n_dims)`` embedding, or a precomputed kNN graph.
    batch
        ``(n_cells,)`` batch labels.
    n_neighbors
        Neighbours per cell, the cell itself included.
    perplexity
        Effective neighbourhood size; default ``n_neighbors // 3``.

    Returns
    -------
    ``(n_cells,)`` values in ``[1, 2]``.
    """
    neighbors, perplexity = _neighbors_and_perplexity(X, n_neighbors, perplexity)
    batch = check_per_cell(batch, neighbors.n_samples, "batch")
    codes = np.asarray(pd.Categorical(batch).codes)
    n_cells, n_batches = neighbors.n_samples, int(codes.max()) + 1

    weights = neighbor_probabilities(neighbors, perplexity)
    idx = np.asarray(neighbors.indices)
    not_self = idx != np.arange(n_cells)[:, None]
    neighbor_codes = codes[idx]
    flat = (np.arange(n_cells)[:, None] * n_batches + neighbor_codes).ravel()
    size = n_cells * n_batches
    mass = np.bincount(flat, weights.ravel(), minlength=size).reshape(n_cells, n_batches)
    present = np.bincount(flat, not_self.ravel(), minlength=size).reshape(n_cells, n_batches) > 0

    own = mass[np.arange(n_cells), codes][:, None]
    numerator = (own + mass) ** 2
    denominator = own**2 + mass**2
    pair = np.divide(numerator, denominator, out=np.ones_like(mass), where=denominator > 0)
    other = present.copy()
    other[np.arange(n_cells), codes] = False
    pair = np.where(other, pair, np.nan)
    result = np.ones(n_cells)
    has_other = other.any(axis=1)
    result[has_other] = np.nanmedian(pair[has_other], axis=1)
    return result
