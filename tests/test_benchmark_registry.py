"""Benchmark registries: splits, datasets, methods, model selection (local grid)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_capvi.benchmark import (
    METHODS,
    BenchmarkConfig,
    Split,
    cell_split,
    load_dataset,
    make_split,
)
from scvi_capvi.benchmark._evaluation import reconstruction_error
from scvi_capvi.benchmark._methods import resolve_methods
from scvi_capvi.benchmark._selection import (
    CAPVI_METRIC,
    CLASSIFIER_METRIC,
    select_capvi,
)
from scvi_capvi.benchmark._splits import MODEL_BATCH_KEY, add_model_batch
from scvi_capvi.model import CapVI


def toy_adata(n_cells=240, n_genes=30, n_batches=4, seed=0):
    """Integer counts of 3 cell types (one marker gene each) over ``n_batches`` batches."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 3, n_cells)
    programmes = rng.gamma(1.0, 1.0, (3, n_genes)) + 0.05
    programmes[np.arange(3), np.arange(3)] += 20
    x = rng.poisson(programmes[types] * rng.uniform(0.5, 2, (n_cells, 1)) * 3)
    adata = ad.AnnData(sp.csr_matrix(x.astype(np.float32)))
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.var_names = [f"g{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(np.array(["T0", "T1", "T2"])[types])
    adata.obs["batch"] = pd.Categorical([f"b{i % n_batches}" for i in range(n_cells)])
    return adata


def test_split_by_held_out_batches():
    adata = toy_adata(n_batches=4)
    split = make_split(adata, seed=1)
    assert split.by == "batches"
    assert [len(split.batches[k]) for k in ("train", "validation", "test")] == [2, 1, 1]
    batch = adata.obs["batch"].astype(str).to_numpy()
    # no batch crosses parts; every cell lands in exactly one part
    for part, names in split.batches.items():
        idx = getattr(split, part)
        assert set(batch[idx]) == set(names)
    assert np.array_equal(
        np.sort(np.concatenate([split.train, split.validation, split.test])),
        np.arange(adata.n_obs),
    )
    assert make_split(adata, seed=1).batches == split.batches  # seeded
    add_model_batch(adata, split)
    model_batch = adata.obs[MODEL_BATCH_KEY].astype(str).to_numpy()
    assert set(model_batch) == set(split.batches["train"] + split.batches["validation"])
    assert np.array_equal(model_batch[split.fit], batch[split.fit])


def test_split_by_cells_with_few_batches():
    adata = toy_adata(n_batches=2)
    split = make_split(adata, seed=0)
    assert split.by == "cells"
    assert (len(split.train), len(split.validation), len(split.test)) == (120, 60, 60)
    assert split.train_size == pytest.approx(120 / 180)


def test_one_seeded_cell_split():
    """make_split (few batches) and Split.by_cells are cell_split: the same seed gives the same
    cells, as it did before they shared it."""
    assert [p.tolist() for p in cell_split(12, seed=0)] == [
        [2, 4, 5, 7, 9, 11],
        [0, 3, 6],
        [1, 8, 10],
    ]
    assert [p.tolist() for p in cell_split(12, (0.6, 0.2, 0.2), seed=3)] == [
        [0, 1, 2, 4, 7, 10, 11],
        [6, 9],
        [3, 5, 8],
    ]
    adata = toy_adata(n_batches=2)
    for seed in (0, 5):
        expected = cell_split(adata.n_obs, seed=seed)
        for split in (make_split(adata, seed=seed), Split.by_cells(adata.n_obs, seed=seed)):
            for part, idx in zip((split.train, split.validation, split.test), expected):
                np.testing.assert_array_equal(part, idx)
    with pytest.raises(ValueError, match="fractions"):
        cell_split(10, (0.5, 0.5, 0.5))


class _Model:
    """Stands in for a trained model: its ``get_reconstruction_error`` returns or raises."""

    def __init__(self, outcome):
        self.outcome = outcome

    def get_reconstruction_error(self, adata):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return {"reconstruction_loss": self.outcome}


def test_reconstruction_error_lets_unexpected_errors_through():
    adata = toy_adata(n_cells=10)
    assert reconstruction_error(_Model(-12.5), adata) == 12.5
    assert np.isnan(reconstruction_error(_Model(NotImplementedError()), adata))
    assert np.isnan(reconstruction_error(object(), adata))  # no estimator
    assert np.isnan(reconstruction_error(_Model(1.0), adata[:0]))  # no cells
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        reconstruction_error(_Model(RuntimeError("CUDA out of memory")), adata)


def test_registries():
    assert {
        "CapVI",
        "CapVI-e2e",
        "CapVI-GMVAE",
        "VampVI-VAMP",
        "NBAutoencoder",
        "SCVI",
        "SCANVI",
        "LinearSCVI",
        "Scanorama",
        "PCA",
    } <= set(METHODS)
    defaults = [m.name for m in resolve_methods(None)]
    assert "CapVI-GMVAE" not in defaults and "CapVI-e2e" in defaults  # GMVAE: when named
    with pytest.raises(ValueError, match="Unknown method"):
        resolve_methods(["nope"])
    adata = load_dataset("pbmc68k_reduced", max_cells=100, seed=0)
    assert adata.n_obs == 100 and np.asarray(adata.X.sum(0)).min() > 0
    quick = BenchmarkConfig.quick(max_epochs=3)
    assert quick.max_epochs == 3 and quick.scib_fast


def test_local_model_selection_picks_best_scores():
    adata = toy_adata(n_batches=2)
    split = make_split(adata)
    add_model_batch(adata, split)
    config = BenchmarkConfig.quick(
        max_epochs=2,
        n_mc_samples=5,
        classifier_grid={"classifier_n_hidden": [16, 32]},
        capvi_grid={"prior_scale": [1.0, 0.125]},
    )
    chosen, table = select_capvi(adata, split, config, backend="local", log=lambda *_: None)
    assert set(chosen) == {"classifier_n_hidden", "prior_scale"}
    classifier = table[table["grid"] == "classifier"]
    capvi = table[table["grid"] == "capvi"]
    assert len(classifier) == 2 and len(capvi) == 2
    best_ce = classifier.loc[classifier[CLASSIFIER_METRIC].idxmin(), "classifier_n_hidden"]
    assert chosen["classifier_n_hidden"] == best_ce
    assert chosen["prior_scale"] == capvi.loc[capvi[CAPVI_METRIC].idxmax(), "prior_scale"]
    assert np.isfinite(capvi[CAPVI_METRIC]).all() and (capvi[CAPVI_METRIC] < 0).all()


def test_scvi_family_gets_the_single_stage_epoch_budget():
    """With an epoch cap E, SCVI (like every single-stage VAE) trains 2E epochs; SCANVI's
    epochs and history include its SCVI pre-training."""
    adata = toy_adata(n_cells=120, n_batches=2)
    split = make_split(adata)
    add_model_batch(adata, split)
    config = BenchmarkConfig.quick(max_epochs=2, n_mc_samples=5)
    scvi_out = METHODS["SCVI"].fit(adata, split, config)
    assert scvi_out.epochs == 4
    assert scvi_out.latent.shape == (adata.n_obs, 20)
    scanvi_out = METHODS["SCANVI"].fit(adata, split, config)
    assert scanvi_out.epochs == 4 + 2
    assert any(k.startswith("scvi_") for k in scanvi_out.history)
    assert len(scanvi_out.test_predictions) == len(split.test)


def test_report_claims_verdicts():
    """The report's claim checks: CapVI vs SCVI likelihood and cLISI; VAMP vs VAE strictly."""
    from scvi_capvi.benchmark._report import _claims

    rows = [
        ("CapVI", {"test_marginal_ll": -700.0, "median_clisi": 1.1}),
        ("SCVI", {"test_marginal_ll": -710.0, "median_clisi": 1.3}),
        ("Scanorama", {"median_clisi": 1.05}),
        ("VampVI-VAE", {"active_units": 20, "pcs_95": 16, "cell_type_asw": 0.1}),
        ("VampVI-VAMP", {"active_units": 20, "pcs_95": 8, "cell_type_asw": 0.3}),
    ]
    results = pd.DataFrame([{"dataset": "d", "method": m, **v} for m, v in rows])
    text = "\n".join(_claims(results, [{"dataset": "d"}]))
    assert "| d | -700.00 | -710.00 | 10.00 |" in text
    assert "LL yes, cLISI no" in text  # Scanorama's cLISI is lower
    assert "| d | 20 / 20 | 16 / 8 | 0.100 / 0.300 | 2 of 3 |" in text  # a tie is not "more"


def test_nonfinite_validation_marks_a_run_as_failed():
    from scvi_capvi.benchmark._evaluation import nonfinite_validation

    ok = {"reconstruction_loss_validation": pd.DataFrame({"v": [3.0, 2.0]})}
    assert nonfinite_validation(ok) is None
    assert nonfinite_validation(None) is None
    bad = {
        "stage1_classifier_cross_entropy_validation": pd.DataFrame({"v": [1.0]}),
        "stage2_reconstruction_loss_validation": pd.DataFrame({"v": [5.0, np.nan]}),
    }
    assert nonfinite_validation(bad) == "stage2_reconstruction_loss_validation = nan at epoch 2"


def test_models_train_when_the_split_leaves_a_last_minibatch_of_one_cell():
    """scvi-tools only warns when a given `train_size` leaves a last minibatch of 1 cell, and
    its batch norm then fails; the SCVI and SCANVI recipes and CapVI's train drop that
    minibatch."""
    from scvi_capvi.benchmark._recipes import fit_scanvi_from_scvi, fit_scvi_as_users_run_it

    adata = toy_adata(n_cells=258, n_batches=2)  # ceil(0.5 * 258) = 129 = 128 + 1
    quiet = {"enable_progress_bar": False}
    fit = fit_scvi_as_users_run_it(adata, 0.5, max_epochs=1, train_kwargs=quiet)
    scanvi = fit_scanvi_from_scvi(fit, train_size=0.5, train_kwargs={**quiet, "max_epochs": 1})
    for model in (fit.model, scanvi.model):
        assert len(model.history["elbo_train"]) == 1
        assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    capvi = CapVI(adata)
    capvi.train(classifier_epochs=1, frozen_epochs=1, max_epochs=1, train_size=0.5, **quiet)
    assert np.isfinite(capvi.get_elbo()) and len(capvi.history["elbo_train"]) == 1
