"""NBAutoencoder: the non-generative reference model of :cite:t:`Dony20`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.model.base import BaseModelClass, RNASeqMixin, VAEMixin

from ..module import NBAutoencoderModule
from ._anndata_checks import AnnDataChecksMixin
from ._fields import CountsSetupMixin
from ._io import SafeSaveLoadMixin
from ._training import RobustTrainingMixin

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    from anndata import AnnData


class NBAutoencoder(
    CountsSetupMixin,
    SafeSaveLoadMixin,
    AnnDataChecksMixin,
    VAEMixin,
    RNASeqMixin,
    RobustTrainingMixin,
    BaseModelClass,
):
    """Deterministic negative-binomial autoencoder (DCA-style; :cite:t:`Dony20`'s "AE" column).

    Trained on the NB reconstruction loss only; no prior, no KL, no marginal likelihood.
    Registered with the same fields as :class:`~scvi_capvi.model.VampVI`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
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
    **module_kwargs
        Passed to :class:`~scvi_capvi.module.NBAutoencoderModule`.
    """

    _module_cls = NBAutoencoderModule

    def __init__(
        self,
        adata: AnnData,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        decoder: Literal["nonlinear", "linear"] = "nonlinear",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        gene_likelihood: Literal["nb", "zinb"] = "nb",
        **module_kwargs,
    ):
        super().__init__(adata)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=self.summary_stats.n_batch,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            decoder=decoder,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"NBAutoencoder: n_hidden={n_hidden}, n_latent={n_latent}, n_layers={n_layers}, "
            f"dropout_rate={dropout_rate}, decoder={decoder}, dispersion={dispersion}, "
            f"gene_likelihood={gene_likelihood}."
        )
        self.init_params_ = self._get_init_params(locals())

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        **data_loader_kwargs,
    ) -> np.ndarray:
        """Bottleneck activations ``(n_obs, n_latent)`` (deterministic)."""
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs
        )
        self.module.eval()
        zs = [
            self.module.inference(**self.module._get_inference_input(t))["z"].cpu() for t in loader
        ]
        return torch.cat(zs).numpy()
