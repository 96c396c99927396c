"""Checks of every AnnData a model meets: at ``setup_anndata``, and when a getter, a query
or ``train`` gets one."""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS
from scvi.data._constants import _SCVI_UUID_KEY

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

# covariate arguments of SCVI.setup_anndata that only CapVI takes: the other models reject them
_COVARIATE_ARGS = ("size_factor_key", "categorical_covariate_keys", "continuous_covariate_keys")


def _source_var_names(source_registry: dict) -> np.ndarray | None:
    state = source_registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return state.get("column_names")


def _source_categories(source_registry: dict, registry_key: str) -> np.ndarray:
    state = source_registry["field_registries"][registry_key]["state_registry"]
    return np.asarray(state["categorical_mapping"])


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


class AnnDataChecksMixin:
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
