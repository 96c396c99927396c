"""Loaders for the benchmark datasets: local ``.h5ad`` copies, downloads from pinned public
sources (cached) and scanpy's bundled PBMC 68k."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

# the names, sizes and folders live in a module without heavy imports, for the command line
from scvi_capvi._catalog import DATA_DIR_ENV
from scvi_capvi._catalog import H5AD_DATASETS as _REGISTRY
from scvi_capvi._catalog import candidate_data_dirs as _candidate_data_dirs
from scvi_capvi._catalog import find_h5ad as _find_file
from scvi_capvi._catalog import h5ad_names as _available_names

from ._sources import SOURCES, build_dataset, default_cache_dir

logger = logging.getLogger(__name__)


def list_datasets(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The known benchmark datasets, their expected size and whether a local copy was found.

    Parameters
    ----------
    data_dir
        Folder holding ``<name>.h5ad`` files. Defaults to ``$SCVI_CAPVI_DATA_DIR``, then to
        ``shared/data`` next to a source checkout.

    Returns
    -------
    One row per dataset (index ``name``): ``n_cells``, ``n_genes``, ``n_cell_types``,
    ``n_batches``, ``description``, ``path`` (``None`` when absent), ``available`` and
    ``downloadable`` (:func:`read_dataset` can fetch it when absent).
    Files found locally but not in the registry are listed too, with unknown sizes.
    """
    dirs = _candidate_data_dirs(data_dir)
    names = list(_REGISTRY) + [n for n in _available_names(dirs) if n not in _REGISTRY]
    rows = []
    for name in names:
        info = _REGISTRY.get(name)
        path = _find_file(name, dirs)
        rows.append(
            {
                "name": name,
                "n_cells": info.n_cells if info else pd.NA,
                "n_genes": info.n_genes if info else pd.NA,
                "n_cell_types": info.n_cell_types if info else pd.NA,
                "n_batches": info.n_batches if info else pd.NA,
                "description": info.description if info else "",
                "path": str(path) if path is not None else None,
                "available": path is not None,
                "downloadable": name in SOURCES,
            }
        )
    return pd.DataFrame(rows).set_index("name")


def _check_counts(X, where: str) -> None:
    """Raise if ``X`` is not a matrix of non-negative integer counts."""
    values = X.data if sparse.issparse(X) else np.asarray(X)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where} contains NaN or infinite values; raw counts are expected.")
    if values.size and values.min() < 0:
        raise ValueError(f"{where} contains negative values; raw counts are expected.")
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(
            f"{where} contains non-integer values (normalised or log-transformed data?); "
            "raw counts are expected."
        )


