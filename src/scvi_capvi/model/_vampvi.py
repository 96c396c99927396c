"""VampVI (:cite:t:`Dony20`): scvi-tools model around
:class:`~scvi_capvi.module.VampPriorModule`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)

from ..module import VampPriorModule
from ._anndata_checks import AnnDataChecksMixin
from ._fields import CountsSetupMixin, library_size_prior
from ._io import CheckedQueryMixin, SafeSaveLoadMixin
from ._marginal_ll import ImportanceSampledLLMixin
from ._training import RobustTrainingMixin, default_log_every_n_steps
from ._validation import check_float, check_int, check_split

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    from anndata import AnnData

logger = logging.getLogger(__name__)


class VampVI(
    CountsSetupMixin,
    CheckedQueryMixin,
    SafeSaveLoadMixin,
    AnnDataChecksMixin,
    ImportanceSampledLLMixin,
    VAEMixin,
    RNASeqMixin,
    ArchesMixin,
    RobustTrainingMixin,
    BaseModelClass,
):
    """VAE with a VampPrior and/or IAF posterior for scRNA-seq counts (:cite:t:`Dony20`).

    ``prior="normal", posterior="normal"`` is the paper's VAE column, ``posterior="iaf"`` its
    VAE-IAF, ``prior="vamp"`` its VAE-VAMP; ``prior="vamp", posterior="iaf"`` is the combination
    the paper names as next step. ``decoder="linear"`` gives an LDVAE-style model with
    :meth:`get_loadings`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Nodes per hidden layer.
    n_latent
        Dimensionality of the latent space.
    n_layers
        Hidden layers of encoder and non-linear decoder.
    dropout_rate
        Dropout in the encoder.
    prior
        ``"vamp"`` (VampPrior, default) or ``"normal"``.
    n_pseudo_inputs
        Number of VampPrior pseudo-inputs ``K`` (paper: 500). They start from ``K`` cells drawn
        with ``scvi.settings.seed`` (with replacement if there are fewer cells).
    posterior
        ``"normal"`` or ``"iaf"`` (``n_flows`` pyro affine autoregressive layers).
    n_flows
        Number of IAF layers (paper: 5).
    decoder
        ``"nonlinear"`` (``DecoderSCVI``) or ``"linear"`` (``LinearDecoderSCVI``).
    dispersion
        ``"gene"`` or ``"gene-batch"``.
    gene_likelihood
        ``"nb"`` (paper) or ``"zinb"``.
    use_observed_lib_size
        Use observed library sizes; otherwise a latent log-normal library as in scVI.
    **module_kwargs
        Passed to :class:`~scvi_capvi.module.VampPriorModule`.

    Examples
    --------
    >>> VampVI.setup_anndata(adata, layer="counts", batch_key="batch")
    >>> model = VampVI(adata, n_latent=20)
    >>> model.train()
    >>> adata.obsm["X_vampvi"] = model.get_latent_representation()
    >>> model.get_marginal_ll(n_mc_samples=1000)
    """

    _module_cls = VampPriorModule

    def __init__(
        self,
        adata: AnnData,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        prior: Literal["vamp", "normal"] = "vamp",
        n_pseudo_inputs: int = 500,
        posterior: Literal["normal", "iaf"] = "normal",
        n_flows: int = 5,
        decoder: Literal["nonlinear", "linear"] = "nonlinear",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        gene_likelihood: Literal["nb", "zinb"] = "nb",
        use_observed_lib_size: bool = True,
        **module_kwargs,
    ):
        check_int("n_hidden", n_hidden)
        check_int("n_latent", n_latent)
        check_int("n_layers", n_layers)
        check_float("dropout_rate", dropout_rate, 0.0, 1.0, high_open=True)
        check_int("n_pseudo_inputs", n_pseudo_inputs)
        check_int("n_flows", n_flows)
        super().__init__(adata)
        n_batch = self.summary_stats.n_batch
        library_log_means, library_log_vars = None, None
        if not use_observed_lib_size:
            library_log_means, library_log_vars = library_size_prior(self.adata_manager, n_batch)
        pseudo_init, pseudo_batch = None, None
        if prior == "vamp":
            pseudo_init, pseudo_batch = self._draw_pseudo_inputs(n_pseudo_inputs)

        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=n_batch,
            n_labels=self.summary_stats.n_labels,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            prior=prior,
            n_pseudo_inputs=n_pseudo_inputs,
            pseudo_input_init=pseudo_init,
            pseudo_input_batch=pseudo_batch,
            posterior=posterior,
            n_flows=n_flows,
            decoder=decoder,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"VampVI model: prior={prior} (K={n_pseudo_inputs}), posterior={posterior}"
            f"{f' ({n_flows} flows)' if posterior == 'iaf' else ''}, decoder={decoder}, "
            f"n_hidden={n_hidden}, n_latent={n_latent}, n_layers={n_layers}, "
            f"dropout_rate={dropout_rate}, dispersion={dispersion}, "
            f"gene_likelihood={gene_likelihood}."
        )
        self.init_params_ = self._get_init_params(locals())

    def _draw_pseudo_inputs(self, n_pseudo_inputs: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and batch indices of ``K`` cells drawn with ``scvi.settings.seed``."""
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        batch = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY))
        n_obs = x.shape[0]
        seed = settings.seed if settings.seed is not None else 0
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n_obs, size=n_pseudo_inputs, replace=n_obs < n_pseudo_inputs))
        counts = x[idx]
        counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
        return counts.astype(np.float32), batch.reshape(-1)[idx].astype(np.int64)

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float = 0.9,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        batch_size: int = 128,
        early_stopping: bool = False,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train the model, with the full, unannealed KL by default (:cite:t:`Dony20`, §1-2).

        As :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`, except that
        ``n_epochs_kl_warmup`` defaults to ``None``: scvi-tools' plan anneals the KL weight
        over 400 epochs, and the VampPrior paper argues against down-weighting it. Pass
        ``plan_kwargs={"n_epochs_kl_warmup": 400}`` for scVI's schedule.

        Parameters
        ----------
        max_epochs
            Number of passes through the data (default: scvi-tools' heuristic,
            :func:`scvi.model._utils.get_max_epochs_heuristic`).
        accelerator, devices
            Where to train (``"cpu"``, ``"gpu"``, ``"auto"``; a device count or list).
        train_size, validation_size
            Fractions of cells for training and validation (the rest is the test set, kept in
            ``model.test_indices``).
        shuffle_set_split
            Shuffle cells before splitting (otherwise the split is sequential).
        batch_size
            Minibatch size.
        early_stopping
            Stop when the validation loss stops improving (``early_stopping_monitor``,
            ``early_stopping_patience`` go in ``trainer_kwargs``).
        datasplitter_kwargs
            Passed to :class:`scvi.dataloaders.DataSplitter`.
        plan_kwargs
            Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``,
            ``n_epochs_kl_warmup``, ...).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (``enable_progress_bar``, ``callbacks``, ...).
        """
        check_split(train_size, validation_size, batch_size)
        if max_epochs is not None:
            check_int("max_epochs", max_epochs, 1)
        plan_kwargs = {"n_epochs_kl_warmup": None, **dict(plan_kwargs or {})}
        n_train = int(self.adata.n_obs * train_size)
        trainer_kwargs.setdefault(
            "log_every_n_steps", default_log_every_n_steps(n_train, batch_size)
        )
        return super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            batch_size=batch_size,
            early_stopping=early_stopping,
            datasplitter_kwargs=datasplitter_kwargs,
            plan_kwargs=plan_kwargs,
            **trainer_kwargs,
        )

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        mc_samples: int = 5_000,
        batch_size: int | None = None,
        return_dist: bool = False,
        dataloader=None,
        **data_loader_kwargs,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latent representation ``(n_obs, n_latent)``.

        With the Gaussian posterior this is
        :meth:`scvi.model.base.VAEMixin.get_latent_representation`.
        With ``posterior="iaf"``, ``give_mean=True`` returns ``T(μ(x))``, the flow applied to the
        mean of the Gaussian base: deterministic and cheap, but not ``E_q[z]`` (the flow is
        non-linear; a Monte Carlo mean would need thousands of flow passes per cell).
        ``give_mean=False`` returns one posterior sample; ``return_dist`` is not available
        (the posterior is not Gaussian).
        """
        if self.module.posterior == "normal":
            return super().get_latent_representation(
                adata=adata,
                indices=indices,
                give_mean=give_mean,
                mc_samples=mc_samples,
                batch_size=batch_size,
                return_dist=return_dist,
                dataloader=dataloader,
                **data_loader_kwargs,
            )
        if return_dist:
            raise ValueError("`return_dist=True` needs a Gaussian posterior; this one is an IAF.")
        self._check_if_trained(warn=False)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            dataloader = self._make_data_loader(
                adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs
            )
        zs = []
        for tensors in dataloader:
            if give_mean:
                z = self.module.latent_mean(tensors)
            else:
                z = self.module.inference(**self.module._get_inference_input(tensors))["z"]
            zs.append(z.cpu())
        return torch.cat(zs).numpy()

    def get_loadings(self) -> pd.DataFrame:
        """Per-gene weights of the linear decoder, genes × ``n_latent`` (as ``LinearSCVI``).

        Raises
        ------
        ValueError
            If the model was not built with ``decoder="linear"``.
        """
        if self.module.decoder_type != "linear":
            raise ValueError(
                "get_loadings() needs a linear decoder; this model has "
                f"decoder={self.module.decoder_type!r}. Build it with decoder='linear'."
            )
        cols = [f"Z_{i}" for i in range(self.module.n_latent)]
        return pd.DataFrame(self.module.get_loadings(), index=self.adata.var_names, columns=cols)
