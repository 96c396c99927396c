"""Helpers shared by the speed scripts in ``benchmarks/`` (not part of the package)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

OUT = Path(__file__).parent / "results"


class EpochTimer(Callback):
    """Wall-clock seconds of every training epoch, keyed by CapVI stage (or ``"train"``), and
    the process's peak resident memory (GiB) at the end of each stage's last epoch so far."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self.peak_gib: dict[str, float] = {}
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        stage = getattr(pl_module, "stage", "train")
        self.seconds.setdefault(stage, []).append(time.perf_counter() - self._start)
        from scvi_capvi.benchmark._report import peak_memory_gib

        self.peak_gib[stage] = peak_memory_gib()["process"]

    def per_epoch(self, stage: str | None = None, skip_first: bool = True) -> float:
        """Median seconds per epoch of ``stage`` (all epochs pooled when ``None``); the first
        epoch of a stage (warm-up, allocations) is left out when there are others."""
        runs = [self.seconds[stage]] if stage else list(self.seconds.values())
        values = [v for run in runs for v in (run[1:] if skip_first and len(run) > 1 else run)]
        return float(np.median(values)) if values else float("nan")


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def write(name: str, payload) -> Path:
    """Write ``payload`` (a DataFrame or JSON-able object) to ``benchmarks/results/``."""
    OUT.mkdir(parents=True, exist_ok=True)
    if hasattr(payload, "to_csv"):
        path = OUT / f"{name}.csv"
        payload.to_csv(path, index=False)
    else:
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def resample_cells(adata, n_cells: int, seed: int = 0):
    """``n_cells`` real cells drawn with replacement (for sizes beyond the dataset)."""
    idx = np.random.default_rng(seed).choice(adata.n_obs, n_cells, replace=n_cells > adata.n_obs)
    out = adata[np.sort(idx)].copy()
    out.obs_names_make_unique()
    return out


def top_variable_genes(adata, n_genes: int = 2000):
    """Keep scanpy's ``n_genes`` most variable genes (``seurat_v3`` on counts, per batch where
    there are several) of a dataset with more; others are returned as they are."""
    import scanpy as sc

    if adata.n_vars > n_genes:
        batch = "batch" if adata.obs["batch"].nunique() > 1 else None
        sc.pp.highly_variable_genes(
            adata, n_top_genes=n_genes, flavor="seurat_v3", batch_key=batch, subset=True
        )
    return adata
