"""NBAutoencoder: the non-generative reference model of paper 001."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from ..module import NBAutoencoderModule

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    from anndata import AnnData


class NBAutoencoder(VAEMixin, RNASeqMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Deterministic negative-binomial autoencoder (DCA-style; paper 001's "AE" column).

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

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        **kwargs,
    ):
        """%(summary)s.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        %(param_batch_key)s
        %(param_labels_key)s
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

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
