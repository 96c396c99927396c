"""Clustering without labels: CapVI's GMVAE components against SCVI + k-means / Leiden."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from scvi_capvi.metrics import clustering_agreement, components_used
from scvi_capvi.model import CapVI

from ._datasets import BATCH_KEY, LABELS_KEY
from ._recipes import fit_scvi_as_users_run_it


def kmeans_clusters(latent: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means (scikit-learn, 10 restarts) on an embedding."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(latent)


def leiden_clusters(
    latent: np.ndarray, n_clusters: int, seed: int = 0, max_steps: int = 25
) -> tuple[np.ndarray, float]:
    """Leiden clusters (scanpy, 15-neighbour graph of the embedding) at the resolution that
    gives ``n_clusters`` clusters, found by bisection on ``[0.01, 5]``; the closest count
    when no resolution gives exactly that many. Returns the clusters and the resolution."""
    import scanpy as sc

    adata = AnnData(np.zeros((latent.shape[0], 1), dtype=np.float32))
    adata.obsm["latent"] = latent
    sc.pp.neighbors(adata, use_rep="latent", random_state=seed)
    low, high = 0.01, 5.0
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(max_steps):
        resolution = (low + high) / 2
        sc.tl.leiden(
            adata,
            resolution=resolution,
            key_added="leiden",
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        clusters = adata.obs["leiden"].cat.codes.to_numpy()
        n_found = len(np.unique(clusters))
        if best is None or abs(n_found - n_clusters) < best[0]:
            best = (abs(n_found - n_clusters), clusters, resolution)
        if n_found == n_clusters:
            break
        low, high = (resolution, high) if n_found < n_clusters else (low, resolution)
    return best[1], best[2]


def fit_gmvae(
    adata: AnnData,
    n_components: int,
    max_epochs: int = 100,
    batch_key: str | None = BATCH_KEY,
    **gmvae_kwargs,
) -> tuple[CapVI, float]:
    """Register a copy of ``adata`` without labels (with the batch when it has several) and
    train CapVI's GMVAE with ``n_components`` components for ``max_epochs`` epochs, split as
    :meth:`~scvi_capvi.model.CapVI.train` splits them by default (half VAE warm-up, half end to
    end). Returns the model and its training wall time in seconds."""
    data = adata.copy()
    if batch_key not in data.obs or data.obs[batch_key].nunique() < 2:
        batch_key = None
    CapVI.setup_anndata(data, batch_key=batch_key)
    model = CapVI(data, n_components=n_components, **gmvae_kwargs)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs - max_epochs // 2, frozen_epochs=max_epochs // 2)
    return model, time.perf_counter() - start


def gmvae_clustering(
    adata: AnnData,
    n_components: int | None = None,
    max_epochs: int = 100,
    seed: int = 0,
    batch_key: str | None = BATCH_KEY,
    labels_key: str = LABELS_KEY,
    gmvae_kwargs: dict | None = None,
) -> pd.DataFrame:
    """Fit CapVI without labels (a GMVAE with ``n_components`` components) and scvi-tools'
    SCVI (its defaults) on the same cells for ``max_epochs`` epochs each, and score the
    GMVAE's components and k-means / Leiden clusters of SCVI's latent against ``labels_key``.
    ``gmvae_kwargs`` go to :class:`~scvi_capvi.model.CapVI` (e.g. SCVI's network:
    ``{"n_hidden": 128, "n_layers": 1, "dropout_rate": 0.1}``).

    The GMVAE splits its epochs as :meth:`~scvi_capvi.model.CapVI.train` does by default (half
    VAE warm-up, half end to end; its short stage 1 trains only q(c|x)). Both fit on every cell
    with scvi-tools' default 90/10 train / validation split, and every cell is scored.

    Returns one row per method: ``ari``, ``nmi``, ``n_clusters`` (distinct clusters),
    ``components_used`` (clusters holding >= 1 % of the cells), ``seconds`` (training wall
    time of the model that made the latent) and, for the GMVAE, ``cost_vs_scvi``.
    """
    labels = adata.obs[labels_key].to_numpy()
    k = int(n_components or pd.unique(labels).size)
    if batch_key not in adata.obs or adata.obs[batch_key].nunique() < 2:
        batch_key = None
    rows = []

    def row(method, clusters, seconds, **extra):
        # empty components count as unused, so the found clusters suffice
        codes = pd.factorize(np.asarray(clusters))[0]
        n_found = int(codes.max()) + 1
        rows.append(
            {
                "method": method,
                **clustering_agreement(labels, codes),
                "n_clusters": n_found,
                "components_used": components_used(codes, n_found),
                "seconds": seconds,
                **extra,
            }
        )

    scvi.settings.seed = seed
    data = adata.copy()
    fit = fit_scvi_as_users_run_it(data, 0.9, batch_key=batch_key, max_epochs=max_epochs)
    latent = fit.model.get_latent_representation()
    row("SCVI + k-means", kmeans_clusters(latent, k, seed), fit.seconds)
    leiden, resolution = leiden_clusters(latent, k, seed)
    row("SCVI + Leiden", leiden, fit.seconds, resolution=resolution)
    scvi_seconds = fit.seconds

    scvi.settings.seed = seed
    model, seconds = fit_gmvae(adata, k, max_epochs, batch_key, **(gmvae_kwargs or {}))
    components = model.predict(soft=True).to_numpy().argmax(1)
    row("CapVI GMVAE", components, seconds, cost_vs_scvi=seconds / scvi_seconds)
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", seed)
    frame.insert(0, "n_components", k)
    frame.attrs["gmvae"] = model
    return frame
