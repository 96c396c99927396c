"""Pure-torch modules (no AnnData): generative models and inference networks."""

from ._autoencoder import NBAutoencoderModule
from ._capvi import CapVIModule
from ._priors import GaussianMixturePrior, VampPrior
from ._vamp import VampPriorModule

__all__ = [
    "CapVIModule",
    "GaussianMixturePrior",
    "NBAutoencoderModule",
    "VampPrior",
    "VampPriorModule",
]
