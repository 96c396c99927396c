"""scIB bio-conservation and batch-correction totals (Luecken et al. 2022) via scib-metrics."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData
from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

from ._neighbors import check_per_cell, nearest_neighbors

AGGREGATES = ("Bio conservation", "Batch correction", "Total")


def scib_scores(
    embeddings: Mapping[str, np.ndarray],
    labels: np.ndarray,
    batch: np.ndarray,
    X_pre: np.ndarray | None = None,
    fast: bool = False,
    progress_bar: bool = False,
) -> pd.DataFrame:
    """scIB metrics and their bio-conservation / batch-correction / total scores.

    Runs :class:`scib_metrics.benchmark.Benchmarker` (Luecken et al. 2022, *Nat. Methods*
    19:41) on the given embeddings of the same cells, with exact kNN graphs
    (:func:`~scvi_capvi.metrics.nearest_neighbors`). ``Total = 0.6 bio + 0.4 batch`` as in the
    scIB paper. Scores are not min-max scaled across embeddings, so a single embedding gets
    its absolute scores.

    Parameters
    ----------
    embeddings
        Name → ``(n_cells, n_dims)`` embedding, rows aligned with ``labels`` and ``batch``.
    labels, batch
        ``(n_cells,)`` cell types and batches (at least two batches).
    X_pre
        Unintegrated reference embedding (e.g. PCA of log-normalised counts) for the PCR
        comparison; default: the first embedding (PCR comparison is then 0 for it).
    fast
        Skip the slow metrics (kBET, BRAS, isolated labels, PCR comparison): bio conservation is
        then k-means NMI/ARI, silhouette and cLISI; batch correction iLISI and graph
        connectivity.
    progress_bar
        Show scib-metrics' progress bars.

    Returns
    -------
    ``DataFrame`` indexed by embedding name, one column per metric plus
    ``"Bio conservation"``, ``"Batch correction"`` and ``"Total"`` (all in ``[0, 1]``, higher is
    better).
    """
    if not embeddings:
        raise ValueError("`embeddings` is empty.")
    names = list(embeddings)
    first = np.asarray(embeddings[names[0]], dtype=np.float32)
    n_cells = first.shape[0]
    labels = check_per_cell(labels, n_cells, "labels").astype(str)
    batch = check_per_cell(batch, n_cells, "batch").astype(str)
    if np.unique(batch).size < 2:
        raise ValueError("scIB batch-correction metrics need at least two batches.")
    if np.unique(labels).size < 2:
        raise ValueError("scIB bio-conservation metrics need at least two cell types.")
    adata = AnnData(np.zeros((n_cells, 1), dtype=np.float32))
    adata.obs["labels"] = pd.Categorical(labels)
    adata.obs["batch"] = pd.Categorical(batch)
    for name in names:
        emb = np.asarray(embeddings[name], dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != n_cells:
            raise ValueError(f"embedding {name!r} must have {n_cells} rows, got {emb.shape}.")
        adata.obsm[name] = emb
    adata.obsm["X_pre"] = first if X_pre is None else np.asarray(X_pre, dtype=np.float32)
    bio = BioConservation(isolated_labels=not fast)
    correction = BatchCorrection(bras=not fast, kbet_per_label=not fast, pcr_comparison=not fast)
    bench = Benchmarker(
        adata,
        batch_key="batch",
        label_key="labels",
        embedding_obsm_keys=names,
        bio_conservation_metrics=bio,
        batch_correction_metrics=correction,
        pre_integrated_embedding_obsm_key="X_pre",
        progress_bar=progress_bar,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench.prepare(neighbor_computer=nearest_neighbors)
        bench.benchmark()
    table = bench.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type").astype(float)
    table.index.name = None
    return table.loc[names]
