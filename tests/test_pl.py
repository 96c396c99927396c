"""Plots return figures with the expected panels."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scvi_capvi.metrics import confusion_matrix
from scvi_capvi.pl import confusion_heatmap, lisi_distributions, training_curves, umap_grid


def test_umap_grid_rows_methods_columns_keys():
    rng = np.random.default_rng(0)
    adata = AnnData(np.zeros((80, 2), dtype=np.float32))
    adata.obs["cell_type"] = pd.Categorical(np.repeat(["a", "b"], 40))
    adata.obs["batch"] = pd.Categorical(np.tile(["x", "y"], 40))
    adata.obsm["X_m1"] = rng.normal(size=(80, 5))
    adata.obsm["X_m2"] = rng.normal(size=(80, 3))
    fig = umap_grid(adata, {"M1": "X_m1", "M2": "X_m2"}, n_neighbors=10)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["M1: cell_type", "M1: batch", "M2: cell_type", "M2: batch"]
    assert adata.obsm["X_umap_X_m1"].shape == (80, 2)
    with pytest.raises(ValueError, match="one obs column"):
        umap_grid(adata, ["X_m1"], color=["missing"])


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_lisi_distributions_panels(kind):
    rng = np.random.default_rng(0)
    values = {
        "CapVI": {"cLISI": 1 + rng.random(50), "iLISI": 1 + rng.random(50)},
        "PCA": {"cLISI": 1 + rng.random(50)},
    }
    fig = lisi_distributions(values, kind=kind)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["CapVI", "PCA"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["CapVI"]
    assert fig.axes[0].get_ylabel() == "cLISI"


def test_confusion_heatmap_shape():
    table = confusion_matrix(["T", "T", "B", "NK"], ["T", "B", "B", "NK"])
    fig = confusion_heatmap(table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B", "NK", "T"]
    assert ax.images[0].get_array().shape == (3, 3)
    assert len(fig.axes) == 2  # heatmap + colour bar


def test_training_curves_one_panel_per_stage():
    def frame(n, name):
        return pd.DataFrame({name: np.linspace(2, 1, n)})

    history = {
        "stage1_train_loss_epoch": frame(4, "train_loss_epoch"),
        "stage1_validation_loss": frame(4, "validation_loss"),
        "stage2_train_loss_epoch": frame(6, "train_loss_epoch"),
        "stage3_train_loss_epoch": frame(3, "train_loss_epoch"),
        "stage3_validation_loss": frame(3, "validation_loss"),
    }
    fig = training_curves(history)
    assert [ax.get_title() for ax in fig.axes] == [
        "stage 1 (classifier)", "stage 2 (frozen)", "stage 3 (end to end)"
    ]  # fmt: skip
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 1
    single = training_curves({"train_loss_epoch": frame(5, "train_loss_epoch")})
    assert [ax.get_title() for ax in single.axes] == ["training"]
    scanvi = training_curves({  # SCANVI after its SCVI pre-training (the benchmark's keys)
        "scvi_train_loss_epoch": frame(5, "train_loss_epoch"),
        "train_loss_epoch": frame(2, "train_loss_epoch"),
    })  # fmt: skip
    assert [ax.get_title() for ax in scanvi.axes] == ["SCVI pre-training", "training"]
    with pytest.raises(ValueError, match="no train_loss"):
        training_curves({"elbo_train": frame(2, "elbo_train")})
