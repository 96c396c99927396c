"""Marginal log-likelihood by importance sampling, in memory-bounded passes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.utils import track

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

from ..module._utils import chunked_log_px, default_samples_per_pass


class ImportanceSampledLLMixin:
    """Marginal log-likelihood ``log p(x)`` by importance sampling, vectorised over samples.

    The module must implement ``log_importance_weights(tensors, n_samples)``. Each minibatch
    goes through the same estimator as the package's modules' ``marginal_ll`` (the one
    :meth:`scvi.model.base.VAEMixin.get_marginal_ll` calls): samples decoded
    ``n_mc_samples_per_pass`` at a time, combined with a running log-sum-exp. This method
    adds the memory budget chosen from the minibatch size and genes, a progress bar and a
    numpy result.
    """

    @torch.inference_mode()
    def get_marginal_ll(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_mc_samples: int = 1000,
        batch_size: int | None = None,
        return_mean: bool = True,
        n_mc_samples_per_pass: int | None = None,
        progress_bar: bool = True,
    ) -> float | np.ndarray:
        """Importance-sampled marginal log-likelihood of each cell (higher is better).

        Parameters
        ----------
        adata
            AnnData registered with the model's ``setup_anndata``; defaults to the training data.
        indices
            Cells of ``adata`` to evaluate; all cells if ``None``.
        n_mc_samples
            Number of importance samples per cell (:cite:t:`Clivio22` uses 5,000).
        batch_size
            Cells per minibatch (default 128).
        return_mean
            Return the mean over cells (a float); otherwise one value per cell.
        n_mc_samples_per_pass
            Samples decoded in one vectorised pass; chosen from a memory budget if ``None``.
        progress_bar
            Show a progress bar over minibatches (style: ``scvi.settings.progress_bar_style``).
        """
        if int(n_mc_samples) < 1:
            raise ValueError(f"`n_mc_samples` must be >= 1, got {n_mc_samples}.")
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        batch_size = batch_size or 128
        if n_mc_samples_per_pass is None:
            per_pass = default_samples_per_pass(n_mc_samples, batch_size, adata.n_vars)
        else:
            per_pass = int(n_mc_samples_per_pass)
        if per_pass < 1:
            raise ValueError(f"`n_mc_samples_per_pass` must be >= 1, got {per_pass}.")
        per_pass = min(per_pass, n_mc_samples)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        out = []
        # one step per minibatch, in scvi-tools' style (``scvi.settings.progress_bar_style``)
        for tensors in track(
            loader,
            description=f"marginal LL ({n_mc_samples} samples per cell)",
            disable=not progress_bar,
        ):
            out.append(chunked_log_px(self.module, tensors, n_mc_samples, per_pass).cpu())
        ll = torch.cat(out).numpy()
        return float(ll.mean()) if return_mean else ll
