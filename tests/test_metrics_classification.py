"""Classification metrics against hand-computed answers."""

import numpy as np
import pandas as pd
import pytest

from scvi_capvi.metrics import (
    accuracy,
    confusion_matrix,
    max_posterior_probability,
    weighted_accuracy,
)

# 8 cells of A, 2 of B; all A right, 1 of 2 B right
Y_TRUE = ["A"] * 8 + ["B"] * 2
Y_PRED = ["A"] * 8 + ["B", "A"]


def test_accuracy_and_weighted_accuracy_imbalanced():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.9)
    # per-class accuracies 1.0 and 0.5, averaged over classes
    assert weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.75)
    # a predicted-only class ("Unknown") counts as wrong but gets no weight of its own
    y_pred = ["A"] * 7 + ["Unknown", "B", "B"]
    assert weighted_accuracy(Y_TRUE, y_pred) == pytest.approx((7 / 8 + 1) / 2)


def test_confusion_matrix_matches_hand_made():
    y_true = ["T", "T", "T", "B", "B", "NK"]
    y_pred = ["T", "T", "NK", "B", "T", "NK"]
    expected = pd.DataFrame(
        [[0.5, 0.5, 0.0], [0.0, 2 / 3, 1 / 3], [0.0, 0.0, 1.0]],
        index=pd.Index(["B", "T", "NK"], name="true"),
        columns=pd.Index(["B", "T", "NK"], name="predicted"),
    )
    table = confusion_matrix(y_true, y_pred, labels=["B", "T", "NK"])
    pd.testing.assert_frame_equal(table, expected)

    counts = confusion_matrix(y_true, y_pred, normalize=None)
    assert list(counts.index) == ["B", "NK", "T"]  # sorted union by default
    assert counts.loc["T", "NK"] == 1 and counts.to_numpy().sum() == 6


def test_confusion_matrix_predicted_only_class():
    table = confusion_matrix(["a", "b"], ["a", "Unknown"])
    assert list(table.columns) == ["Unknown", "a", "b"]
    assert table.loc["b", "Unknown"] == 1.0
    assert table.loc["Unknown"].sum() == 0.0  # no reference cell of that class


def test_max_posterior_probability():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(max_posterior_probability(probs), [0.7, 0.6])
    # observed classes only: mass on the unobserved class does not count
    frame = pd.DataFrame(probs, columns=["B", "T", "Unlabeled"])
    np.testing.assert_allclose(max_posterior_probability(frame, observed=["B", "T"]), [0.7, 0.3])
    np.testing.assert_allclose(max_posterior_probability(probs, observed=[1, 2]), [0.2, 0.6])
    with pytest.raises(ValueError, match="probabilities"):
        max_posterior_probability(np.array([[2.0, -1.0]]))


def test_label_length_mismatch():
    with pytest.raises(ValueError, match="equal length"):
        accuracy(["a", "b"], ["a"])
