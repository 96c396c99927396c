"""User-facing models (AnnData in, latent spaces and predictions out)."""

from ._autoencoder import NBAutoencoder
from ._capvi import CapVI
from ._marginal_ll import ImportanceSampledLLMixin
from ._vampvi import VampVI

__all__ = ["CapVI", "ImportanceSampledLLMixin", "NBAutoencoder", "VampVI"]
