"""Harmonisation metrics of scVI / scANVI (:cite:t:`Xu21`): batch entropy mixing and k-NN
purity."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scib_metrics.nearest_neighbors import NeighborsResults

from ._neighbors import check_per_cell, nearest_neighbors, neighbors_without_self


def _codes(values, n_cells: int, name: str) -> np.ndarray:
    return np.asarray(pd.Categorical(check_per_cell(values, n_cells, name)).codes)


def batch_entropy_mixing(
    X: np.ndarray | NeighborsResults,
    batch: np.ndarray,
    n_neighbors: int = 50,
    n_pools: int = 100,
    n_samples_per_pool: int = 100,
    seed: int = 0,
) -> float:
    """Entropy of batch mixing (Haghverdi et al. 2018; :cite:t:`Xu21`).

    For a cell ``U`` drawn uniformly at random, the empirical batch frequencies among its
    ``n_neighbors`` nearest neighbours (``U`` itself excluded) define a categorical variable;
    its entropy (natural log) is averaged over ``n_samples_per_pool`` cells, then over
    ``n_pools`` pools, as in scVI's ``entropy_batch_mixing``. Generalised from two to any
    number of batches: the value lies in ``[0, log(n_batches)]``, higher is better mixed.

    Parameters
    ----------
    X
        ``(n_cells, n_dims)`` embedding (Euclidean), or a precomputed kNN graph with self.
    batch
        ``(n_cells,)`` batch labels.
    n_neighbors
        Neighbours per cell, not counting the cell itself.
    n_pools, n_samples_per_pool
        Number of pools and cells drawn (with replacement) per pool.
    seed
        Seed of the cell sampling.

    Returns
    -------
    Mean entropy, in nats.
    """
    neighbors = nearest_neighbors(X, n_neighbors + 1)
    codes = _codes(batch, neighbors.n_samples, "batch")
    idx = neighbors_without_self(neighbors)
    n_cells, n_batches = idx.shape[0], int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, n_cells, size=(n_pools, n_samples_per_pool)).ravel()

    neighbor_codes = codes[idx[cells]]
    counts = np.zeros((cells.size, n_batches))
    np.add.at(counts, (np.arange(cells.size)[:, None], neighbor_codes), 1.0)
    freq = counts / counts.sum(axis=1, keepdims=True)
    entropy = -np.sum(freq * np.log(np.where(freq > 0, freq, 1.0)), axis=1)
    return float(entropy.reshape(n_pools, n_samples_per_pool).mean(axis=1).mean())


def knn_purity(
    X: np.ndarray | NeighborsResults,
    labels: np.ndarray,
    n_neighbors: int = 30,
) -> float:
    """k-NN label purity, averaged per cell type (scVI's ``knn_purity``, :cite:t:`Xu21` code).

    Each cell's score is the fraction of its ``n_neighbors`` nearest neighbours (itself
    excluded) that share its label; the scores are averaged within each label, then over
    labels, so every cell type counts equally. In ``[0, 1]``, higher is purer.

    For the paper's Online-Methods definition (overlap of a cell's neighbours in a
    single-batch latent space and in the harmonised one), see :func:`knn_jaccard`.
    """
    neighbors = nearest_neighbors(X, n_neighbors + 1)
    codes = _codes(labels, neighbors.n_samples, "labels")
    idx = neighbors_without_self(neighbors)
    per_cell = (codes[idx] == codes[:, None]).mean(axis=1)
    per_label = np.bincount(codes, per_cell) / np.bincount(codes)
    return float(per_label[np.bincount(codes) > 0].mean())


def knn_jaccard(
    X_reference: np.ndarray,
    X: np.ndarray,
    n_neighbors: int = 30,
) -> np.ndarray:
    """Per-cell Jaccard index of the kNN sets of the same cells in two embeddings.

    The building block of :cite:t:`Xu21`'s k-NN purity (Online Methods): for the cells of one
    batch, ``X_reference`` is their latent space from a model fitted on that batch alone and
    ``X`` their rows of the harmonised latent space; the paper averages the per-cell values,
    then averages over batches. In ``[0, 1]``, higher keeps more of the original structure.

    Parameters
    ----------
    X_reference, X
        ``(n_cells, ·)`` embeddings of the same cells, rows aligned.
    n_neighbors
        Neighbours per cell, not counting the cell itself.

    Returns
    -------
    ``(n_cells,)`` Jaccard indices ``|A ∩ B| / |A ∪ B|``.
    """
    X_reference, X = np.asarray(X_reference), np.asarray(X)
    if X_reference.shape[0] != X.shape[0]:
        raise ValueError(
            f"X_reference and X must have the same cells, got {X_reference.shape[0]} and "
            f"{X.shape[0]} rows."
        )
    a = neighbors_without_self(nearest_neighbors(X_reference, n_neighbors + 1))
    b = neighbors_without_self(nearest_neighbors(X, n_neighbors + 1))
    # each row of a and of b holds distinct indices: shared ones appear twice once merged
    merged = np.sort(np.hstack([a, b]), axis=1)
    intersection = (merged[:, 1:] == merged[:, :-1]).sum(axis=1)
    union = a.shape[1] + b.shape[1] - intersection
    return intersection / union
