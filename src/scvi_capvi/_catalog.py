"""The benchmark's dataset and method names, its default settings, and where datasets are found.

Standard library only: the ``scvi-capvi`` command line reads this module for its help texts,
``scvi-capvi list`` and the checks of its arguments without importing scvi-tools, PyTorch,
scanpy or anndata. The loaders (:mod:`scvi_capvi.data`) and the benchmark registry
(:mod:`scvi_capvi.benchmark`) use the same tables; ``tests/test_catalog.py`` checks that the
names here are the ones the registry and the loaders know.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "SCVI_CAPVI_DATA_DIR"
"""Environment variable naming the folder that holds the local dataset copies."""


# ---------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetInfo:
    """What a benchmark dataset holds (see ``shared/data/SOURCES.md`` for the local files)."""

    name: str
    n_cells: int
    n_genes: int
    n_cell_types: int
    n_batches: int
    description: str


BUNDLED_DATASET = DatasetInfo(
    "pbmc68k_reduced",
    700,
    765,
    10,
    1,
    "scanpy's bundled PBMC 68k subset with its raw counts recovered; always available",
)
"""Ships with scanpy: needs no data folder."""

PBMC11K = DatasetInfo(
    "pbmc11k",
    11_990,
    3_346,
    9,
    2,
    "scVI's PBMC 11k (10x pbmc4k + pbmc8k), built from the 10x matrices in the data folder",
)
"""Read from ``<data folder>/10x/{pbmc4k,pbmc8k}`` and ``<data folder>/pbmc11k_metadata``."""

H5AD_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "cellbench_lung_cell_lines",
            1_021,
            28_013,
            5,
            5,
            "CellBench lung cell-line mixtures, demuxlet labels, CEL-seq2 + Drop-seq (Tian 2019)",
        ),
        DatasetInfo(
            "kang2018_pbmc_ifnb_muscat_subset",
            1_556,
            1_267,
            5,
            4,
            "Kang 2018 PBMC ctrl/IFN-beta, muscat subset, batch = donor x condition",
        ),
        DatasetInfo(
            "pbmc8k_scvijl_200genes",
            7_480,
            200,
            8,
            1,
            "10x PBMC 8k reduced to 200 genes (scVI.jl), SingleR-style labels; smoke tests",
        ),
        DatasetInfo(
            "pbmc4k_10x_top2000",
            4_271,
            2_000,
            8,
            1,
            "10x PBMC 4k, top 2,000 genes (scDCC), integer labels, unnamed genes",
        ),
        DatasetInfo(
            "human_kidney_young2018_top2000",
            5_685,
            2_000,
            11,
            1,
            "Human kidney (Young 2018), top 2,000 genes (scDCC), integer labels, unnamed genes",
        ),
        DatasetInfo(
            "mouse_bladder_han2018",
            2_100,
            19_079,
            16,
            1,
            "Mouse bladder (Han 2018, Microwell-seq) from scDCC, integer labels, unnamed genes",
        ),
    )
}
"""The registered datasets read from ``<data folder>/<name>.h5ad`` (local copies only)."""

DATASETS: dict[str, DatasetInfo] = {
    BUNDLED_DATASET.name: BUNDLED_DATASET,
    PBMC11K.name: PBMC11K,
    **H5AD_DATASETS,
}
"""Every dataset the benchmark knows by name; any other ``<name>.h5ad`` of the data folder
(with ``obs['cell_type']`` and ``obs['batch']``) can be run too."""

QUICK_DATASETS = (BUNDLED_DATASET.name,)
"""What ``scvi-capvi benchmark --quick`` runs when no ``--datasets`` are named."""


def _source_tree_data_dir() -> Path | None:
    """``shared/data`` beside the repository, when the package runs from a source checkout."""
    repo = Path(__file__).resolve().parents[2]  # src/scvi_capvi/_catalog.py -> repository
    candidate = repo.parent / "shared" / "data"
    if (repo / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None


def candidate_data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where to look, in order: the argument alone, else ``$SCVI_CAPVI_DATA_DIR``, else the
    ``shared/data`` folder next to a source checkout."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    fallback = _source_tree_data_dir()
    if fallback is not None:
        dirs.append(fallback)
    return dirs


def h5ad_names(dirs: list[Path]) -> list[str]:
    """Stems of the ``.h5ad`` files in ``dirs``, sorted."""
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.h5ad")})


def find_h5ad(name: str, dirs: list[Path]) -> Path | None:
    """The first ``<dir>/<name>.h5ad`` that exists."""
    for d in dirs:
        path = d / f"{name}.h5ad"
        if path.is_file():
            return path
    return None


def find_mtx_folder(folder: Path) -> Path | None:
    """The folder holding ``matrix.mtx[.gz]`` below ``folder`` (e.g. ``.../GRCh38``)."""
    hits = sorted(folder.rglob("matrix.mtx*")) if folder.is_dir() else []
    return hits[0].parent if hits else None


def pbmc11k_available(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether a data folder holds ``pbmc11k``'s metadata and both 10x runs."""
    for folder in candidate_data_dirs(data_dir):
        runs = [folder / "10x" / run for run in ("pbmc4k", "pbmc8k")]
        if (folder / "pbmc11k_metadata").is_dir() and all(
            run.is_dir() and find_mtx_folder(run) is not None for run in runs
        ):
            return True
    return False


