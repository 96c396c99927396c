"""Input checks shared by the models: small pure functions that fail early and name the culprit.

Messages name the argument, the ``adata`` location and the offending values. The checks of
the count matrix itself are in ``_count_checks``.
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi import settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

# Labels that usually mean "not annotated"; one of them used as a cell type is likely a mistake.
_UNLABELLED_SPELLINGS = {
    "unknown",
    "unlabeled",
    "unlabelled",
    "unassigned",
    "unannotated",
    "na",
    "nan",
    "none",
    "",
}


def _warn(message: str):
    warnings.warn(message, UserWarning, stacklevel=settings.warnings_stacklevel)


def data_location(layer: str | None) -> str:
    """``adata.X`` or ``adata.layers['name']``: where a count matrix lives, for messages."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _preview(values: Sequence, n: int = 5) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return ", ".join(repr(v) for v in values[:n]) + more


# ---------------------------------------------------------------------- AnnData structure
def check_not_empty(adata: AnnData):
    """Raise if ``adata`` has no cell or no gene."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); the model "
            "needs at least one cell and one gene."
        )


def check_layer(adata: AnnData, layer: str | None):
    """Raise a ``KeyError`` naming ``layer`` (and close matches) if it is not a layer."""
    if layer is None or layer in adata.layers:
        return
    # anndata >= 0.13 also lists .X in adata.layers, under the key None
    names = [name for name in adata.layers.keys() if name is not None]
    close = difflib.get_close_matches(str(layer), names, n=1)
    hint = f" Did you mean layer={close[0]!r}?" if close else ""
    raise KeyError(
        f"layer={layer!r} is not in adata.layers (layers: {names or 'none'}).{hint} Pass "
        "the layer holding raw counts, or layer=None for adata.X."
    )


def check_obs_key(adata: AnnData, key: str | None, argument: str):
    """Raise a ``KeyError`` naming ``argument`` if ``key`` is not a column of ``adata.obs``."""
    if key is None or key in adata.obs:
        return
    columns = [str(c) for c in adata.obs.columns]
    close = difflib.get_close_matches(str(key), columns, n=1)
    hint = f" Did you mean {argument}={close[0]!r}?" if close else ""
    raise KeyError(
        f"{argument}={key!r} is not a column of adata.obs (columns: {_preview(columns, 10)})."
        f"{hint}"
    )


def check_no_missing(adata: AnnData, key: str, what: str, fix: str):
    """Raise if the ``adata.obs[key]`` column has missing values (NaN)."""
    n_missing = int(adata.obs[key].isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] has {n_missing} missing values (NaN); every cell needs a "
            f"{what}. {fix}"
        )


# ---------------------------------------------------------------------- hyperparameters
def check_int(name: str, value, minimum: int = 1, maximum: int | None = None):
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer in range."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    ok = ok and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"`{name}` must be an integer >= {minimum}{upper}, got {value!r}.")


def check_float(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
):
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite number in range.

    ``low`` / ``high`` are included unless ``low_open`` / ``high_open``.
    """
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "" if low is None else f"{'(' if low_open else '['}{low:g}, "
        right = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        where = f" in {left}{right}" if left and right else ""
        if left and not right:
            where = f" {'>' if low_open else '>='} {low:g}"
        if right and not left:
            where = f" {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"`{name}` must be a finite number{where}, got {value!r}.")


def check_split(train_size, validation_size, batch_size):
    """The ``train`` arguments shared by every model: split fractions and minibatch size."""
    check_float("train_size", train_size, 0.0, 1.0, low_open=True)
    if validation_size is not None:
        check_float("validation_size", validation_size, 0.0, 1.0, high_open=True)
        if train_size + validation_size > 1.0 + 1e-9:
            raise ValueError(
                f"`train_size` + `validation_size` must be <= 1, got {train_size} + "
                f"{validation_size}."
            )
    check_int("batch_size", batch_size, 1)


# ---------------------------------------------------------------------- counts
def check_unlabeled_category(
    labels: pd.Series, key: str, unlabeled_category, default="Unknown"
) -> None:
    """Catch a mistyped ``unlabeled_category`` and unannotated cells learned as a cell type.

    A dataset where every cell is annotated is legitimate, so a missing ``unlabeled_category``
    is an error only when a value differing just in case or spaces is present (a typo), and a
    warning when it was set explicitly or a value spelled like "unassigned" would be learned
    as a cell type.
    """
    present = pd.unique(labels.dropna())
    if unlabeled_category in set(present):
        return
    norm = str(unlabeled_category).strip().casefold()
    close = [v for v in present if str(v).strip().casefold() == norm]
    if close:
        raise ValueError(
            f"unlabeled_category={unlabeled_category!r} does not occur in adata.obs[{key!r}], "
            f"but {close[0]!r} does: if those cells are unannotated, pass "
            f"unlabeled_category={close[0]!r} (otherwise rename that label)."
        )
    lookalikes = [v for v in present if str(v).strip().casefold() in _UNLABELLED_SPELLINGS]
    if lookalikes:
        n = int(labels.isin(lookalikes).sum())
        _warn(
            f"unlabeled_category={unlabeled_category!r} does not occur in adata.obs[{key!r}], "
            f"so the {n} cells labelled {_preview(lookalikes)} are learned as a cell type. If "
            f"they are unannotated, pass unlabeled_category={lookalikes[0]!r}."
        )
    elif unlabeled_category != default:
        _warn(
            f"unlabeled_category={unlabeled_category!r} does not occur in adata.obs[{key!r}]: "
            "every cell counts as annotated."
        )