def read_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Read a benchmark dataset from a local ``<name>.h5ad``, downloading it when possible.

    The six registered datasets (:func:`list_datasets`) were assembled from public GitHub
    repositories (provenance in ``shared/data/SOURCES.md``). Those with a pinned download
    source (``kang2018_pbmc_ifnb_muscat_subset``) are looked for in ``data_dir``, then in the
    cache folder, and otherwise downloaded, checked against their SHA-256, converted and
    written to the cache folder; the others are only available as local copies.

    Parameters
    ----------
    name
        File stem, e.g. ``"kang2018_pbmc_ifnb_muscat_subset"``.
    data_dir
        Folder holding the file. Defaults to ``$SCVI_CAPVI_DATA_DIR``, then to ``shared/data``
        next to a source checkout.
    download
        Download a dataset that has a source and is in neither ``data_dir`` nor the cache
        (needs network access; the conversion needs ``pip install "scvi-capvi[data]"``).
    cache_dir
        Folder for downloaded datasets. Defaults to ``$SCVI_CAPVI_CACHE_DIR``, then to
        ``~/.cache/scvi-capvi``.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR) and ``layers["counts"]``, and string categoricals
    ``obs["cell_type"]`` and ``obs["batch"]``.

    Raises
    ------
    FileNotFoundError
        When no ``<name>.h5ad`` is found and none is downloaded; the message lists where it
        looked and what exists.
    ValueError
        When the file lacks ``obs["cell_type"]`` / ``obs["batch"]`` or ``X`` is not counts, or
        when a download does not match its SHA-256.
    """
    dirs = _candidate_data_dirs(data_dir)
    path = _find_file(name, dirs)
    if path is None and name in SOURCES:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        dirs.append(cache)
        path = _find_file(name, [cache])
        if path is None and download:
            path = build_dataset(name, cache)
    if path is None:
        looked = ", ".join(str(d) for d in dirs) or (
            f"nowhere: pass data_dir or set ${DATA_DIR_ENV}"
        )
        found = _available_names(dirs)
        if name in SOURCES:
            hint = f"Call with download=True to fetch it from {SOURCES[name].url}."
        elif name in _REGISTRY:
            hint = (
                f"'{name}' is only available as a local copy (built from GitHub repositories, "
                f"no stable download URL); point data_dir or ${DATA_DIR_ENV} at the folder "
                "holding it."
            )
        else:
            hint = f"Unknown dataset '{name}'; registered names: {', '.join(_REGISTRY)}."
        raise FileNotFoundError(
            f"No '{name}.h5ad' found. Looked in: {looked}. "
            f"Datasets there: {', '.join(found) or 'none'}. {hint}"
        )

    adata = ad.read_h5ad(path)
    missing = [key for key in ("cell_type", "batch") if key not in adata.obs]
    if missing:
        raise ValueError(
            f"{path} lacks obs column(s) {missing}; expected 'cell_type' and 'batch'."
        )
    _check_counts(adata.X, f"{path} X")
    if not sparse.issparse(adata.X):
        adata.X = sparse.csr_matrix(adata.X)
    for key in ("cell_type", "batch"):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    if "counts" not in adata.layers:
        adata.layers["counts"] = adata.X.copy()

    info = _REGISTRY.get(name)
    if info is not None and adata.shape != (info.n_cells, info.n_genes):
        warnings.warn(
            f"{path} holds {adata.n_obs} cells x {adata.n_vars} genes; the registry expects "
            f"{info.n_cells} x {info.n_genes}. Is it a different version of '{name}'?",
            UserWarning,
            stacklevel=2,
        )
    logger.info("Read %s: %d cells x %d genes", path, adata.n_obs, adata.n_vars)
    return adata


def kang2018(
    save_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ad.AnnData:
    """Kang et al. (2018) PBMCs, control and IFN-beta stimulated: muscat's 1,556-cell subset.

    1,556 cells x 1,267 genes of GEO GSE96583 (batch 2, 10x Chromium v2) as shipped in
    muscat's ``data/example_sce.rda`` (Crowell et al. 2020), at most 100 cells per cluster and
    sample. Read from a local ``kang2018_pbmc_ifnb_muscat_subset.h5ad`` in ``data_dir`` or
    ``save_path`` when there; otherwise the ``.rda`` is downloaded from GitHub (pinned commit,
    SHA-256 checked), converted (needs ``pip install "scvi-capvi[data]"``) and the ``.h5ad``
    written to ``save_path``. See :func:`read_dataset`.

    Parameters
    ----------
    save_path
        Folder for the download and the converted ``.h5ad``. Defaults to
        ``$SCVI_CAPVI_CACHE_DIR``, then to ``~/.cache/scvi-capvi``.
    data_dir
        Folder of local dataset copies, looked in first. Defaults to ``$SCVI_CAPVI_DATA_DIR``,
        then to ``shared/data`` next to a source checkout.
    download
        Download the source when no ``.h5ad`` is found (needs network access).

    Returns
    -------
    AnnData: ``X`` and ``layers["counts"]`` int32 CSR UMI counts; ``obs["cell_type"]`` (5
    author annotations, muscat's ``cluster_id``), ``obs["batch"]`` (4 samples: ``ctrl101``,
    ``ctrl107``, ``stim101``, ``stim107``), ``obs["condition"]`` (``ctrl`` / ``stim``) and
    ``obs["donor"]`` (``101`` / ``107``). The batch is confounded with the stimulation: use
    ``donor`` for purely technical batches.
    """
    return read_dataset(
        "kang2018_pbmc_ifnb_muscat_subset",
        data_dir=data_dir,
        download=download,
        cache_dir=save_path,
    )


def pbmc68k_reduced(atol: float = 0.05) -> ad.AnnData:
    """scanpy's bundled PBMC 68k subset (700 cells, 10 types) with its raw counts recovered.

    ``scanpy.datasets.pbmc68k_reduced().raw.X`` is ``log1p(counts / n_counts * 1e4)`` (Zheng
    et al. 2017, *Nat. Commun.*), so ``expm1(raw.X) * n_counts / 1e4`` gives the counts back.
    The stored normalisation is off by up to ~0.07 % per cell (float32 storage), which for a
    count of ~200 is a deviation of ~0.08; one least-squares scale per cell, fitted against the
    rounded counts, removes it. Every value must then lie within ``atol`` of an integer.

    Parameters
    ----------
    atol
        Largest accepted distance of a recovered value to its nearest integer.

    Returns
    -------
    AnnData, 700 cells x 765 genes (``raw.var_names``): ``X`` and ``layers["counts"]`` CSR
    float32 integer counts; ``obs["cell_type"]`` (the 10 ``bulk_labels``), ``obs["batch"]``
    (one category, ``"pbmc68k"``), the original ``obs`` columns, ``obsm["X_pca"]`` and
    ``obsm["X_umap"]`` of the processed data.

    Raises
    ------
    ValueError
        When a value is not within ``atol`` of an integer (counts not recoverable).
    """
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    logged = sparse.csr_matrix(src.raw.X, dtype=np.float64)
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)

    values = logged.tocoo()
    rows = values.row
    scaled = np.expm1(values.data) * n_counts[rows] / 1e4
    rounded = np.round(scaled)
    # per-cell least-squares correction c = <k, v> / <v, v> of the stored size factor
    correction = np.bincount(rows, rounded * scaled, minlength=src.n_obs) / np.maximum(
        np.bincount(rows, scaled * scaled, minlength=src.n_obs), np.finfo(float).tiny
    )
    correction[correction == 0] = 1.0
    if np.abs(correction - 1).max() > 1e-2:
        raise ValueError(
            "pbmc68k_reduced: raw.X is not log1p(counts / n_counts * 1e4) "
            f"(size factors off by up to {np.abs(correction - 1).max():.2%})."
        )
    scaled *= correction[rows]
    deviation = np.abs(scaled - np.round(scaled))
    if deviation.max() > atol:
        worst = int(deviation.argmax())
        raise ValueError(
            "pbmc68k_reduced: cannot recover integer counts from raw.X: "
            f"value {scaled[worst]:.4f} "
            f"(cell {src.obs_names[rows[worst]]}, gene {src.raw.var_names[values.col[worst]]}) "
            f"is {deviation[worst]:.4f} from an integer (tolerance {atol}); "
            f"{int((deviation > atol).sum())} values exceed it."
        )
    counts = sparse.csr_matrix(
        (np.round(scaled).astype(np.float32), (rows, values.col)), shape=logged.shape
    )
    counts.eliminate_zeros()
    counts.sort_indices()

    obs = src.obs.copy()
    obs["cell_type"] = obs["bulk_labels"].astype(str).astype("category")
    obs["batch"] = pd.Categorical(["pbmc68k"] * src.n_obs)
    adata = ad.AnnData(
        X=counts,
        obs=obs,
        var=pd.DataFrame(index=src.raw.var_names.copy()),
        obsm={key: src.obsm[key].copy() for key in ("X_pca", "X_umap") if key in src.obsm},
    )
    adata.layers["counts"] = counts.copy()
    return adata
