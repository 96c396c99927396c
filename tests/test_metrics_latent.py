"""Latent-space metrics of paper 001 on toy embeddings with known answers."""

import numpy as np
import pytest

from scvi_capvi.metrics import (
    active_units,
    cell_type_asw,
    latent_covariance,
    latent_unit_activity,
    n_pcs_for_variance,
)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_active_units_counts_dims_above_threshold(rng):
    # dims 0, 4, 7 vary (variance ~1, 0.25, 0.04); the rest vary by ~1e-4 or not at all
    means = rng.normal(scale=0.01, size=(2000, 10))
    means[:, 3] = 5.0
    means[:, 0] = rng.normal(scale=1.0, size=2000)
    means[:, 4] = rng.normal(scale=0.5, size=2000)
    means[:, 7] = rng.normal(scale=0.2, size=2000)
    n, mask = active_units(means, return_mask=True)
    assert n == 3
    assert mask.nonzero()[0].tolist() == [0, 4, 7]
    assert active_units(means) == 3
    # the paper's 0.01 threshold is the default; a stricter one drops the 0.04-variance unit
    assert active_units(means, threshold=0.1) == 2
    np.testing.assert_allclose(latent_unit_activity(means)[0], 1.0, rtol=0.1)


def test_n_pcs_for_variance_on_a_plane(rng):
    coeffs = rng.normal(size=(500, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0].T  # 2 orthonormal directions in 10-D
    plane = coeffs @ basis + 7.0
    assert n_pcs_for_variance(plane, 0.95) == 2
    # the first axis carries ~90 % of the variance
    assert n_pcs_for_variance(plane, 0.5) == 1
    # isotropic 10-D data needs nearly every component for 95 %
    assert n_pcs_for_variance(rng.normal(size=(2000, 10)), 0.95) >= 9
    assert n_pcs_for_variance(np.ones((5, 3))) == 0
    with pytest.raises(ValueError, match="fraction"):
        n_pcs_for_variance(plane, 0.0)


def test_cell_type_asw_separated_vs_mixed(rng):
    labels = np.repeat(np.array(["a", "b", "c"]), 100)
    centres = np.array([[0, 0], [50, 0], [0, 50]])
    tight = centres[np.repeat(np.arange(3), 100)] + rng.normal(size=(300, 2))
    assert cell_type_asw(tight, labels) > 0.9
    assert cell_type_asw(tight, labels, rescale=True) > 0.95
    mixed = rng.normal(size=(300, 2))
    assert abs(cell_type_asw(mixed, labels)) < 0.1
    with pytest.raises(ValueError, match="two distinct"):
        cell_type_asw(tight, np.zeros(300))


def test_latent_covariance_matches_construction(rng):
    z = rng.normal(size=(20000, 2))
    z[:, 1] = 0.5 * z[:, 0] + np.sqrt(0.75) * z[:, 1]
    cov = latent_covariance(z)
    assert cov.shape == (2, 2)
    np.testing.assert_allclose(cov, [[1.0, 0.5], [0.5, 1.0]], atol=0.05)
    with pytest.raises(ValueError, match="NaN"):
        latent_covariance(np.array([[np.nan, 1.0], [0.0, 1.0]]))
