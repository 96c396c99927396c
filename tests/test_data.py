"""Dataset loaders: recovered counts, local copies, error messages, PBMC-11K assembly."""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import io, sparse

from scvi_capvi.data import list_datasets, pbmc11k, pbmc68k_reduced, read_dataset
from scvi_capvi.data._datasets import _REGISTRY


# --- pbmc68k_reduced ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pbmc68k():
    return pbmc68k_reduced()


def test_pbmc68k_reduced_recovers_integer_counts(pbmc68k):
    src = sc.datasets.pbmc68k_reduced()
    assert pbmc68k.shape == (700, 765)
    assert list(pbmc68k.var_names) == list(src.raw.var_names)
    X = pbmc68k.X
    assert sparse.isspmatrix_csr(X) or isinstance(X, sparse.csr_array)
    assert np.array_equal(X.data, np.round(X.data))
    assert X.data.min() >= 1  # every stored value is a count of at least one
    assert (pbmc68k.layers["counts"] != X).nnz == 0
    # the sparsity pattern is that of raw.X, and re-normalising gives raw.X back
    assert X.nnz == sparse.csr_matrix(src.raw.X).nnz
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)
    renormalised = np.log1p(X.toarray() / n_counts[:, None] * 1e4)
    assert np.abs(renormalised - src.raw.X.toarray()).max() < 2e-3
    # raw holds 765 of the genes: a cell's recovered total is part of its n_counts
    totals = np.asarray(X.sum(axis=1)).ravel()
    assert np.all(totals <= n_counts + 0.5)
    assert np.all(totals > 0.05 * n_counts)


def test_pbmc68k_reduced_annotations(pbmc68k):
    assert isinstance(pbmc68k.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert pbmc68k.obs["cell_type"].nunique() == 10
    assert (pbmc68k.obs["cell_type"] == "Dendritic").sum() == 240
    assert list(pbmc68k.obs["batch"].cat.categories) == ["pbmc68k"]
    assert pbmc68k.obsm["X_umap"].shape == (700, 2)


def test_pbmc68k_reduced_rejects_non_integer_values():
    with pytest.raises(ValueError, match="cannot recover integer counts"):
        pbmc68k_reduced(atol=1e-6)


# --- read_dataset / list_datasets ---------------------------------------------------------
@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(_REGISTRY))
def test_read_dataset_shared(shared_data_dir, name):
    adata = read_dataset(name, data_dir=shared_data_dir)
    info = _REGISTRY[name]
    assert adata.shape == (info.n_cells, info.n_genes)
    assert adata.obs["cell_type"].nunique() == info.n_cell_types
    assert adata.obs["batch"].nunique() == info.n_batches
    assert isinstance(adata.obs["batch"].dtype, pd.CategoricalDtype)
    assert sparse.issparse(adata.X)
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() >= 0
    assert adata.layers["counts"].shape == adata.shape


@pytest.mark.shared_data
def test_list_datasets_shared(shared_data_dir):
    table = list_datasets(shared_data_dir)
    assert set(_REGISTRY) <= set(table.index)
    assert table.loc[list(_REGISTRY), "available"].all()
    assert table.loc["kang2018_pbmc_ifnb_muscat_subset", "n_batches"] == 4


