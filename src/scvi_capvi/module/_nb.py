"""The negative-binomial decoders of VampVI's module and the NB autoencoder, and the
autoencoder's generative pieces (VampVI's module has them from scvi-tools' ``VAE``;
:cite:t:`Dony20`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module._constants import MODULE_KEYS
from scvi.nn import DecoderSCVI, LinearDecoderSCVI
from torch import nn
from torch.nn.functional import one_hot

if TYPE_CHECKING:
    from typing import Literal

    from torch.distributions import Distribution


def build_nb_decoder(
    decoder: Literal["nonlinear", "linear"],
    n_latent: int,
    n_input: int,
    n_batch: int,
    n_layers: int,
    n_hidden: int,
    use_batch_norm: bool,
    use_layer_norm: bool,
) -> nn.Module:
    """scvi-tools' own decoders: ``DecoderSCVI`` (scVI) or ``LinearDecoderSCVI`` (LDVAE)."""
    if decoder == "nonlinear":
        return DecoderSCVI(
            n_latent,
            n_input,
            n_cat_list=[n_batch],
            n_layers=n_layers,
            n_hidden=n_hidden,
            inject_covariates=True,
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
        )
    if decoder == "linear":
        return LinearDecoderSCVI(
            n_latent,
            n_input,
            n_cat_list=[n_batch],
            use_batch_norm=use_batch_norm,
            use_layer_norm=False,
            bias=False,
        )
    raise ValueError(f"`decoder` must be 'nonlinear' or 'linear', got {decoder!r}.")


class _NBGenerativeMixin:
    """Count likelihood ``x | z, l, s`` of the reference autoencoder (as ``VAE.generative``)."""

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict
    ) -> dict[str, torch.Tensor]:
        return {
            MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
            MODULE_KEYS.LIBRARY_KEY: inference_outputs[MODULE_KEYS.LIBRARY_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _init_dispersion(self, dispersion: str, n_input: int, n_batch: int) -> None:
        if dispersion == "gene":
            self.px_r = nn.Parameter(torch.randn(n_input))
        elif dispersion == "gene-batch":
            self.px_r = nn.Parameter(torch.randn(n_input, max(n_batch, 1)))
        else:
            raise ValueError(f"`dispersion` must be 'gene' or 'gene-batch', got {dispersion!r}.")
        if self.gene_likelihood not in ("nb", "zinb"):
            raise ValueError(
                f"`gene_likelihood` must be 'nb' or 'zinb', got {self.gene_likelihood!r}."
            )

    def _px(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        transform_batch: int | None = None,
    ) -> Distribution:
        if transform_batch is not None:
            batch_index = torch.ones_like(batch_index) * transform_batch
        px_scale, _, px_rate, px_dropout = self.decoder("gene", z, library, batch_index)
        if self.dispersion == "gene-batch":
            px_r = one_hot(batch_index.squeeze(-1).long(), max(self.n_batch, 1)).float()
            px_r = px_r @ self.px_r.T
        else:
            px_r = self.px_r
        px_r = torch.exp(px_r)
        if self.gene_likelihood == "zinb":
            return ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=px_r, zi_logits=px_dropout, scale=px_scale
            )
        return NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale)
