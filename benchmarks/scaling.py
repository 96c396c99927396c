"""Scaling curve (Svensson et al. 2020): time per 1,000 cells per 10 epochs, 1k to 200k cells.

Cells are **resampled with replacement from a real dataset** (default ``pbmc68k_reduced``;
``--dataset pbmc4k_10x_top2000`` for 2,000 genes), so every size has real expression profiles
but large sizes repeat cells. Each size runs in a fresh subprocess, which trains SCVI and
CapVI's end-to-end stage (stage 3) for ``--epochs`` epochs (no early stopping) and reports
the median epoch time (first epoch left out) and the process's peak resident memory.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py --sizes 1000 2000 5000 10000 --epochs 2

Writes ``benchmarks/results/scaling.csv``. Svensson et al. (2020) report ~5 s per 1,000 cells
per 10 epochs for LDVAE/scVI on a desktop CPU, linear in the number of cells.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import EpochTimer, environment, resample_cells, write

DEFAULT_SIZES = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000]


def one(size: int, dataset: str, epochs: int, model_name: str, threads: int) -> dict:
    import scvi
    import torch

    from scvi_capvi.benchmark import load_dataset
    from scvi_capvi.benchmark._recipes import PAPER_ARCHITECTURE, SCVI_PAPER_MODEL
    from scvi_capvi.model import CapVI

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    scvi.settings.seed = 0
    adata = resample_cells(load_dataset(dataset), size)
    timer = EpochTimer()
    quiet = {"enable_progress_bar": False, "callbacks": [timer], "early_stopping": False}
    start = time.perf_counter()
    if model_name == "SCVI":
        scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
        model = scvi.model.SCVI(adata, **SCVI_PAPER_MODEL)  # fit_scvi's model, timed
        model.train(max_epochs=epochs, train_size=1.0, **quiet)
        per_epoch = timer.per_epoch()
    else:
        CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
        model = CapVI(adata, **PAPER_ARCHITECTURE)
        model.train(
            classifier_epochs=1,
            frozen_epochs=0,
            max_epochs=epochs,
            train_size=0.95,
            validation_size=0.05,
            **quiet,
        )
        per_epoch = timer.per_epoch("joint")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name,
        "n_cells": size,
        "n_genes": adata.n_vars,
        "epochs": epochs,
        "seconds_per_epoch": per_epoch,
        "s_per_1k_cells_10_epochs": per_epoch * 10 / (size / 1000),
        "peak_rss_mb": peak_mb,
        "total_seconds": time.perf_counter() - start,
        "dataset": f"{dataset} (cells resampled with replacement)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["SCVI", "CapVI"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(
            "RESULT "
            + json.dumps(one(args.one, args.dataset, args.epochs, args.model, args.threads))
        )
        return
    rows = []
    for size in args.sizes:
        for model in args.models:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--model",
                model,
                "--dataset",
                args.dataset,
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if not lines:
                print(f"{model} at {size} cells failed:\n{done.stderr[-2000:]}")
                continue
            rows.append(json.loads(lines[-1][7:]))
            keys = (
                "model",
                "n_cells",
                "seconds_per_epoch",
                "s_per_1k_cells_10_epochs",
                "peak_rss_mb",
            )
            print({k: rows[-1][k] for k in keys})
            table = pd.DataFrame(rows)
            for key, value in environment().items():
                table[key] = value
            write("scaling", table)  # after every size, so a long run keeps what it has
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
