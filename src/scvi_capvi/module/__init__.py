"""Pure-torch modules (no AnnData): generative models and inference networks."""

from ._autoencoder import NBAutoencoderModule
from ._vamp import VampPriorModule

__all__ = ["NBAutoencoderModule", "VampPriorModule"]
