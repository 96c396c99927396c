"""scVI's PBMC-11K (10x pbmc4k + pbmc8k, 3,346 genes, 9 labels), rebuilt from its sources."""

from __future__ import annotations

import logging
import os
import tarfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scvi_capvi._catalog import find_mtx_folder as _find_mtx_folder

from ._datasets import DATA_DIR_ENV, _candidate_data_dirs
from ._sources import _download

logger = logging.getLogger(__name__)

METADATA_FOLDER = "pbmc11k_metadata"
TENX_FOLDER = "10x"
BATCHES = ("pbmc8k", "pbmc4k")  # order of the rows of pbmc_metadata.pickle
_METADATA_URLS = {
    "pbmc_metadata.pickle": "https://github.com/YosefLab/scVI-data/raw/master/pbmc_metadata.pickle",
    "gene_info.csv": "https://github.com/YosefLab/scVI-data/raw/master/gene_info.csv",
}
_TENX_URL = "http://cf.10xgenomics.com/samples/cell-exp/2.1.0/{name}/{name}_filtered_gene_bc_matrices.tar.gz"


# --- download (needs network; not exercised by the offline tests) --------------------------
def _download_10x(name: str, folder: Path) -> None:
    archive = folder / f"{name}_filtered_gene_bc_matrices.tar.gz"
    if not archive.is_file():
        _download(_TENX_URL.format(name=name), archive)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(folder, filter="data")


