"""Marginal log-likelihood by importance sampling, in memory-bounded passes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.utils import track

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from anndata import AnnData


class ImportanceSampledLLMixin:
    """Marginal log-likelihood ``log p(x)`` by importance sampling, per cell.

    A layer over :meth:`scvi.model.base.VAEMixin.get_marginal_ll`, which calls the module's
    ``marginal_ll`` (``ChunkedMarginalLLMixin`` in ``scvi_capvi.module``: samples
    decoded ``n_mc_samples_per_pass`` at a time, combined with a running log-sum-exp). It
    adds a progress bar, a numpy result and, with ``return_mean``, the mean over cells
    (scvi-tools averages the minibatch means, which weighs a short last minibatch more).
    """

    @torch.inference_mode()
    def get_marginal_ll(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_mc_samples: int = 1000,
        batch_size: int | None = None,
        return_mean: bool = True,
        dataloader: Iterable[dict[str, torch.Tensor | None]] | None = None,
        data_loader_kwargs: dict | None = None,
        n_mc_samples_per_pass: int | None = None,
        progress_bar: bool = True,
        **kwargs,
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
        dataloader
            Minibatches to evaluate instead of ``adata`` / ``indices``, as
            :meth:`scvi.model.base.VAEMixin.get_marginal_ll` takes them.
        data_loader_kwargs
            Passed to the data loader built from ``adata``.
        n_mc_samples_per_pass
            Samples decoded in one vectorised pass; chosen from a memory budget if ``None``.
        progress_bar
            Show a progress bar over minibatches (style: ``scvi.settings.progress_bar_style``).
        **kwargs
            Passed to the module's ``marginal_ll``.
        """
        if int(n_mc_samples) < 1:
            raise ValueError(f"`n_mc_samples` must be >= 1, got {n_mc_samples}.")
        if n_mc_samples_per_pass is not None and int(n_mc_samples_per_pass) < 1:
            raise ValueError(f"`n_mc_samples_per_pass` must be >= 1, got {n_mc_samples_per_pass}.")
        self._check_if_trained(warn=False)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            dataloader = self._make_data_loader(
                adata=adata,
                indices=indices,
                batch_size=batch_size or 128,
                **(data_loader_kwargs or {}),
            )
        elif adata is not None:
            raise ValueError("Pass `adata` or `dataloader`, not both.")
        self.module.eval()
        description = f"marginal LL ({n_mc_samples} samples per cell)"
        ll = super().get_marginal_ll(
            n_mc_samples=int(n_mc_samples),
            return_mean=False,
            dataloader=track(dataloader, description=description, disable=not progress_bar),
            n_mc_samples_per_pass=n_mc_samples_per_pass,
            **kwargs,
        )
        ll = ll.cpu().numpy()
        return float(ll.mean()) if return_mean else ll
