"""Metrics of fitted models: held-out likelihood and reconstruction, latent-space metrics,
classifier accuracy, and the check that a run trained at all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from scvi_capvi.metrics import (
    accuracy,
    active_units,
    batch_entropy_mixing,
    cell_type_asw,
    clisi,
    ilisi,
    knn_purity,
    n_pcs_for_variance,
    nearest_neighbors,
    pairwise_ilisi,
    weighted_accuracy,
)
from scvi_capvi.model import CapVI
from scvi_capvi.module._utils import default_samples_per_pass

from ._recipes import FitResult


def latent_metrics(
    latent: np.ndarray, cell_type: np.ndarray, batch: np.ndarray | None = None
) -> dict[str, float]:
    """Median cLISI (lower is better) and, with several batches, median pairwise iLISI."""
    n_neighbors = int(min(90, len(latent) - 1))
    out = {"median_clisi": float(np.median(clisi(latent, cell_type, n_neighbors=n_neighbors)))}
    if batch is not None and len(np.unique(batch)) > 1:
        values = pairwise_ilisi(latent, batch, n_neighbors=n_neighbors)
        out["median_pairwise_ilisi"] = float(np.median(values))
    return out


def latent_scores(latent: np.ndarray, labels: np.ndarray, batch: np.ndarray) -> tuple:
    """The benchmark's scalar metrics of a latent space of all cells (LISI, k-NN purity, active
    units, PCs for 95 %, ASW, batch entropy mixing) and the per-cell LISI values."""
    n_neighbors = int(min(90, len(latent) - 1))
    graph = nearest_neighbors(latent, n_neighbors)
    per_cell = {"cLISI": clisi(graph, labels, n_neighbors=n_neighbors)}
    row = {
        "median_clisi": float(np.median(per_cell["cLISI"])),
        "knn_purity": knn_purity(latent, labels, n_neighbors=min(30, len(latent) - 2)),
        "active_units": active_units(latent),
        "pcs_95": n_pcs_for_variance(latent),
    }
    if np.unique(labels).size > 1:
        row["cell_type_asw"] = cell_type_asw(latent, labels)
    if np.unique(batch).size > 1:
        per_cell["iLISI"] = pairwise_ilisi(graph, batch, n_neighbors=n_neighbors)
        row["median_pairwise_ilisi"] = float(np.median(per_cell["iLISI"]))
        row["median_ilisi"] = float(np.median(ilisi(graph, batch, n_neighbors=n_neighbors)))
        row["batch_entropy_mixing"] = batch_entropy_mixing(
            latent, batch, n_neighbors=min(50, len(latent) - 2)
        )
    return row, per_cell


def method_scores(output, labels: np.ndarray, batch: np.ndarray, split) -> tuple:
    """The benchmark's row of one method's :class:`~._methods.MethodOutput`: its
    :func:`latent_scores`, test likelihood, reconstruction and accuracy, and its training
    cost; with the per-cell LISI values."""
    row, per_cell = latent_scores(output.latent, labels, batch)
    row["test_marginal_ll"] = output.test_marginal_ll
    row["test_reconstruction"] = output.test_reconstruction
    if output.test_predictions is not None:
        y = labels[split.test]
        row["accuracy"] = accuracy(y, output.test_predictions)
        row["weighted_accuracy"] = weighted_accuracy(y, output.test_predictions)
    row["epochs"] = output.epochs
    row["train_seconds"] = output.seconds
    if output.epochs:
        per_epoch = output.seconds / output.epochs
        row["s_per_1k_cells_10_epochs"] = per_epoch * 10 / (len(split.fit) / 1000)
    return row, per_cell


def evaluate_models(
    fits: dict[str, FitResult],
    test: AnnData,
    *,
    labels_key: str = "cell_type",
    batch_key: str | None = "batch",
    n_mc_samples: int = 1000,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """One row per model: test marginal LL, latent metrics, classifier accuracy, cost."""
    rows = {}
    y = test.obs[labels_key].to_numpy()
    batch = test.obs[batch_key].to_numpy() if batch_key else None
    for name, fit in fits.items():
        model = fit.model
        query = test.copy()
        row: dict[str, float] = {}
        if isinstance(model, CapVI | scvi.model.SCANVI):
            if isinstance(model, scvi.model.SCANVI):
                query.obs[labels_key] = "Unknown"  # a held-out cell brings no annotation
            pred = model.predict(query)
            row["accuracy"] = accuracy(y, pred)
            row["weighted_accuracy"] = weighted_accuracy(y, pred)
        if isinstance(model, CapVI):
            ll = model.get_marginal_ll(query, n_mc_samples=n_mc_samples, progress_bar=progress_bar)
        else:
            ll = scvi_marginal_ll(model, query, n_mc_samples)
        row["test_marginal_ll"] = float(ll)
        row.update(latent_metrics(model.get_latent_representation(query), y, batch))
        row["epochs"] = sum(fit.epochs.values())
        row["seconds_per_epoch"] = fit.seconds_per_epoch
        row["train_seconds"] = fit.seconds
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(list(rows))
    frame.attrs["n_mc_samples"] = n_mc_samples
    return frame


def scvi_marginal_ll(model, adata: AnnData, n_mc_samples: int) -> float:
    """scvi-tools' own estimator, averaged per cell (its ``return_mean`` averages per batch)."""
    per_pass = default_samples_per_pass(n_mc_samples, 128, adata.n_vars, device=model.device)
    ll = model.get_marginal_ll(
        adata, n_mc_samples=n_mc_samples, n_mc_samples_per_pass=per_pass, return_mean=False
    )
    return float(np.mean(np.asarray(ll)))


def reconstruction_error(model, adata: AnnData) -> float:
    """Reconstruction loss per cell of ``adata`` (NB / ZINB negative log-likelihood with z
    drawn from q(z|x), as :cite:p:`Dony20,Svensson20` report it).

    NaN when there are no cells, or when the model has no scvi-tools
    ``get_reconstruction_error`` or does not implement it (``NotImplementedError``); any other
    error propagates, so that the benchmark reports the method as failed instead of leaving
    the column blank.
    """
    get_error = getattr(model, "get_reconstruction_error", None)
    if adata.n_obs == 0 or get_error is None:
        return float("nan")
    try:
        err = get_error(adata.copy())
    except NotImplementedError:
        return float("nan")
    value = err["reconstruction_loss"] if isinstance(err, dict) else err
    return float(-value) if value < 0 else float(value)


def nonfinite_validation(history: dict | None) -> str | None:
    """The first history key whose validation reconstruction loss is not finite, with its
    epoch, or ``None``. Early stopping ends such a run after an epoch or two, so its model is
    untrained: the benchmark reports it as failed instead of scoring it."""
    for key, frame in (history or {}).items():
        if key.endswith("reconstruction_loss_validation"):
            values = np.asarray(frame, dtype=float).ravel()
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                return f"{key} = {values[bad[0]]} at epoch {bad[0] + 1}"
    return None