# --- local files --------------------------------------------------------------------------
def _read_metadata(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell table (metadata order) and the gene table of scVI's ``pbmc_dataset``."""
    meta = pd.read_pickle(folder / "pbmc_metadata.pickle")
    genes = pd.read_csv(folder / "gene_info.csv")
    barcodes = meta["barcodes"].index.to_numpy().astype(str)
    # design["batchpbmc4k"] is the batch; rows are pbmc8k first, then pbmc4k
    is_4k = meta["design"]["batchpbmc4k"].to_numpy().astype(bool)
    labels = np.asarray(meta["clusters"])
    names = np.asarray(meta["list_clusters"]).astype(str)
    cells = pd.DataFrame(
        {
            "barcode": barcodes,
            "batch": np.where(is_4k, "pbmc4k", "pbmc8k"),
            "labels": labels,
            "str_labels": names[labels],
        }
    )
    raw_qc = meta["raw_qc"].reset_index(drop=True)
    cells = pd.concat([cells, raw_qc.add_prefix("qc_")], axis=1)
    cells["qc_pc"] = list(np.asarray(meta["qc_pc"]))
    return cells, genes


def pbmc11k(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ad.AnnData:
    """PBMC-11K of scVI (Lopez et al. 2018, Nature Methods), the public dataset of capVI.

    10x Genomics' pbmc4k and pbmc8k filtered matrices (Cell Ranger 2.1.0) are joined, and the
    cells, 3,346 genes and 9 labels of scVI's ``pbmc_dataset`` are taken from
    ``pbmc_metadata.pickle`` and ``gene_info.csv`` (``YosefLab/scVI-data``). Cells are matched
    on (batch, barcode), so a barcode present in both runs is never crossed over. The 49
    metadata barcodes ending in ``-11`` are absent from 10x's filtered matrices and dropped, as
    scVI does, which leaves 11,990 cells.

    Expected layout (downloaded there when absent and ``download=True``)::

        <data_dir>/pbmc11k_metadata/{pbmc_metadata.pickle, gene_info.csv}
        <data_dir>/10x/pbmc4k/**/matrix.mtx, genes.tsv, barcodes.tsv
        <data_dir>/10x/pbmc8k/**/...

    Parameters
    ----------
    data_dir
        Folder for the files. Defaults to ``$SCVI_CAPVI_DATA_DIR``, then to ``shared/data``
        next to a source checkout.
    download
        Fetch missing files from GitHub / 10x Genomics (needs network access).

    Returns
    -------
    AnnData in metadata order: ``X`` and ``layers["counts"]`` CSR counts, ``var_names`` gene
    symbols (``var["gene_ids"]`` Ensembl), ``obs["cell_type"]`` (``str_labels``),
    ``obs["batch"]`` (``pbmc4k`` / ``pbmc8k``), ``obs["labels"]`` (integer codes), the raw QC
    columns as ``obs["qc_*"]`` and ``obsm["qc_pc"]``.
    """
    dirs = _candidate_data_dirs(data_dir)
    if not dirs:
        raise FileNotFoundError(
            f"No data folder for pbmc11k: pass data_dir or set ${DATA_DIR_ENV}."
        )
    root = next((d for d in dirs if (d / METADATA_FOLDER).is_dir()), dirs[0])

    meta_dir = root / METADATA_FOLDER
    for filename, url in _METADATA_URLS.items():
        if not (meta_dir / filename).is_file():
            if not download:
                raise FileNotFoundError(
                    f"{meta_dir / filename} is missing; call with download=True or copy it from "
                    f"{url}."
                )
            _download(url, meta_dir / filename)
    cells, genes = _read_metadata(meta_dir)

    import scanpy as sc

    parts = []
    for name in BATCHES:
        folder = root / TENX_FOLDER / name
        mtx_dir = _find_mtx_folder(folder)
        if mtx_dir is None:
            if not download:
                raise FileNotFoundError(
                    f"No 10x matrix.mtx under {folder}; call with download=True or extract "
                    f"{_TENX_URL.format(name=name)} there."
                )
            _download_10x(name, folder)
            mtx_dir = _find_mtx_folder(folder)
        counts = sc.read_10x_mtx(mtx_dir, var_names="gene_ids", make_unique=False)
        wanted = cells[cells["batch"] == name]
        present = wanted["barcode"].isin(counts.obs_names)
        if (~present).any():
            logger.info(
                "%s: %d metadata barcodes not in the 10x matrix (dropped)", name, (~present).sum()
            )
        part = counts[wanted["barcode"][present].to_numpy()].copy()
        part.obs_names = wanted.index[present].astype(str)  # metadata row number, unique
        parts.append(part)

    adata = ad.concat(parts, join="inner", merge="first")
    keep = genes["ENSG"].isin(adata.var_names).to_numpy()
    if not keep.all():
        warnings.warn(
            f"{(~keep).sum()} of the {len(genes)} PBMC-11K genes are missing from the 10x "
            "matrices and were dropped.",
            UserWarning,
            stacklevel=2,
        )
    genes = genes[keep]
    adata = adata[:, genes["ENSG"].to_numpy()].copy()

    rows = cells.loc[adata.obs_names.astype(int)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rows["str_labels"]),
            "batch": pd.Categorical(rows["batch"], categories=list(BATCHES)),
            "labels": rows["labels"].to_numpy(),
            "str_labels": rows["str_labels"].to_numpy(),
        },
        index=pd.Index(rows["barcode"].to_numpy(), name="barcode"),
    )
    for column in rows.columns[rows.columns.str.startswith("qc_") & (rows.columns != "qc_pc")]:
        obs[column] = rows[column].to_numpy()
    if not obs.index.is_unique:  # a barcode in both runs: keep names unique
        obs.index = obs.index + "-" + obs["batch"].astype(str)

    X = sparse.csr_matrix(adata.X, dtype=np.float32)
    out = ad.AnnData(
        X=X,
        obs=obs,
        var=pd.DataFrame(
            {"gene_ids": genes["ENSG"].to_numpy()}, index=pd.Index(genes["GS"].astype(str))
        ),
        obsm={"qc_pc": np.stack(rows["qc_pc"].to_numpy()).astype(np.float32)},
    )
    out.var_names_make_unique()
    out.layers["counts"] = X.copy()
    return out