def test_read_dataset_missing_name(tmp_path):
    ad.AnnData(np.zeros((2, 2))).write_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(FileNotFoundError) as err:
        read_dataset("no_such_dataset", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "other" in message
    assert "kang2018_pbmc_ifnb_muscat_subset" in message  # lists the registered names
    with pytest.raises(FileNotFoundError, match="only available as a local copy"):
        read_dataset("pbmc8k_scvijl_200genes", data_dir=tmp_path)
    assert not list_datasets(tmp_path).loc[list(_REGISTRY), "available"].any()


def _toy(X, **obs) -> ad.AnnData:
    n = np.asarray(X).shape[0]
    defaults = {"cell_type": ["a", "b"] * (n // 2), "batch": ["x"] * n}
    defaults.update(obs)
    return ad.AnnData(
        sparse.csr_matrix(np.asarray(X, dtype=np.float32)), obs=pd.DataFrame(defaults)
    )


def test_read_dataset_env_var_and_validation(tmp_path, monkeypatch):
    _toy([[1, 0], [2, 3]]).write_h5ad(tmp_path / "good.h5ad")
    _toy([[0.5, 0], [2, 3]]).write_h5ad(tmp_path / "lognorm.h5ad")
    obs = pd.DataFrame({"cell_type": ["a", "b"]}, index=["c0", "c1"])
    var = pd.DataFrame(index=["g0", "g1"])
    ad.AnnData(np.ones((2, 2)), obs=obs, var=var).write_h5ad(tmp_path / "nobatch.h5ad")
    monkeypatch.setenv("SCVI_CAPVI_DATA_DIR", str(tmp_path))
    adata = read_dataset("good")
    assert adata.shape == (2, 2) and adata.layers["counts"].sum() == 6
    assert "good" in list_datasets().index
    with pytest.raises(ValueError, match="non-integer"):
        read_dataset("lognorm")
    with pytest.raises(ValueError, match="batch"):
        read_dataset("nobatch")


# --- pbmc11k on a fabricated 10x folder ---------------------------------------------------
def _write_10x(folder: Path, barcodes, genes, counts) -> None:
    """Cell Ranger 2 layout: genes x cells matrix.mtx, genes.tsv, barcodes.tsv."""
    folder.mkdir(parents=True)
    io.mmwrite(folder / "matrix.mtx", sparse.coo_matrix(counts.T.astype(np.int64)))
    pd.DataFrame({"id": genes, "symbol": [f"SYM_{g}" for g in genes]}).to_csv(
        folder / "genes.tsv", sep="\t", header=False, index=False
    )
    pd.Series(barcodes).to_csv(folder / "barcodes.tsv", header=False, index=False)


@pytest.mark.shared_data
def test_pbmc11k_from_fabricated_10x(shared_data_dir, tmp_path):
    meta_dir = shared_data_dir / "pbmc11k_metadata"
    (tmp_path / "pbmc11k_metadata").symlink_to(meta_dir)
    meta = pd.read_pickle(meta_dir / "pbmc_metadata.pickle")
    barcodes = meta["barcodes"].index.to_numpy().astype(str)
    is_4k = meta["design"]["batchpbmc4k"].to_numpy().astype(bool)
    names = np.asarray(meta["list_clusters"])[np.asarray(meta["clusters"])]
    gene_info = pd.read_csv(meta_dir / "gene_info.csv")

    cells_8k = list(barcodes[[0, 1, 5000]])  # metadata rows 0, 1: pbmc8k
    cells_4k = list(barcodes[np.flatnonzero(is_4k & ~pd.Series(barcodes).str.endswith("-11"))[:3]])
    minus_11 = barcodes[np.flatnonzero(is_4k & pd.Series(barcodes).str.endswith("-11"))[0]]
    stranger = "TTTTTTTTTTTTTTTT-1"
    assert stranger not in set(barcodes)
    # a pbmc8k barcode also sequenced in the 4k run (not in the metadata for 4k): must be dropped
    in_8k = cells_8k + [stranger]
    in_4k = [*cells_4k, cells_8k[0], stranger]
    kept = list(gene_info["ENSG"].iloc[[10, 3, 200, 7]])  # shuffled relative to gene_info
    genes = [*kept, "ENSG_NOT_IN_GENE_INFO"]
    rng = np.random.default_rng(0)
    counts_8k = rng.integers(0, 50, size=(len(in_8k), len(genes)))
    counts_4k = rng.integers(100, 150, size=(len(in_4k), len(genes)))
    root = tmp_path / "10x"
    _write_10x(root / "pbmc8k" / "filtered_gene_bc_matrices" / "GRCh38", in_8k, genes, counts_8k)
    _write_10x(root / "pbmc4k" / "filtered_gene_bc_matrices" / "GRCh38", in_4k, genes, counts_4k)

    with pytest.warns(UserWarning, match="missing from the 10x"):
        adata = pbmc11k(data_dir=tmp_path, download=False)

    # metadata order (pbmc8k first), strangers and the absent -11 barcode gone
    assert list(adata.obs_names) == cells_8k + cells_4k
    assert minus_11 not in adata.obs_names
    assert list(adata.obs["batch"]) == ["pbmc8k"] * 3 + ["pbmc4k"] * 3
    # labels land on the right barcodes
    label_of = dict(zip(barcodes, names, strict=True))
    assert list(adata.obs["cell_type"]) == [label_of[b] for b in adata.obs_names]
    assert adata.obs.loc["AAACCTGAGCTAGTGG-1", "cell_type"] == "CD4 T cells"
    # genes in gene_info order, named by symbol, counts follow their barcode and gene
    order = [g for g in gene_info["ENSG"] if g in kept]
    assert list(adata.var["gene_ids"]) == order
    assert list(adata.var_names) == list(gene_info.set_index("ENSG").loc[order, "GS"])
    cols = [genes.index(g) for g in order]
    expected = np.vstack([counts_8k[:3][:, cols], counts_4k[:3][:, cols]])
    assert np.array_equal(adata.X.toarray(), expected)
    assert np.array_equal(adata.layers["counts"].toarray(), expected)
    assert adata.obsm["qc_pc"].shape == (6, 7)


@pytest.mark.shared_data
def test_pbmc11k_missing_matrices_offline(shared_data_dir, tmp_path):
    (tmp_path / "pbmc11k_metadata").symlink_to(shared_data_dir / "pbmc11k_metadata")
    with pytest.raises(FileNotFoundError, match="No 10x matrix.mtx"):
        pbmc11k(data_dir=tmp_path, download=False)
