"""Latent-space and classification metrics: pure functions of arrays, no models."""

from ._latent import (
    active_units,
    cell_type_asw,
    latent_covariance,
    latent_unit_activity,
    n_pcs_for_variance,
)

__all__: list[str] = []

__all__ += [
    "active_units",
    "cell_type_asw",
    "latent_covariance",
    "latent_unit_activity",
    "n_pcs_for_variance",
]