def dataset_status(data_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """Every known dataset and every other local ``.h5ad``, with whether it can run here."""
    dirs = candidate_data_dirs(data_dir)
    status = {
        BUNDLED_DATASET.name: True,
        PBMC11K.name: pbmc11k_available(data_dir),
        **{name: find_h5ad(name, dirs) is not None for name in H5AD_DATASETS},
    }
    for name in h5ad_names(dirs):
        status.setdefault(name, True)
    return status


def available_datasets(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The datasets that can run here, in the order of
    :func:`scvi_capvi.benchmark.available_datasets`."""
    status = dataset_status(data_dir)
    names = [BUNDLED_DATASET.name]
    names += [
        n for n, ok in status.items() if ok and n not in (BUNDLED_DATASET.name, PBMC11K.name)
    ]
    if status[PBMC11K.name]:
        names.append(PBMC11K.name)
    return names


# ---------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodInfo:
    """A benchmark method as users see it: its name, what it is, whether it runs by default."""

    name: str
    description: str
    default: bool = True


METHOD_INFO: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "CapVI",
            "CapVI with its defaults: the classifier, then the generative model with the "
            "classifier frozen, then both end to end",
        ),
        MethodInfo(
            "CapVI-e2e", "CapVI trained end to end from the start (no classifier pre-training)"
        ),
        MethodInfo(
            "CapVI-GMVAE",
            "CapVI without labels: a Gaussian-mixture VAE with one component per cell type",
            default=False,
        ),
        MethodInfo("VampVI-VAE", "VampVI with a standard normal prior (a plain VAE)"),
        MethodInfo("VampVI-VAMP", "VampVI with a VampPrior (learned pseudo-inputs)"),
        MethodInfo(
            "VampVI-VAMP+IAF",
            "VampVI with a VampPrior and an inverse autoregressive flow posterior",
        ),
        MethodInfo("VampVI-linear", "VampVI with a VampPrior and a linear decoder"),
        MethodInfo(
            "NBAutoencoder", "deterministic autoencoder with a negative binomial likelihood"
        ),
        MethodInfo("SCVI", "scvi-tools SCVI at its defaults, with CapVI's network size"),
        MethodInfo(
            "SCVI-paper",
            "scvi-tools SCVI trained like CapVI (ZINB, early stopping, no KL warm-up)",
            default=False,
        ),
        MethodInfo(
            "SCANVI",
            "scvi-tools SCANVI from the SCVI fit with all training labels, as in its tutorials",
        ),
        MethodInfo("LinearSCVI", "scvi-tools LinearSCVI (linear decoder, interpretable loadings)"),
        MethodInfo(
            "Scanorama",
            "Scanorama on log-normalised counts (needs >= 2 batches and `scanorama`)",
        ),
        MethodInfo("PCA", "PCA of log-normalised counts (scanpy)"),
    )
}
"""Every method of the benchmark, in the order of :data:`scvi_capvi.benchmark.METHODS`."""

DEFAULT_METHODS = tuple(name for name, m in METHOD_INFO.items() if m.default)
"""What ``scvi-capvi benchmark`` runs when no ``--methods`` are named."""


# ---------------------------------------------------------------------------- settings
QUICKSTART_EPOCHS = {"classifier_epochs": 150, "frozen_epochs": 75, "max_epochs": 75}
"""Epoch caps of ``scvi-capvi quickstart``: CapVI's two ELBO stages share SCVI's 150 epochs
(stage 1, the classifier alone, early-stops on its validation cross-entropy)."""

BENCHMARK_DEFAULTS = {
    "max_epochs": None,
    "n_mc_samples": 1000,
    "probe_epochs": 100,
    "probe_ks": (10, 25, 50, 100),
    "max_cells": None,
}
"""Settings of a full benchmark run (:class:`scvi_capvi.benchmark.BenchmarkConfig`)."""

QUICK_SETTINGS = {
    "max_epochs": 40,
    "n_mc_samples": 100,
    "probe_epochs": 10,
    "scib_fast": True,
    "n_pseudo_inputs": 100,
    "max_cells": 2000,
}
"""What ``--quick`` changes (:meth:`scvi_capvi.benchmark.BenchmarkConfig.quick`)."""
