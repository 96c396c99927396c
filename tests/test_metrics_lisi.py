"""LISI metrics on layouts with a known answer."""

import numpy as np
import pytest

from scvi_capvi.metrics import clisi, ilisi, nearest_neighbors, pairwise_ilisi


def _mixed_sites(n_batches: int, per_batch: int = 10, seed: int = 0):
    """A 6 x 6 grid of tight sites, each holding ``per_batch`` cells of every batch."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2).astype(float)
    n_per_site = n_batches * per_batch
    X = np.repeat(grid, n_per_site, axis=0) + rng.normal(scale=0.05, size=(36 * n_per_site, 2))
    batch = np.tile(np.arange(n_batches), 36 * per_batch)
    return X, batch


def _separated(n_groups: int, n_per_group: int = 120, seed: int = 0):
    """Groups of cells 100 units apart: every neighbourhood is pure."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(n_per_group, 3)) + 100 * g for g in range(n_groups)])
    return X, np.repeat([f"g{g}" for g in range(n_groups)], n_per_group)


@pytest.fixture(scope="module")
def mixed3():
    X, batch = _mixed_sites(3)
    return nearest_neighbors(X, 90), batch


def test_ilisi_perfectly_mixed_is_n_batches(mixed3):
    neighbors, batch = mixed3
    values = ilisi(neighbors, batch)
    assert values.shape == batch.shape
    assert abs(np.median(values) - 3) < 0.05
    assert values.min() > 2.8 and values.max() <= 3 + 1e-4


def test_ilisi_and_clisi_separated_are_one():
    X, groups = _separated(3)
    np.testing.assert_allclose(ilisi(X, groups), 1.0, atol=1e-3)
    np.testing.assert_allclose(clisi(X, groups), 1.0, atol=1e-3)
    np.testing.assert_allclose(pairwise_ilisi(X, groups), 1.0, atol=1e-6)


def test_clisi_counts_types_in_mixed_neighbourhoods(mixed3):
    neighbors, labels = mixed3
    # as labels, the three interleaved groups are three types in every neighbourhood
    assert abs(np.median(clisi(neighbors, labels)) - 3) < 0.05


def test_pairwise_ilisi_bounded_by_two(mixed3):
    neighbors, batch = mixed3
    values = pairwise_ilisi(neighbors, batch)
    assert abs(np.median(values) - 2) < 0.02
    assert values.min() > 1.9 and values.max() <= 2 + 1e-9


def test_pairwise_ilisi_equals_ilisi_for_two_batches():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 4))
    batch = rng.choice(["a", "b"], size=600)
    # our vectorised kernel calibration against scib-metrics' lisi_knn
    np.testing.assert_allclose(pairwise_ilisi(X, batch), ilisi(X, batch), atol=1e-3)


def test_pairwise_ilisi_mixed_pair_and_isolated_batch():
    X, batch = _mixed_sites(2)
    far = np.random.default_rng(2).normal(scale=0.05, size=(200, 2)) + 1000
    X = np.concatenate([X, far])
    batch = np.concatenate([batch.astype(str), ["iso"] * 200])
    values = pairwise_ilisi(X, batch)
    assert np.all(values[batch == "iso"] == 1.0)
    assert np.median(values[batch != "iso"]) > 1.95
    # iLISI over all three batches sees only two in any neighbourhood
    assert ilisi(X, batch).max() < 2 + 1e-4


def test_lisi_rejects_bad_input():
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="shape"):
        ilisi(X, np.zeros(9))
    with pytest.raises(ValueError, match="NaN"):
        clisi(np.full((10, 2), np.nan), np.zeros(10))
