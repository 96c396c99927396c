"""Downloadable datasets: checksum, cache and the Kang 2018 converter, all offline.

The downloads go through ``file://`` URLs. The converter test needs muscat's
``example_sce.rda`` in ``$SCVI_CAPVI_SOURCE_DIR`` and is skipped without it.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scvi_capvi.data import _sources, kang2018, list_datasets, read_dataset
from scvi_capvi.data._sources import SOURCES, Source, convert_kang2018

KANG = "kang2018_pbmc_ifnb_muscat_subset"


def _toy_convert(path: Path) -> ad.AnnData:
    """A 'converter' of a text file of integers: one cell per line."""
    counts = np.loadtxt(path, dtype=np.int32, ndmin=2)
    obs = pd.DataFrame(
        {"cell_type": ["a", "b"] * (len(counts) // 2), "batch": ["x"] * len(counts)},
        index=[f"c{i}" for i in range(len(counts))],
    )
    return ad.AnnData(sparse.csr_matrix(counts), obs=obs)


@pytest.fixture
def toy_source(tmp_path, monkeypatch):
    """Registers ``toy`` with a local ``file://`` source and counts the downloads."""
    remote = tmp_path / "remote" / "toy.txt"
    remote.parent.mkdir()
    remote.write_text("1 0 2\n0 3 1\n")
    source = Source(
        url=remote.as_uri(),
        sha256=hashlib.sha256(remote.read_bytes()).hexdigest(),
        filename="toy.txt",
        convert=_toy_convert,
    )
    monkeypatch.setitem(SOURCES, "toy", source)
    calls = []
    download = _sources._download

    def counting_download(*args, **kwargs):
        calls.append(args[0])
        return download(*args, **kwargs)

    monkeypatch.setattr(_sources, "_download", counting_download)
    monkeypatch.delenv("SCVI_CAPVI_DATA_DIR", raising=False)
    monkeypatch.setenv("SCVI_CAPVI_CACHE_DIR", str(tmp_path / "env_cache"))
    return source, remote, calls


def test_download_verifies_caches_and_reuses(toy_source, tmp_path):
    source, remote, calls = toy_source
    cache, data_dir = tmp_path / "cache", tmp_path / "data"
    data_dir.mkdir()
    adata = read_dataset("toy", data_dir=data_dir, cache_dir=cache)
    assert calls == [source.url]
    assert adata.shape == (2, 3) and adata.layers["counts"].sum() == 7
    assert sorted(p.name for p in cache.iterdir()) == ["toy.h5ad", "toy.txt"]
    assert (cache / "toy.txt").read_bytes() == remote.read_bytes()

    remote.unlink()  # a second download would now fail
    again = read_dataset("toy", data_dir=data_dir, cache_dir=cache)
    assert calls == [source.url]
    assert (again.X != adata.X).nnz == 0


def test_download_uses_env_cache_dir(toy_source, tmp_path):
    source, _, calls = toy_source
    read_dataset("toy", data_dir=tmp_path / "data")
    assert (tmp_path / "env_cache" / "toy.h5ad").is_file()
    assert calls == [source.url]


def test_local_copy_is_read_before_cache_and_download(toy_source, tmp_path):
    _, _, calls = toy_source
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    local = _toy_convert(toy_source[1])[:1].copy()
    local.write_h5ad(data_dir / "toy.h5ad")
    assert read_dataset("toy", data_dir=data_dir, cache_dir=tmp_path / "cache").n_obs == 1
    assert calls == [] and not (tmp_path / "cache").exists()


def test_checksum_mismatch_raises_and_leaves_nothing(toy_source, tmp_path, monkeypatch):
    source, _, _ = toy_source
    wrong = "0" * 64
    monkeypatch.setitem(SOURCES, "toy", Source(source.url, wrong, "toy.txt", _toy_convert))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="Checksum mismatch") as err:
        read_dataset("toy", data_dir=tmp_path / "data", cache_dir=cache)
    message = str(err.value)
    assert source.url in message and wrong in message and source.sha256 in message
    assert list(cache.iterdir()) == []


