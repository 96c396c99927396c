"""Non-generative negative-binomial autoencoder: :cite:t:`Dony20`'s AE reference column."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import FCLayers
from torch import nn

from ._nb import _NBGenerativeMixin, build_nb_decoder
from ._utils import normalize_log1p

if TYPE_CHECKING:
    from typing import Literal

    from torch.distributions import Distribution


class NBAutoencoderModule(_NBGenerativeMixin, BaseModuleClass):
    """Deterministic autoencoder trained on the NB reconstruction loss only (DCA-style).

    :cite:t:`Dony20` (§2) use it as the non-generative reference: same input layer (counts
    scaled to 10,000 per cell, ``log1p``), same NB decoder as :class:`VampPriorModule`, no KL
    term. The encoder is scvi-tools' ``FCLayers`` followed by a linear bottleneck; batch is
    injected as in the VAE. The observed library size scales the decoded mean.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches; ``0`` or ``1`` for none.
    n_labels
        Unused; kept for the scvi-tools model interface.
    n_hidden
        Nodes per hidden layer.
    n_latent
        Bottleneck size.
    n_layers
        Hidden layers of encoder and decoder.
    dropout_rate
        Dropout in the encoder.
    decoder
        ``"nonlinear"`` or ``"linear"``.
    dispersion
        ``"gene"`` or ``"gene-batch"``.
    gene_likelihood
        ``"nb"`` or ``"zinb"``.
    use_batch_norm, use_layer_norm
        Where to use batch / layer norm, as in :class:`VampPriorModule`.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        decoder: Literal["nonlinear", "linear"] = "nonlinear",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        gene_likelihood: Literal["nb", "zinb"] = "nb",
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "decoder",
        use_layer_norm: Literal["encoder", "decoder", "none", "both"] = "encoder",
    ):
        super().__init__()
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.dispersion = dispersion
        self.gene_likelihood = gene_likelihood
        self.decoder_type = decoder
        self._init_dispersion(dispersion, n_input, n_batch)
        self.encoder = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_cat_list=[n_batch],
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm in ("encoder", "both"),
            use_layer_norm=use_layer_norm in ("encoder", "both"),
        )
        self.bottleneck = nn.Linear(n_hidden, n_latent)
        self.decoder = build_nb_decoder(
            decoder,
            n_latent,
            n_input,
            n_batch,
            n_layers,
            n_hidden,
            use_batch_norm in ("decoder", "both"),
            use_layer_norm in ("decoder", "both"),
        )

    @auto_move_data
    def inference(
        self, x: torch.Tensor, batch_index: torch.Tensor, n_samples: int = 1
    ) -> dict[str, torch.Tensor]:
        """Deterministic code ``z``; repeated ``n_samples`` times for the mixins' interface."""
        z = self.bottleneck(self.encoder(normalize_log1p(x), batch_index))
        library = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
        if n_samples > 1:
            z = z.unsqueeze(0).expand(n_samples, -1, -1)
            library = library.unsqueeze(0).expand(n_samples, -1, -1)
        return {MODULE_KEYS.Z_KEY: z, MODULE_KEYS.LIBRARY_KEY: library}

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        transform_batch: int | None = None,
    ) -> dict[str, Distribution]:
        """Decode ``z`` into ``p(x | z, l, s)``."""
        return {MODULE_KEYS.PX_KEY: self._px(z, library, batch_index, transform_batch)}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """NB negative log-likelihood per cell (:cite:t:`Dony20`, Eq. 1); no KL."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        reconst_loss = -generative_outputs[MODULE_KEYS.PX_KEY].log_prob(x).sum(-1)
        return LossOutput(
            loss=reconst_loss.mean(),
            reconstruction_loss=reconst_loss,
            kl_local=torch.zeros_like(reconst_loss),
        )

    @torch.inference_mode()
    def sample(self, tensors: dict[str, torch.Tensor], n_samples: int = 1) -> torch.Tensor:
        """Counts drawn from ``p(x | z(x))``."""
        _, gen = self.forward(
            tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
        )
        samples = gen[MODULE_KEYS.PX_KEY].sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()
