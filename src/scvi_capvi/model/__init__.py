"""User-facing models (AnnData in, latent spaces and predictions out)."""

from ._mixins import ImportanceSampledLLMixin

__all__ = ["ImportanceSampledLLMixin"]
