"""Latent-space and classification metrics: pure functions of arrays, no models."""

__all__: list[str] = []
