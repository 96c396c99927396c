"""AnnData fields and ``setup_anndata`` of the models, and the module arguments read from
the registry (covariates, library-size prior)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from scvi.model._utils import _init_library_size
from scvi.utils import setup_anndata_dsp

from ._anndata_checks import check_setup_anndata
from ._validation import _preview, _warn, check_no_missing

if TYPE_CHECKING:
    from anndata import AnnData


def library_size_prior(adata_manager: AnnDataManager, n_batch: int):
    """scVI's per-batch log-library prior, with a usable variance for one-cell batches.

    A batch with a single cell (or identical library sizes) has variance 0, which gives a
    log-normal prior of scale 0 and fails inside torch; such batches get the mean variance of
    the other batches (1 if there is none).
    """
    means, variances = _init_library_size(adata_manager, n_batch)
    variances = np.asarray(variances, dtype=float)
    ok = variances > 0
    fallback = float(variances[ok].mean()) if ok.any() else 1.0
    return means, np.where(ok, variances, fallback)


class UnseenAsUnlabeledField(LabelsWithUnlabeledObsField):
    """Cell-type labels with an unlabelled category (CapVI).

    Transferred to another AnnData (a query, or the data of a loaded model), labels the model
    was not trained on and missing labels count as unannotated, with a warning, instead of
    failing on an unknown category. The user's column is left as it is.
    """

    def transfer_field(self, state_registry, adata_target, allow_missing_labels=False, **kwargs):
        key = self._original_attr_key
        transfer = super().transfer_field
        if key is None or key not in adata_target.obs:
            return transfer(state_registry, adata_target, allow_missing_labels, **kwargs)
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY])
        column = adata_target.obs[key]
        unseen = ~column.isin(mapping)
        if not unseen.any():
            return transfer(state_registry, adata_target, allow_missing_labels, **kwargs)
        names = pd.unique(column[unseen].dropna())
        n_missing = int(column.isna().sum())
        what = f"labels the model was not trained on ({_preview(names)})" if len(names) else ""
        if n_missing:
            what += f"{' or ' if what else ''}missing labels (NaN)"
        _warn(
            f"{int(unseen.sum())} cells of adata.obs[{key!r}] have {what}; they are treated as "
            f"unannotated ({self._unlabeled_category!r}). The model predicts only its "
            f"{len(mapping) - 1} cell types."
        )
        adata_target.obs[key] = column.astype(object).where(~unseen, self._unlabeled_category)
        try:
            return transfer(state_registry, adata_target, allow_missing_labels, **kwargs)
        finally:
            adata_target.obs[key] = column


class CarriedLabelsField(CategoricalObsField):
    """Labels carried along for metrics only (VampVI, NBAutoencoder): the module never reads
    them, so labels unseen in training are added as new categories, with a warning."""

    def transfer_field(self, state_registry, adata_target, extend_categories=False, **kwargs):
        key = self._original_attr_key
        if not self.is_default and key in adata_target.obs:
            mapping = state_registry[self.CATEGORICAL_MAPPING_KEY]
            column = adata_target.obs[key]
            names = pd.unique(column[~column.isin(mapping)].dropna())
            if len(names):
                _warn(
                    f"adata.obs[{key!r}] has labels the model was not trained on "
                    f"({_preview(names)}); they are added as new categories (the labels are "
                    "not used by the model, only carried along for metrics)."
                )
        transfer = super().transfer_field
        return transfer(state_registry, adata_target, extend_categories=True, **kwargs)


def covariate_fields(
    size_factor_key: str | None,
    categorical_covariate_keys: list[str] | None,
    continuous_covariate_keys: list[str] | None,
) -> list:
    """scvi-tools' fields for size factors and covariates (as ``SCVI.setup_anndata``)."""
    return [
        NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
    ]


def covariate_module_kwargs(adata_manager: AnnDataManager) -> dict:
    """The module arguments that describe the registered covariates and size factors."""
    registry = adata_manager.data_registry
    n_cats = None
    if REGISTRY_KEYS.CAT_COVS_KEY in registry:
        state = adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        n_cats = list(state.n_cats_per_key)
    n_cont = 0
    if REGISTRY_KEYS.CONT_COVS_KEY in registry:
        state = adata_manager.get_state_registry(REGISTRY_KEYS.CONT_COVS_KEY)
        n_cont = len(state.columns)
    return {
        "n_cats_per_cov": n_cats,
        "n_continuous_cov": n_cont,
        "use_size_factor_key": REGISTRY_KEYS.SIZE_FACTOR_KEY in registry,
    }


class CountsSetupMixin:
    """``setup_anndata`` for models of raw counts with an optional batch and labels column
    (the labels are carried for metrics only)."""

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        allow_non_integer_counts: bool = False,
        **kwargs,
    ):
        """%(summary)s.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        %(param_batch_key)s
        %(param_labels_key)s
        allow_non_integer_counts
            Accept non-integer values (ambient-corrected counts) with a warning instead of an
            error.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_setup_anndata(
            cls.__name__, adata, layer, batch_key, labels_key, kwargs, allow_non_integer_counts
        )
        if labels_key is not None:
            check_no_missing(adata, labels_key, "label", "Label those cells or drop them.")
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CarriedLabelsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)
