"""Latent-space metrics of :cite:t:`Dony20`."""

from __future__ import annotations

import numpy as np
from scib_metrics import silhouette_label
from sklearn.decomposition import PCA

ACTIVE_UNIT_THRESHOLD = 0.01


def _as_2d(latent: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(latent, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D (cells × dims) array, got shape {x.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"`{name}` needs at least 2 cells, got {x.shape[0]}.")
    if not np.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def latent_unit_activity(latent_means: np.ndarray) -> np.ndarray:
    """Activity ``A_z = diag(Cov_x(E_q[z]))`` of each latent unit (:cite:t:`Dony20`, Eq. 2;
    Burda et al.).

    Parameters
    ----------
    latent_means
        ``(n_cells, n_latent)`` posterior means ``E_q(z|x)[z]``, one row per cell.

    Returns
    -------
    ``(n_latent,)`` variance over cells of each unit's posterior mean.
    """
    return _as_2d(latent_means, "latent_means").var(axis=0, ddof=1)


def active_units(
    latent_means: np.ndarray,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
    return_mask: bool = False,
) -> int | tuple[int, np.ndarray]:
    """Number of active latent units (:cite:t:`Dony20`, Eq. 2, Table 1 first value).

    Unit ``i`` is active if ``A_{z_i} = Var_x(E_q[z_i]) > threshold`` (paper: 0.01).

    Parameters
    ----------
    latent_means
        ``(n_cells, n_latent)`` posterior means.
    threshold
        Activity above which a unit counts as active.
    return_mask
        Also return the boolean ``(n_latent,)`` mask of active units.

    Returns
    -------
    The count, or ``(count, mask)``.
    """
    mask = latent_unit_activity(latent_means) > threshold
    return (int(mask.sum()), mask) if return_mask else int(mask.sum())


def n_pcs_for_variance(latent: np.ndarray, fraction: float = 0.95) -> int:
    """Fewest principal components explaining ``fraction`` of the latent variance.

    :cite:t:`Dony20` (Table 1, second value; §3.4) use it as a compactness measure with 95 %.

    Parameters
    ----------
    latent
        ``(n_cells, n_latent)`` embedding.
    fraction
        Fraction of total variance in ``(0, 1]``.

    Returns
    -------
    Number of components; 0 if the embedding has no variance.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
    x = _as_2d(latent, "latent")
    if x.var(axis=0).sum() == 0:
        return 0
    ratio = PCA().fit(x).explained_variance_ratio_
    # tolerance so that exactly-representable fractions (e.g. 1.0) are not missed by rounding
    return int(np.searchsorted(np.cumsum(ratio), fraction - 1e-9) + 1)


def cell_type_asw(
    latent: np.ndarray, labels: np.ndarray, rescale: bool = False, chunk_size: int = 256
) -> float:
    """Average silhouette width of cell-type labels in the embedding (:cite:t:`Dony20`, Table 2).

    ``ASW = mean over cells of (b - a) / max(a, b)`` with ``a`` the mean distance to the
    cell's own type and ``b`` to the nearest other type (Rousseeuw 1987), computed by
    scib-metrics' ``silhouette_label``.

    Parameters
    ----------
    latent
        ``(n_cells, n_latent)`` embedding.
    labels
        ``(n_cells,)`` cell-type labels (at least two distinct values).
    rescale
        Return ``(ASW + 1) / 2`` in ``[0, 1]`` (scIB convention) instead of the raw value in
        ``[-1, 1]`` that :cite:t:`Dony20` reports.
    chunk_size
        Cells per distance chunk.
    """
    x = _as_2d(latent, "latent")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"`labels` must have shape ({x.shape[0]},), got {labels.shape}.")
    if np.unique(labels).size < 2:
        raise ValueError("ASW needs at least two distinct cell types.")
    return float(silhouette_label(x, labels, rescale=rescale, chunk_size=chunk_size))


def latent_covariance(latent: np.ndarray) -> np.ndarray:
    """``(n_latent, n_latent)`` covariance of the embedding over cells (:cite:t:`Dony20`,
    Fig. 2)."""
    return np.cov(_as_2d(latent, "latent"), rowvar=False)
