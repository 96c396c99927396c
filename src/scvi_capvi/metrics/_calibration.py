"""Calibration of a classifier's probabilities: expected calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import multiclass_calibration_error


def expected_calibration_error(
    probs: np.ndarray | pd.DataFrame,
    y_true: Sequence,
    classes: Sequence | None = None,
    n_bins: int = 15,
) -> float:
    """Expected calibration error (ECE) of the top-label confidence.

    Guo et al. (2017), *On calibration of modern neural networks*, ICML: cells are binned by
    their maximum probability into ``n_bins`` equal-width bins; ECE is the cell-weighted mean
    over bins of ``|accuracy - mean confidence|``. 0 is perfectly calibrated. Computed with
    :func:`torchmetrics.functional.classification.multiclass_calibration_error`.

    Parameters
    ----------
    probs
        ``(n_cells, n_classes)`` probabilities, e.g. ``model.predict(soft=True)``.
    y_true
        ``(n_cells,)`` reference labels: class names (matched to ``classes`` or the
        DataFrame's columns) or integer positions when ``probs`` is an array without classes.
        A label outside the classes can never be predicted right: it counts as an error.
    classes
        Names of the columns of ``probs``; default the DataFrame's columns.
    n_bins
        Number of confidence bins.
    """
    if isinstance(probs, pd.DataFrame):
        classes = probs.columns if classes is None else classes
        probs = probs.to_numpy()
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probs.ndim != 2 or probs.shape[0] != y_true.shape[0] or probs.shape[0] == 0:
        raise ValueError(
            "probs must be (n_cells, n_classes) with one row per label in y_true, got "
            f"{probs.shape} and {y_true.shape}."
        )
    if (probs < -1e-6).any() or not np.allclose(probs.sum(1), 1, atol=1e-4):
        raise ValueError("probs must be non-negative with rows summing to 1.")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}.")
    n_classes = probs.shape[1]
    if classes is not None:
        lookup = {name: i for i, name in enumerate(np.asarray(classes))}
        if len(lookup) != n_classes:
            raise ValueError(f"classes must name the {n_classes} columns of probs.")
        # a label the classifier does not know gets an extra, never-predicted class
        codes = np.array([lookup.get(y, n_classes) for y in y_true])
    else:
        codes = y_true.astype(int)
    if (codes > n_classes).any() or (codes < 0).any():
        raise ValueError(f"y_true positions must lie in [0, {n_classes}).")
    if (codes == n_classes).any():
        probs = np.hstack([probs, np.zeros((len(probs), 1))])
    value = multiclass_calibration_error(
        torch.as_tensor(probs, dtype=torch.float64),
        torch.as_tensor(codes),
        num_classes=probs.shape[1],
        n_bins=int(n_bins),
        norm="l1",
    )
    return float(value)