def check_cell_types(types: Sequence, counts: Sequence[int], key: str, unlabeled_category):
    """Raise unless at least two cell types are annotated and every type has a cell.

    ``types`` are the annotated categories (without ``unlabeled_category``) in the order of
    the prior modes, ``counts`` their numbers of cells.
    """
    types, counts = list(types), np.asarray(counts, dtype=int)
    empty = [t for t, n in zip(types, counts, strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"Cell type(s) {_preview(empty)} of adata.obs[{key!r}] have no annotated cell (unused "
            "categories of a Categorical?); each would get a prior mode with nothing to learn "
            f"from. Drop them: adata.obs[{key!r}] = "
            f"adata.obs[{key!r}].cat.remove_unused_categories()."
        )
    if len(types) == 0:
        raise ValueError(
            f"No cell of adata.obs[{key!r}] is annotated (all are {unlabeled_category!r}); "
            "CapVI needs at least two annotated cell types. Without annotations use "
            "setup_anndata(labels_key=None) and CapVI(adata, n_components=...)."
        )
    if len(types) == 1:
        raise ValueError(
            f"adata.obs[{key!r}] has a single annotated cell type ({types[0]!r}); CapVI needs "
            "at least two (one prior mode per type, and a classifier between them)."
        )


def label_counts(labels: pd.Series, unlabeled_category) -> tuple[list, np.ndarray]:
    """Annotated categories (unused ones of a Categorical included) and their cell counts."""
    counts = labels.value_counts(sort=False, dropna=True)
    types = [t for t in counts.index if t != unlabeled_category]
    return types, counts.loc[types].to_numpy() if types else np.zeros(0, dtype=int)


def check_batches(batches: pd.Series, key: str):
    """Warn about batches with a single cell (their batch parameters come from one cell)."""
    counts = batches.value_counts(dropna=True)
    lonely = [b for b, n in counts.items() if n == 1]
    if lonely:
        _warn(
            f"Batch(es) {_preview(lonely)} of adata.obs[{key!r}] have a single cell: their "
            "batch-specific parameters (library-size prior, dispersion) are learned from that "
            "cell alone. Merge them into another batch or remove them."
        )


def check_known_categories(values, known: Sequence, key: str, what: str, fix: str):
    """Raise if ``values`` has categories that are not in ``known`` (e.g. unseen batches)."""
    unseen = sorted(set(pd.unique(pd.Series(values).dropna())) - set(known), key=str)
    if unseen:
        raise ValueError(
            f"adata.obs[{key!r}] has {what} the model was not trained on: {_preview(unseen)}. "
            f"{fix}"
        )


# ---------------------------------------------------------------------- genes
def check_var_names(var_names: Sequence, reference: Sequence, fix: str):
    """Raise unless ``var_names`` are exactly the model's genes in the model's order."""
    var_names = pd.Index(np.asarray(var_names).astype(str))
    reference = pd.Index(np.asarray(reference).astype(str))
    if var_names.equals(reference):
        return
    if var_names.has_duplicates:
        dup = var_names[var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names has duplicated genes ({_preview(dup)}); make them unique "
            "(adata.var_names_make_unique()) and match the model's genes."
        )
    missing = reference.difference(var_names, sort=False)
    extra = var_names.difference(reference, sort=False)
    if len(missing) == 0 and len(extra) == 0:
        raise ValueError(
            f"adata has the model's {len(reference)} genes but in a different order; the "
            f"model reads genes by position, so reorder them first. {fix}"
        )
    parts = []
    if len(missing):
        parts.append(
            f"{len(missing)} of the model's {len(reference)} genes are missing from "
            f"adata.var_names ({_preview(missing)})"
        )
    if len(extra):
        parts.append(
            f"adata has {len(extra)} genes the model was not trained on ({_preview(extra)})"
        )
    raise ValueError(f"{'; '.join(parts)}. {fix}")


# ---------------------------------------------------------------------- covariates
def check_covariates(
    adata: AnnData,
    size_factor_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
):
    """The covariate columns of ``setup_anndata`` exist, have no missing values, and size
    factors are positive and finite."""
    for argument, keys in (
        ("categorical_covariate_keys", categorical_covariate_keys),
        ("continuous_covariate_keys", continuous_covariate_keys),
    ):
        if keys is None:
            continue
        if isinstance(keys, str):
            raise TypeError(f"`{argument}` must be a list of column names, got {keys!r}.")
        for key in keys:
            check_obs_key(adata, key, argument)
            check_no_missing(adata, key, argument, "Fill or drop those cells first.")
    for key in continuous_covariate_keys or []:
        values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise ValueError(
                f"adata.obs[{key!r}] (continuous_covariate_keys) must be finite numbers."
            )
    if size_factor_key is not None:
        check_obs_key(adata, size_factor_key, "size_factor_key")
        values = pd.to_numeric(adata.obs[size_factor_key], errors="coerce").to_numpy(float)
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ValueError(
                f"adata.obs[{size_factor_key!r}] (size_factor_key) must be positive and finite "
                "for every cell."
            )
