"""Cell-type classification metrics: accuracy, weighted accuracy, confusion matrix, posteriors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.utils.multiclass import unique_labels


def _as_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            "y_true and y_pred must be 1-d of equal length, "
            f"got {y_true.shape} and {y_pred.shape}."
        )
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty.")
    return y_true, y_pred


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of cells whose predicted label equals the reference label.

    The "unweighted accuracy" of Xu et al. (2021), *Mol. Syst. Biol.* 17:e9620 (scANVI,
    :cite:t:`Xu21`, Online Methods).
    """
    y_true, y_pred = _as_labels(y_true, y_pred)
    return float(skm.accuracy_score(y_true, y_pred))


def weighted_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Accuracy computed per reference cell type, then averaged over cell types.

    scANVI (:cite:t:`Xu21`, Online Methods): every cell type weighs the same, so
    rare types count as much as abundant ones. Equal to the mean per-class recall
    (:func:`sklearn.metrics.balanced_accuracy_score`) over the classes present in ``y_true``.
    """
    y_true, y_pred = _as_labels(y_true, y_pred)
    # macro recall over the reference classes only: predicted-only classes get no weight
    return float(skm.recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro"))


def confusion_matrix(
    y_true: Sequence,
    y_pred: Sequence,
    labels: Sequence | None = None,
    normalize: Literal["true", "pred", "all"] | None = "true",
) -> pd.DataFrame:
    """Confusion matrix as a labelled table: rows the reference, columns the prediction.

    Parameters
    ----------
    y_true, y_pred
        ``(n_cells,)`` reference and predicted labels.
    labels
        Order of the classes (rows and columns); default: the sorted union of both.
    normalize
        ``"true"``: each row sums to 1 (fraction of each reference type predicted as each
        class, as in capVI's Figure 4); ``"pred"``: columns sum to 1; ``"all"``: the table
        sums to 1; ``None``: counts.

    Returns
    -------
    ``DataFrame`` indexed by reference label (index name ``"true"``), columns the predicted
    label (name ``"predicted"``). Rows of a class absent from ``y_true`` are 0 when
    normalised.
    """
    y_true, y_pred = _as_labels(y_true, y_pred)
    if labels is None:
        labels = unique_labels(y_true, y_pred)
    labels = np.asarray(labels)
    table = skm.confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    return pd.DataFrame(
        table,
        index=pd.Index(labels, name="true"),
        columns=pd.Index(labels, name="predicted"),
    )


def max_posterior_probability(
    probs: np.ndarray | pd.DataFrame,
    observed: Sequence | None = None,
) -> np.ndarray:
    """Per-cell maximum posterior probability of the classifier.

    scANVI (:cite:t:`Xu21`, Online Methods): the highest probability of a cell
    being assigned to one of the *observed* classes, so a cell with its mass on an
    "Unlabeled"/unseen class scores low.

    Parameters
    ----------
    probs
        ``(n_cells, n_classes)`` class probabilities (e.g. ``model.predict(soft=True)``).
    observed
        Classes to take the maximum over: column names when ``probs`` is a ``DataFrame``,
        column positions otherwise. Default: all classes.

    Returns
    -------
    ``(n_cells,)`` values in ``[0, 1]``.
    """
    if isinstance(probs, pd.DataFrame):
        values = probs[list(observed)] if observed is not None else probs
        values = values.to_numpy(dtype=np.float64)
    else:
        values = np.asarray(probs, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"probs must be 2-d (cells x classes), got shape {values.shape}.")
        if observed is not None:
            values = values[:, np.asarray(observed)]
    if values.size and ((values < -1e-6).any() or (values > 1 + 1e-6).any()):
        raise ValueError("probs must be probabilities in [0, 1].")
    return values.max(axis=1)
