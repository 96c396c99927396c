"""CapVI's cell-type predictions (q(c|x)), on the training data or on a query."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi.data._utils import _assign_adata_uuid
from scvi.model.base import BaseModelClass

from ._novelty import DEFAULT_NOVELTY_METHOD, NoveltyMethod

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


class PredictionMixin:
    """``predict`` of :class:`~scvi_capvi.model.CapVI` (hard or soft labels, optionally with
    an "unknown" call) and the registration of a query that only needs classifying."""

    def _validate_query_anndata(self, adata: AnnData | None) -> AnnData:
        """Register a query for classification: q(c|x) does not see the batch, so a query may
        bring batches the model never saw, and needs no label column (labels the model does
        not know count as unannotated). Genes and counts are checked as for any new AnnData."""
        if adata is not None and self.adata_manager is not None:
            if not self._is_registered(adata):  # new AnnData, or a copy of one
                self._check_new_anndata(adata, unseen_batches=True)
                _assign_adata_uuid(adata, overwrite=True)
                manager = self.adata_manager.transfer_fields(
                    adata, extend_categories=True, allow_missing_labels=True
                )
                self._register_manager_for_instance(manager)
        # scvi-tools' registration check only: the classifier encodes no batch
        return BaseModelClass._validate_anndata(self, adata)

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        unknown_threshold: float | None = None,
        novelty_method: NoveltyMethod = DEFAULT_NOVELTY_METHOD,
        unknown_label: str = "unknown",
    ) -> np.ndarray | pd.DataFrame:
        """Cell-type predictions of the classifier ``q(c|x)``.

        Works on a query AnnData with batches the model has not seen (the classifier does not
        take the batch as input). Probabilities are temperature-scaled (see :meth:`calibrate`).

        Parameters
        ----------
        adata
            AnnData registered with the model; defaults to the training data.
        indices
            Cells to predict; all if ``None``.
        soft
            Return a cells × types DataFrame of probabilities instead of hard labels.
        batch_size
            Minibatch size.
        unknown_threshold
            Call ``unknown_label`` for every cell whose novelty score
            (:meth:`get_novelty_score` with ``novelty_method``) is above this value. Set it
            from a target false-unknown rate with :meth:`get_novelty_threshold`.
            Hard labels only.
        novelty_method
            The novelty score the threshold applies to.
        unknown_label
            Label of the cells called unknown.

        Returns
        -------
        Hard labels (``numpy`` array of type names) or, with ``soft=True``, probabilities.

        Examples
        --------
        >>> threshold = model.get_novelty_threshold(false_unknown_rate=0.05)
        >>> adata.obs["capvi_pred"] = model.predict(unknown_threshold=threshold)
        """
        if unknown_threshold is not None and soft:
            raise ValueError(
                "`unknown_threshold` applies to hard labels; with `soft=True` use "
                "`get_novelty_score` next to the probabilities."
            )
        if unknown_threshold is not None and not np.isfinite(unknown_threshold):
            raise ValueError(
                f"`unknown_threshold` must be a finite number, got {unknown_threshold!r}."
            )
        adata = self._validate_query_anndata(adata)
        if indices is None:
            indices = np.arange(adata.n_obs)
        logits, _ = self._classifier_pass(adata, indices, batch_size, latent=False)
        probs = self._probabilities(logits)
        names = (
            self.cell_types
            if self.use_labels
            else np.array([f"component_{k}" for k in range(self.module.n_labels)])
        )
        if soft:
            return pd.DataFrame(probs, index=adata.obs_names[indices], columns=names)
        labels = names[probs.argmax(1)]
        if unknown_threshold is None:
            return labels
        if unknown_label in set(names):
            raise ValueError(
                f"`unknown_label` {unknown_label!r} is already a cell type of the model."
            )
        scores = self.get_novelty_score(
            adata, indices, method=novelty_method, batch_size=batch_size
        )
        labels = labels.astype(object)
        labels[scores > unknown_threshold] = unknown_label
        return labels
