"""Peak memory and time of the importance-sampled marginal LL against the CPU pass budget.

Each budget (the number of sample x cell x gene values one pass may hold,
``scvi_capvi.module._utils._IS_ELEMENT_BUDGET``) runs in a fresh process: CapVI trained one
epoch per stage on ``--dataset``, then ``get_marginal_ll`` with ``--n-mc-samples`` samples
per cell. Reports the process's peak resident memory before and after, and the seconds.

    OMP_NUM_THREADS=1 python benchmarks/marginal_ll_memory.py --budgets 1e8 2.5e7

Writes ``benchmarks/results/marginal_ll_memory.csv``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import write


def _peak_gib() -> float:
    from scvi_capvi.benchmark._report import peak_memory_gib

    return peak_memory_gib()["process"]


def one(budget: float, dataset: str, n_mc_samples: int) -> dict:
    import scvi
    import torch

    from scvi_capvi.benchmark import load_dataset
    from scvi_capvi.model import CapVI
    from scvi_capvi.module import _utils

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    scvi.settings.seed = 0
    _utils._IS_ELEMENT_BUDGET = budget
    adata = load_dataset(dataset)
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = CapVI(adata)
    model.train(classifier_epochs=1, frozen_epochs=1, max_epochs=1, enable_progress_bar=False)
    before = _peak_gib()
    start = time.perf_counter()
    ll = model.get_marginal_ll(n_mc_samples=n_mc_samples, progress_bar=False)
    return {
        "budget": budget,
        "samples_per_pass": _utils.default_samples_per_pass(n_mc_samples, 128, adata.n_vars),
        "peak_gib_before": before,
        "peak_gib_after": _peak_gib(),
        "seconds": time.perf_counter() - start,
        "mean_ll": ll,
        "dataset": dataset,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_mc_samples": n_mc_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1e8, 2.5e7])
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--n-mc-samples", type=int, default=1000)
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.dataset, args.n_mc_samples)))
        return
    rows = []
    for budget in args.budgets:
        cmd = [sys.executable, __file__, "--one", str(budget), "--dataset", args.dataset]
        cmd += ["--n-mc-samples", str(args.n_mc_samples)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    path = write("marginal_ll_memory", pd.DataFrame(rows))
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
