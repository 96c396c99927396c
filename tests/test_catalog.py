"""The command line's light catalog names what the benchmark registry and the loaders know.

``scvi_capvi._catalog`` holds the dataset and method names, descriptions and default settings
so that ``scvi-capvi --help`` and ``scvi-capvi list`` need not import scvi-tools; these tests
stop it drifting from :data:`scvi_capvi.benchmark.METHODS`, the dataset loaders and
:class:`~scvi_capvi.benchmark.BenchmarkConfig`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from scvi_capvi import _catalog as catalog
from scvi_capvi.benchmark import METHODS, BenchmarkConfig, available_datasets, load_dataset
from scvi_capvi.benchmark._methods import resolve_methods
from scvi_capvi.benchmark._quickstart import QUICK_EPOCHS
from scvi_capvi.data import list_datasets
from scvi_capvi.data._datasets import _REGISTRY


def test_method_names_and_defaults_match_the_registry():
    assert list(catalog.METHOD_INFO) == list(METHODS)
    for name, method in METHODS.items():
        info = catalog.METHOD_INFO[name]
        assert (method.description, method.default) == (info.description, info.default)
    assert catalog.DEFAULT_METHODS == tuple(m.name for m in resolve_methods(None))
    # users read these: no internal document references
    for info in catalog.METHOD_INFO.values():
        assert "paper" not in info.description.lower() and "§" not in info.description


def test_registered_h5ad_datasets_are_the_loaders():
    assert _REGISTRY is catalog.H5AD_DATASETS
    assert list(catalog.DATASETS) == ["pbmc68k_reduced", "pbmc11k", *_REGISTRY]


def _data_folder(root: Path, pbmc11k: bool) -> Path:
    """A data folder with one registered dataset, one unregistered file and, optionally, the
    files ``pbmc11k`` is built from (empty files: only their presence is checked)."""
    root.mkdir()
    (root / "kang2018_pbmc_ifnb_muscat_subset.h5ad").touch()
    (root / "my_data.h5ad").touch()
    if pbmc11k:
        (root / "pbmc11k_metadata").mkdir()
        for run in ("pbmc4k", "pbmc8k"):
            mtx = root / "10x" / run / "filtered_gene_bc_matrices" / "GRCh38"
            mtx.mkdir(parents=True)
            (mtx / "matrix.mtx").touch()
    return root


@pytest.mark.parametrize("pbmc11k", [False, True])
def test_available_datasets_match_the_loaders(tmp_path, pbmc11k):
    folder = _data_folder(tmp_path / "data", pbmc11k)
    expected = ["pbmc68k_reduced", "kang2018_pbmc_ifnb_muscat_subset", "my_data"]
    expected += ["pbmc11k"] if pbmc11k else []
    assert catalog.available_datasets(folder) == available_datasets(folder) == expected

    status = catalog.dataset_status(folder)
    table = list_datasets(folder)
    assert set(status) == {"pbmc68k_reduced", "pbmc11k", *table.index}
    for name in table.index:
        assert status[name] == bool(table.loc[name, "available"]), name
    assert status["pbmc11k"] is pbmc11k


def test_empty_data_folder(tmp_path):
    assert catalog.available_datasets(tmp_path) == available_datasets(tmp_path)
    assert catalog.available_datasets(tmp_path) == ["pbmc68k_reduced"]


def test_bundled_dataset_size_is_right():
    info = catalog.BUNDLED_DATASET
    adata = load_dataset(info.name)
    assert adata.shape == (info.n_cells, info.n_genes)
    assert adata.obs["cell_type"].nunique() == info.n_cell_types
    assert adata.obs["batch"].nunique() == info.n_batches


def test_pbmc11k_is_a_dataset_the_loader_builds(tmp_path):
    """``load_dataset('pbmc11k')`` looks for pbmc11k's own files, not a ``pbmc11k.h5ad``."""
    with pytest.raises(FileNotFoundError, match="pbmc11k_metadata"):
        load_dataset("pbmc11k", data_dir=tmp_path)


def test_settings_shown_in_help_are_the_configs():
    full = asdict(BenchmarkConfig())
    for key, value in catalog.BENCHMARK_DEFAULTS.items():
        assert full[key] == value, key
    quick = asdict(BenchmarkConfig.quick())
    for key, value in catalog.QUICK_SETTINGS.items():
        assert quick[key] == value, key
    assert QUICK_EPOCHS == catalog.QUICKSTART_EPOCHS