def test_corrupted_cached_source_is_downloaded_again(toy_source, tmp_path):
    source, remote, calls = toy_source
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.txt").write_text("9 9 9\n")
    adata = read_dataset("toy", data_dir=tmp_path / "data", cache_dir=cache)
    assert calls == [source.url]
    assert (cache / "toy.txt").read_bytes() == remote.read_bytes()
    assert adata.X.sum() == 7


def test_no_download_raises_with_the_url(toy_source, tmp_path):
    source, _, calls = toy_source
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        read_dataset("toy", data_dir=tmp_path / "data", download=False, cache_dir=tmp_path / "c")
    assert source.url in str(err.value) and str(tmp_path / "c") in str(err.value)
    assert calls == []


def test_kang2018_reads_the_registered_name(tmp_path, monkeypatch):
    # a copy in save_path is read without network access (a toy, hence the size warning)
    monkeypatch.delenv("SCVI_CAPVI_DATA_DIR", raising=False)
    remote = tmp_path / "toy.txt"
    remote.write_text("2 1\n0 4\n")
    _toy_convert(remote).write_h5ad(tmp_path / f"{KANG}.h5ad")
    with pytest.warns(UserWarning, match="registry expects 1556 x 1267"):
        adata = kang2018(save_path=tmp_path, data_dir=tmp_path / "empty", download=False)
    assert adata.X.sum() == 7


def test_list_datasets_marks_downloadable(tmp_path):
    table = list_datasets(tmp_path)
    assert table.loc[KANG, "downloadable"]
    assert not table.loc["pbmc8k_scvijl_200genes", "downloadable"]


def test_sources_are_pinned():
    for name, source in SOURCES.items():
        assert re.search(r"/[0-9a-f]{40}/", source.url), f"{name}: URL not pinned to a commit"
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256), f"{name}: not a SHA-256"


def test_missing_rdata_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "rdata", None)  # import fails
    with pytest.raises(ImportError, match=re.escape('pip install "scvi-capvi[data]"')):
        convert_kang2018(tmp_path / "example_sce.rda")


# --- the real converter --------------------------------------------------------------------
@pytest.fixture
def muscat_rda() -> Path:
    """muscat's ``data/example_sce.rda`` from ``$SCVI_CAPVI_SOURCE_DIR``."""
    folder = os.environ.get("SCVI_CAPVI_SOURCE_DIR")
    path = Path(folder) / "example_sce.rda" if folder else None
    if path is None or not path.is_file():
        pytest.skip(
            "muscat's example_sce.rda not found: set SCVI_CAPVI_SOURCE_DIR to the folder "
            f"holding it (from {SOURCES[KANG].url})"
        )
    pytest.importorskip("rdata", reason='needs pip install "scvi-capvi[data]"')
    return path


@pytest.mark.shared_data
def test_kang2018_download_reproduces_shared_file(
    muscat_rda, shared_data_dir, tmp_path, monkeypatch
):
    source = SOURCES[KANG]
    remote = tmp_path / "remote" / "example_sce.rda"
    remote.parent.mkdir()
    shutil.copyfile(muscat_rda, remote)
    monkeypatch.setitem(
        SOURCES, KANG, Source(remote.as_uri(), source.sha256, source.filename, source.convert)
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    kang2018(save_path=tmp_path / "cache", data_dir=empty)

    built = ad.read_h5ad(tmp_path / "cache" / f"{KANG}.h5ad")
    shared = ad.read_h5ad(shared_data_dir / f"{KANG}.h5ad")
    assert built.X.format == shared.X.format == "csr"
    assert built.X.dtype == shared.X.dtype == np.int32
    for array in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(built.X, array), getattr(shared.X, array)), array
    pd.testing.assert_frame_equal(built.obs, shared.obs)
    assert list(built.var_names) == list(shared.var_names)
