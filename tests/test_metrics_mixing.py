"""Batch entropy mixing and k-NN purity on layouts with a closed-form answer."""

import numpy as np
import pytest

from scvi_capvi.metrics import batch_entropy_mixing, knn_jaccard, knn_purity, query_enrichment


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


def test_query_enrichment_closed_form_on_a_circle_and_a_far_cluster():
    # reference and query alternate on a circle: with k = 4 every query cell's neighbours
    # (itself left out) are the two reference and two query cells on either side: 0.5
    points, parity = _circle(40, 2)
    far = 100 + np.random.default_rng(0).normal(0, 0.01, (10, 2))  # a type only the query has
    reference, query = points[parity == 0], np.r_[points[parity == 1], far]
    scores, calibration = query_enrichment(
        reference, query, reference + 1e-3, n_neighbors=4, max_query_in_pool=len(query)
    )
    tie_break = 1 / 5  # the mean-distance tie-break stays below 1 / (k + 1)
    assert np.all((scores[:20] >= 0.5) & (scores[:20] < 0.5 + tie_break))
    assert np.all((scores[20:] >= 1) & (scores[20:] < 1 + tie_break))
    assert calibration.shape == (20,) and calibration.max() < 1
    # by default the pool takes as many query cells as reference cells (20 of the 30)
    default, _ = query_enrichment(reference, query, n_neighbors=4)
    assert not np.allclose(default, scores) and default[20:].min() >= 1
    # no query cell in the pool: every fraction is 0
    alone, none = query_enrichment(reference, query, n_neighbors=4, max_query_in_pool=0)
    assert none is None and alone.max() < tie_break


def test_query_enrichment_bad_input():
    ref = np.zeros((5, 2))
    with pytest.raises(ValueError, match="`query` has 3 dimensions"):
        query_enrichment(ref, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="`reference` contains NaN"):
        query_enrichment(np.full((5, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="`n_neighbors` must be >= 1"):
        query_enrichment(ref, np.zeros((4, 2)), n_neighbors=0)
    with pytest.raises(ValueError, match="`calibration` has 1 dimensions"):
        query_enrichment(ref, np.zeros((4, 2)), np.zeros((3, 1)))
