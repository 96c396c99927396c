"""Downloadable sources of the benchmark datasets: pinned URL, SHA-256 and converter."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SCVI_CAPVI_CACHE_DIR"
"""Environment variable naming the cache folder for downloaded datasets."""

INSTALL_HINT = 'pip install "scvi-capvi[data]"'


@dataclass(frozen=True)
class Source:
    """A public file a dataset is built from, and how.

    Attributes
    ----------
    url
        Download address, pinned to a commit so that its content cannot change.
    sha256
        Hex SHA-256 of the file; a download that does not match is discarded.
    filename
        Name of the downloaded file in the cache folder.
    convert
        Turns the downloaded file into the dataset's AnnData.
    """

    url: str
    sha256: str
    filename: str
    convert: Callable[[Path], ad.AnnData]


def default_cache_dir() -> Path:
    """``$SCVI_CAPVI_CACHE_DIR``, else ``~/.cache/scvi-capvi``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scvi-capvi"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, path: Path, sha256: str | None = None) -> None:
    """Download ``url`` to ``path`` through ``<path>.part``; check ``sha256`` when given.

    On a checksum mismatch the partial file is deleted and a ``ValueError`` names the URL and
    both hashes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s", url, path)
    tmp = path.with_suffix(path.suffix + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "scvi-capvi"})
    try:
        with urllib.request.urlopen(request) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        if sha256 is not None:
            got = _sha256(tmp)
            if got != sha256:
                raise ValueError(
                    f"Checksum mismatch for {url}: expected SHA-256 {sha256}, got {got}. "
                    "The download was deleted; retry, or report it if it persists."
                )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def fetch_source(source: Source, cache_dir: Path) -> Path:
    """The verified source file in ``cache_dir``, downloaded when absent or corrupted."""
    path = cache_dir / source.filename
    if path.is_file():
        if _sha256(path) == source.sha256:
            return path
        logger.warning("%s does not match its SHA-256; downloading it again", path)
        path.unlink()
    _download(source.url, path, source.sha256)
    return path


def build_dataset(name: str, cache_dir: Path) -> Path:
    """Download the source of ``name``, convert it and write ``<cache_dir>/<name>.h5ad``."""
    source = SOURCES[name]
    adata = source.convert(fetch_source(source, cache_dir))
    path = cache_dir / f"{name}.h5ad"
    tmp = cache_dir / f"{name}.part.h5ad"
    try:
        adata.write_h5ad(tmp, compression="gzip")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    logger.info("Wrote %s", path)
    return path


def _import_rdata():
    try:
        import rdata
    except ImportError as err:
        raise ImportError(
            f"Reading the R data file needs the package 'rdata': {INSTALL_HINT}"
        ) from err
    return rdata


def convert_kang2018(path: str | os.PathLike) -> ad.AnnData:
    """muscat's ``example_sce.rda`` (a SingleCellExperiment) as AnnData.

    The ``counts`` assay (genes x cells ``dgCMatrix``) is transposed to a cells x genes int32
    CSR matrix. ``obs``: ``cell_type`` = ``cluster_id``, ``batch`` = ``sample_id``,
    ``condition`` = ``group_id``, ``donor`` = ``sample_id`` without its ``ctrl`` / ``stim``
    prefix.
    """
    rdata = _import_rdata()
    with warnings.catch_warnings():
        # rdata has no constructors for Bioconductor's S4 classes and returns their slots
        warnings.filterwarnings("ignore", "Missing constructor", UserWarning)
        sce = rdata.read_rda(path)["example_sce"]
    counts = sce.assays.data.listData["counts"]
    genes, cells = (np.asarray(names).astype(str) for names in counts.Dimnames)
    values = np.asarray(counts.x)
    if not np.array_equal(values, np.round(values)):
        raise ValueError(f"{path}: the counts assay holds non-integer values.")
    # a CSC genes x cells matrix has the arrays of the CSR cells x genes matrix
    X = sparse.csr_matrix(
        (values.astype(np.int32), np.asarray(counts.i), np.asarray(counts.p)),
        shape=(len(cells), len(genes)),
    )
    col_data = sce.colData.listData
    sample = pd.Series(np.asarray(col_data["sample_id"]).astype(str))
    obs = pd.DataFrame(
        {
            "cell_type": np.asarray(col_data["cluster_id"]).astype(str),
            "batch": sample.to_numpy(),
            "condition": np.asarray(col_data["group_id"]).astype(str),
            "donor": sample.str.replace(r"^(ctrl|stim)", "", regex=True).to_numpy(),
        },
        index=pd.Index(cells),
    ).astype("category")
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.uns["source"] = (
        "HelenaLC/muscat data/example_sce.rda (subset of Kang et al. 2018 GSE96583 batch2); "
        "labels = cluster_id (author annotation)"
    )
    return adata


_MUSCAT_COMMIT = "7d68329bf1cd13fc6cda2a8f857bf90a605200e9"  # muscat 1.23.2, Oct 2025

SOURCES: dict[str, Source] = {
    "kang2018_pbmc_ifnb_muscat_subset": Source(
        url=(
            "https://raw.githubusercontent.com/HelenaLC/muscat/"
            f"{_MUSCAT_COMMIT}/data/example_sce.rda"
        ),
        sha256="f66811fa513a01a91dae01bad308e96ed5238277246b911d8e1cd5f4425c3ed9",
        filename="muscat_example_sce.rda",
        convert=convert_kang2018,
    ),
}
"""Datasets that can be downloaded, by name (the stem of their ``.h5ad``)."""
