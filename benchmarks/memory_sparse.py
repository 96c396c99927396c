"""Peak memory of CapVI on a ~200k-cell sparse AnnData (issue 5: never densify the matrix).

Cells are resampled with replacement from ``pbmc4k_10x_top2000.h5ad`` (``SCVI_CAPVI_DATA_DIR``
or ``../shared/data``), or from ``pbmc68k_reduced()`` when that file is absent, into a CSR
matrix. The script sets CapVI up (all input checks included), trains one epoch per stage on a
small train fraction, then runs ``get_latent_representation`` and ``predict`` on all cells.
Peak resident memory (``getrusage``) after each step is compared with the size the count
matrix would have as a dense float32 array. Results go to ``benchmarks/results/`` (git-ignored).

Example::

    OMP_NUM_THREADS=1 nohup python benchmarks/memory_sparse.py --n-cells 200000 &
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import scvi
import torch

import scvi_capvi
from scvi_capvi.model import CapVI

RESULTS = Path(__file__).parent / "results"
GIB = 1024**3


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def source_adata() -> tuple[ad.AnnData, str]:
    data_dir = Path(
        os.environ.get("SCVI_CAPVI_DATA_DIR", Path(__file__).parents[2] / "shared/data")
    )
    path = data_dir / "pbmc4k_10x_top2000.h5ad"
    if path.exists():
        return ad.read_h5ad(path), str(path)
    from scvi_capvi.data import pbmc68k_reduced

    return pbmc68k_reduced(), "pbmc68k_reduced() (pbmc4k_10x_top2000.h5ad not found)"


def resample(src: ad.AnnData, n_cells: int, seed: int) -> ad.AnnData:
    """``n_cells`` cells drawn with replacement, as a CSR matrix (rows copied, not densified)."""
    x = src.layers["counts"] if "counts" in src.layers else src.X
    x = sp.csr_matrix(x, dtype=np.float32)
    idx = np.random.default_rng(seed).integers(0, src.n_obs, n_cells)
    adata = ad.AnnData(x[idx])
    adata.var_names = src.var_names
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.obs["cell_type"] = src.obs["cell_type"].astype(str).to_numpy()[idx]
    adata.obs["batch"] = src.obs["batch"].astype(str).to_numpy()[idx]
    return adata


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=200_000)
    parser.add_argument("--train-size", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scvi.settings.seed = args.seed
    steps = {"start": peak_rss_gib()}
    times = {}

    src, source = source_adata()
    adata = resample(src, args.n_cells, args.seed)
    del src
    n_obs, n_vars = adata.shape
    dense_gib = n_obs * n_vars * 4 / GIB
    sparse_gib = (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / GIB
    steps["data built"] = peak_rss_gib()
    print(f"source: {source}")
    print(f"{n_obs} cells x {n_vars} genes, density {adata.X.nnz / (n_obs * n_vars):.3f}")
    print(f"CSR matrix {sparse_gib:.3f} GiB; a dense float32 copy would need {dense_gib:.3f} GiB")

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t0, 1)
        steps[name] = peak_rss_gib()
        print(f"{name}: {times[name]} s, peak RSS {steps[name]:.3f} GiB", flush=True)
        return out

    step(
        "setup_anndata",
        lambda: CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch"),
    )
    model = step("model", lambda: CapVI(adata))
    step(
        "train (1 epoch per stage)",
        lambda: model.train(
            classifier_epochs=1,
            frozen_epochs=1,
            max_epochs=1,
            train_size=args.train_size,
            validation_size=0.01,
            batch_size=args.batch_size,
            early_stopping=False,
            enable_progress_bar=False,
        ),
    )
    latent = step(
        "get_latent_representation",
        lambda: model.get_latent_representation(batch_size=args.batch_size),
    )
    pred = step("predict", lambda: model.predict(batch_size=args.batch_size))
    assert latent.shape[0] == n_obs and pred.shape[0] == n_obs

    peak = max(steps.values())
    result = {
        "source": source,
        "n_cells": n_obs,
        "n_genes": n_vars,
        "nnz": int(adata.X.nnz),
        "train_size": args.train_size,
        "csr_gib": round(sparse_gib, 3),
        "dense_float32_gib": round(dense_gib, 3),
        "peak_rss_gib_after": {k: round(v, 3) for k, v in steps.items()},
        "seconds": times,
        "peak_rss_gib": round(peak, 3),
        "peak_minus_data_gib": round(peak - steps["data built"], 3),
        "scvi_capvi": scvi_capvi.__version__,
        "scvi_tools": scvi.__version__,
        "torch": torch.__version__,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"memory_sparse_{n_obs}.json"
    out.write_text(json.dumps(result, indent=1))
    print(
        f"peak RSS {peak:.3f} GiB (of which {result['peak_minus_data_gib']:.3f} GiB after the "
        f"data was built) vs {dense_gib:.3f} GiB for one dense float32 copy; written to {out}"
    )


if __name__ == "__main__":
    main()
