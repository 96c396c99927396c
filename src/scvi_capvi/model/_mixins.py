"""Model mixins shared by CapVI and VampVI."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data._constants import _SCVI_UUID_KEY
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

from ._count_checks import check_counts
from ._validation import (
    _preview,
    check_batches,
    check_known_categories,
    check_layer,
    check_no_missing,
    check_not_empty,
    check_obs_key,
    check_var_names,
    data_location,
)

if TYPE_CHECKING:
    from anndata import AnnData


def default_log_every_n_steps(n_train_cells: int, batch_size: int) -> int:
    """Lightning's logging interval, at most one epoch's steps (it warns when an epoch has
    fewer steps than the interval, scvi-tools' default 10)."""
    return min(10, max(1, int(n_train_cells) // batch_size))


def _warn(message: str):
    warnings.warn(message, UserWarning, stacklevel=settings.warnings_stacklevel)


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


def _source_var_names(source_registry: dict) -> np.ndarray | None:
    state = source_registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return state.get("column_names")


def _source_categories(source_registry: dict, registry_key: str) -> np.ndarray:
    state = source_registry["field_registries"][registry_key]["state_registry"]
    return np.asarray(state["categorical_mapping"])


_COVARIATE_ARGS = ("size_factor_key", "categorical_covariate_keys", "continuous_covariate_keys")


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


def check_setup_anndata(
    model_name: str,
    adata,
    layer: str | None,
    batch_key: str | None,
    labels_key: str | None,
    setup_kwargs: dict,
    allow_non_integer_counts: bool = False,
):
    """Checks shared by the ``setup_anndata`` of every model (before any field is registered).

    With ``source_registry`` in ``setup_kwargs`` (``load``, ``load_query_data``) the genes must
    be the saved model's, and batches unseen in training need ``load_query_data``.
    """
    source = setup_kwargs.get("source_registry")
    for name in _COVARIATE_ARGS:
        if name in setup_kwargs:
            raise TypeError(
                f"{model_name}.setup_anndata does not take `{name}`: {model_name} has no "
                "covariates or size factors (CapVI has)."
            )
    check_not_empty(adata)
    check_layer(adata, layer)
    check_obs_key(adata, batch_key, "batch_key")
    if labels_key is not None and not (source and setup_kwargs.get("allow_missing_labels")):
        check_obs_key(adata, labels_key, "labels_key")
    where = data_location(layer)
    check_counts(
        adata.X if layer is None else adata.layers[layer],
        where,
        warn_zero_genes=source is None,
        allow_non_integer=allow_non_integer_counts,
    )
    if batch_key is not None:
        check_no_missing(adata, batch_key, "batch", "Assign those cells a batch or drop them.")
        if source is None:
            check_batches(adata.obs[batch_key], batch_key)
    if source is not None:
        reference = _source_var_names(source)
        if reference is not None:
            check_var_names(
                adata.var_names,
                reference,
                f"Use the genes of the saved model, in its order (e.g. {model_name}."
                "prepare_query_anndata(adata, reference_model) pads missing ones with zeros).",
            )
        if batch_key is not None and not setup_kwargs.get("extend_categories"):
            check_known_categories(
                adata.obs[batch_key],
                _source_categories(source, REGISTRY_KEYS.BATCH_KEY),
                batch_key,
                "batches",
                f"Map data with new batches with {model_name}.load_query_data(adata, model).",
            )


class HardenedModelMixin:
    """Checks every AnnData a model meets: an AnnData the model has not registered (a query
    given to a getter, a copy) must have the model's genes in the model's order, raw counts,
    and only batches the model knows; ``_check_training_data`` re-checks the registered
    counts before training (they may have been normalised in place after ``setup_anndata``).
    """

    def __repr__(self) -> str:
        # plain text: scvi-tools prints the summary with rich markup (ANSI escapes in stored
        # notebook outputs and logs) and returns an empty string
        status = "Trained" if self.is_trained_ else "Not Trained"
        return f"{self._model_summary_string}\nTraining status: {status}"

    def _is_registered(self, adata) -> bool:
        """Whether ``adata`` itself (not a copy of it) is registered with this model."""
        store = type(self)._per_instance_manager_store.get(self.id, {})
        known = store.get(adata.uns.get(_SCVI_UUID_KEY))
        return known is not None and known.adata is adata

    def _gene_fix_hint(self) -> str:
        name = type(self).__name__
        hint = "select the model's genes in its order: adata = adata[:, model.get_var_names()]"
        if hasattr(self, "prepare_query_anndata"):
            return (
                f"{name}.prepare_query_anndata(adata, model) pads missing genes with zeros and "
                f"puts them in the model's order; or {hint}.copy()."
            )
        return f"Subset to the model's genes ({hint}.copy())."

    def _check_new_anndata(self, adata, unseen_batches: bool = False):
        """Checks for an AnnData that this model has not registered yet."""
        setup_args = self.registry_["setup_args"]
        layer, batch_key = setup_args.get("layer"), setup_args.get("batch_key")
        check_not_empty(adata)
        reference = _source_var_names(self.registry_)
        if reference is not None:
            check_var_names(adata.var_names, reference, self._gene_fix_hint())
        check_layer(adata, layer)
        check_obs_key(adata, batch_key, "batch_key")
        x = adata.X if layer is None else adata.layers[layer]
        check_counts(
            x,
            data_location(layer),
            warn_zero_genes=False,
            allow_non_integer=bool(setup_args.get("allow_non_integer_counts")),
        )
        if batch_key is not None and not unseen_batches:
            check_known_categories(
                adata.obs[batch_key],
                _source_categories(self.registry_, REGISTRY_KEYS.BATCH_KEY),
                batch_key,
                "batches",
                f"Map it first with {type(self).__name__}.load_query_data(adata, model).",
            )

    def _check_known_batches(self, adata):
        """Raise if cells of a registered ``adata`` belong to batches the module cannot encode
        (a query registered for classification only, by CapVI's ``predict``)."""
        manager = self.get_anndata_manager(adata, required=True)
        mapping = manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)["categorical_mapping"]
        n_batch = self.summary_stats.n_batch
        if len(mapping) <= n_batch:
            return
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        unseen = mapping[np.unique(codes[codes >= n_batch])]
        if len(unseen):
            key = self.registry_["setup_args"].get("batch_key")
            raise ValueError(
                f"adata.obs[{key!r}] has batches the model was not trained on: "
                f"{_preview(unseen)}. Only predict() works on them; for the latent space "
                f"and likelihoods map the data with {type(self).__name__}.load_query_data "
                "and train it briefly."
            )

    def _validate_anndata(self, adata=None, copy_if_view: bool = True):
        if adata is not None and not self._is_registered(adata):
            self._check_new_anndata(adata)
        adata = super()._validate_anndata(adata, copy_if_view=copy_if_view)
        self._check_known_batches(adata)
        return adata

    def _check_training_data(self):
        """Counts may have been changed in place since ``setup_anndata``: check them again."""
        setup_args = self.registry_["setup_args"]
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        check_counts(
            x,
            data_location(setup_args.get("layer")),
            warn_zero_cells=False,
            warn_zero_genes=False,
            allow_non_integer=bool(setup_args.get("allow_non_integer_counts")),
        )


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
