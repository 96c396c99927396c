"""scIB totals and paper 002's probe on toy inputs with a known answer."""

import numpy as np
import pytest

from scvi_capvi.metrics import pca_features, probe_accuracy, probe_table, scib_scores


def _types_and_batches(seed: int = 0, batch_shift: float = 0.0):
    """3 cell types 30 units apart; 2 batches interleaved within each type (or shifted)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], 120)
    batch = np.tile(["x", "y"], 180)
    centres = np.array([[0.0, 0, 0], [30, 0, 0], [0, 30, 0]])
    X = centres[np.repeat(np.arange(3), 120)] + rng.normal(size=(360, 3))
    X[batch == "y", 2] += batch_shift
    return X, labels, batch


def test_scib_scores_mixed_vs_separated_batches():
    mixed, labels, batch = _types_and_batches()
    split, _, _ = _types_and_batches(batch_shift=15.0)
    table = scib_scores({"mixed": mixed, "split": split}, labels, batch, fast=True)
    assert list(table.index) == ["mixed", "split"]
    for col in ("Bio conservation", "Batch correction", "Total"):
        assert table[col].between(0, 1).all()
    # cell types perfectly separated in both: kmeans recovers them exactly
    assert table.loc["mixed", "KMeans NMI"] == pytest.approx(1.0)
    assert table.loc["mixed", "Bio conservation"] > 0.9
    # batches mixed within types vs batches pulled apart
    assert table.loc["mixed", "Batch correction"] > 0.85
    assert table.loc["split", "Batch correction"] < 0.7
    assert table.loc["mixed", "Total"] > table.loc["split", "Total"]
    with pytest.raises(ValueError, match="two batches"):
        scib_scores({"m": mixed}, labels, np.zeros(360))


def test_probe_separable_vs_random_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c", "d"], 100)
    centres = rng.normal(scale=10, size=(4, 8))
    X = centres[np.repeat(np.arange(4), 100)] + rng.normal(size=(400, 8))
    assert probe_accuracy(X, labels, n_epochs=5, batch_size=20) == 1.0
    # labels independent of the features: the probe cannot beat chance (0.25) by much
    shuffled = rng.permutation(labels)
    acc, history = probe_accuracy(X, shuffled, n_epochs=5, batch_size=20, return_history=True)
    assert acc < 0.5
    assert list(history.columns) == ["epoch", "train_accuracy", "val_accuracy"]
    assert len(history) == 5
    # seeded: the same answer twice
    assert probe_accuracy(X, shuffled, n_epochs=2, seed=3) == probe_accuracy(
        X, shuffled, n_epochs=2, seed=3
    )


def test_pca_features_and_probe_table():
    rng = np.random.default_rng(1)
    counts = rng.poisson(1.0, size=(60, 30))
    labels = np.repeat(["a", "b"], 30)
    assert pca_features(counts, 10).shape == (60, 10)
    assert pca_features(counts, 100).shape == (60, 30)  # capped at the number of genes
    table = probe_table(
        counts, labels, latents={"latent": rng.normal(size=(60, 5))}, ks=(5, 10), n_epochs=1
    )
    assert table["input"].tolist() == ["raw", "PCA", "PCA", "latent"]
    assert table["dim"].tolist() == [30, 5, 10, 5]
    assert table["accuracy"].between(0, 1).all()
