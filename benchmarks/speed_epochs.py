"""Seconds per epoch of CapVI, VampVI (K = 500) and scvi-tools' SCVI on the same data.

All three models get Clivio et al. (2022)'s architecture (D = 20, 3 x 256 hidden layers, dropout
0.25), minibatch 128 and a fixed number of epochs (no early stopping); each model's median
epoch time (first epoch of each stage left out) is reported and divided by SCVI's. CapVI
is timed per stage (stage 1 trains the classifier only).

    OMP_NUM_THREADS=1 python benchmarks/speed_epochs.py --dataset pbmc4k_10x_top2000 --epochs 5

Writes ``benchmarks/results/speed_epochs.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd
import scvi
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import EpochTimer, environment, resample_cells, write

from scvi_capvi.benchmark import load_dataset
from scvi_capvi.benchmark._recipes import PAPER_ARCHITECTURE, SCVI_PAPER_MODEL
from scvi_capvi.model import CapVI, VampVI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-cells", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument(
        "--resample", type=int, default=None, help="resample this many cells with replacement"
    )
    parser.add_argument("--tag", default="", help="suffix of the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scvi.settings.seed = 0
    warnings.simplefilter("ignore")
    adata = load_dataset(args.dataset, max_cells=args.max_cells)
    if args.resample:
        adata = resample_cells(adata, args.resample)
    quiet = {"enable_progress_bar": False, "accelerator": args.accelerator}
    rows = []

    def record(model: str, timer: EpochTimer, stage: str | None = None, label: str | None = None):
        rows.append(
            {
                "model": label or model,
                "seconds_per_epoch": timer.per_epoch(stage),
                "n_cells": adata.n_obs,
                "n_genes": adata.n_vars,
            }
        )

    timer = EpochTimer()
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata, **SCVI_PAPER_MODEL)  # fit_scvi's model, timed
    model.train(max_epochs=args.epochs, callbacks=[timer], early_stopping=False, **quiet)
    record("SCVI", timer)

    timer = EpochTimer()
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = CapVI(adata, **PAPER_ARCHITECTURE)
    model.train(
        classifier_epochs=args.epochs,
        frozen_epochs=args.epochs,
        max_epochs=args.epochs,
        early_stopping=False,
        callbacks=[timer],
        **quiet,
    )
    for stage, label in (
        ("classifier", "CapVI stage 1"),
        ("frozen", "CapVI stage 2"),
        ("joint", "CapVI stage 3"),
    ):
        record("CapVI", timer, stage, label)

    timer = EpochTimer()
    VampVI.setup_anndata(adata, batch_key="batch")
    model = VampVI(adata, n_pseudo_inputs=500, prior="vamp", **PAPER_ARCHITECTURE)
    model.train(max_epochs=args.epochs, callbacks=[timer], early_stopping=False, **quiet)
    record("VampVI", timer, label="VampVI (VAMP, K=500)")

    table = pd.DataFrame(rows)
    ref = table.loc[table["model"] == "SCVI", "seconds_per_epoch"].item()
    table["ratio_to_SCVI"] = table["seconds_per_epoch"] / ref
    table["dataset"] = args.dataset
    for key, value in environment().items():
        table[key] = value
    path = write("speed_epochs" + (f"_{args.tag}" if args.tag else ""), table)
    print(table[["model", "seconds_per_epoch", "ratio_to_SCVI"]].to_string(index=False))
    print(f"{adata.n_obs} cells x {adata.n_vars} genes, {args.epochs} epochs each; wrote {path}")


if __name__ == "__main__":
    main()
