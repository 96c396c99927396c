"""Batch entropy mixing and k-NN purity on layouts with a closed-form answer."""

import numpy as np
import pytest

from scvi_capvi.metrics import batch_entropy_mixing, knn_jaccard, knn_purity


def _circle(n_cells: int, n_batches: int):
    """Cells evenly spaced on a circle with batches repeating a, b, c, a, b, c, ...

    With ``n_neighbors = 2 m`` and ``m`` a multiple of ``n_batches`` (the cell itself left
    out), each cell's neighbours are the ``m`` cells on either side: ``2 m / n_batches`` of
    every batch, a perfectly uniform neighbourhood.
    """
    angle = 2 * np.pi * np.arange(n_cells) / n_cells
    return np.c_[np.cos(angle), np.sin(angle)], np.arange(n_cells) % n_batches


@pytest.mark.parametrize(("n_batches", "n_neighbors"), [(2, 20), (3, 18)])
def test_bem_uniform_neighbourhood_is_max_entropy(n_batches, n_neighbors):
    X, batch = _circle(300, n_batches)
    value = batch_entropy_mixing(X, batch, n_neighbors=n_neighbors, n_pools=5)
    # natural log, as scVI's entropy_batch_mixing
    assert value == pytest.approx(np.log(n_batches), abs=1e-12)


def test_bem_pure_neighbourhoods_is_zero():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 50])
    batch = np.repeat(["x", "y"], 100)
    assert batch_entropy_mixing(X, batch, n_neighbors=50) == 0.0


def test_bem_is_seeded():
    rng = np.random.default_rng(1)
    X, batch = rng.normal(size=(300, 2)), rng.integers(0, 2, 300)
    first = batch_entropy_mixing(X, batch, n_pools=3, seed=4)
    assert first == batch_entropy_mixing(X, batch, n_pools=3, seed=4)
    assert 0 < first < np.log(2)


def test_knn_purity():
    X, labels = _circle(300, 2)
    assert knn_purity(X, labels, n_neighbors=20) == pytest.approx(0.5)  # 10 of 20 alike
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(20, 2)) + 50])
    labels = np.repeat(["big", "small"], [60, 20])
    assert knn_purity(X, labels, n_neighbors=10) == 1.0


def test_knn_jaccard():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    np.testing.assert_allclose(knn_jaccard(X, 3 * X + 1, n_neighbors=10), 1.0)
    # 1-d, two neighbours each: cells 2 and 3 swap places between the embeddings
    reference = np.array([[0.0], [1], [2], [10], [11], [12]])
    moved = np.array([[0.0], [1], [10], [2], [11], [12]])
    expected = [1 / 3, 1 / 3, 0, 0, 1 / 3, 1 / 3]
    np.testing.assert_allclose(knn_jaccard(reference, moved, n_neighbors=2), expected)
