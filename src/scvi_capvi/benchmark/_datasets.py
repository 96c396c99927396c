"""The benchmark's datasets: which can run here, and each loaded the same way (raw counts in
``X``, ``obs['cell_type']``, ``obs['batch']``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from anndata import AnnData

from scvi_capvi._catalog import pbmc11k_available
from scvi_capvi.data import list_datasets, pbmc11k, pbmc68k_reduced, read_dataset

LABELS_KEY = "cell_type"
BATCH_KEY = "batch"
UNLABELED = "Unknown"
"""The label of a cell whose type is not given to a model."""


def available_datasets(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Every dataset the benchmark can run here: ``pbmc68k_reduced`` (always), each ``.h5ad``
    of the data folder, and ``pbmc11k`` when its 10x matrices are there."""
    names = ["pbmc68k_reduced"]
    try:
        table = list_datasets(data_dir)
        names += [n for n in table.index if bool(table.loc[n].get("available", True))]
    except Exception as err:
        warnings.warn(f"No local datasets listed ({err}).", UserWarning, stacklevel=2)
    if pbmc11k_available(data_dir):
        names.append("pbmc11k")
    return list(dict.fromkeys(names))


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, max_cells: int | None = None, seed=0
) -> AnnData:
    """A benchmark dataset with raw counts in ``X``, ``obs['cell_type']`` and ``obs['batch']``;
    at most ``max_cells`` cells (seeded uniform subsample)."""
    if name == "pbmc68k_reduced":
        adata = pbmc68k_reduced()
    elif name == "pbmc11k":
        adata = pbmc11k(data_dir=data_dir or data_dir_default(), download=False)
    else:
        adata = read_dataset(name, data_dir)
    if max_cells is not None and adata.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[keep].copy()
    for key in (LABELS_KEY, BATCH_KEY):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    # genes with no count in the (sub)sample carry no information and break nothing but PCA
    counts = np.asarray(adata.X.sum(axis=0)).ravel()
    if (counts == 0).any():
        adata = adata[:, counts > 0].copy()
    adata.uns["benchmark_name"] = name
    return adata


def data_dir_default() -> Path | None:
    from scvi_capvi.data._datasets import _candidate_data_dirs

    dirs = _candidate_data_dirs(None)
    return dirs[0] if dirs else None
