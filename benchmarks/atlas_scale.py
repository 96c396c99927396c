"""Atlas scale: CapVI (all three stages, one epoch each) and SCVI (one epoch) on 10k to 1M cells.

Cells are resampled with replacement from a real dataset (default ``pbmc4k_10x_top2000``,
2,000 genes) into a sparse CSR matrix that is never densified. Each (model, size) runs in a
fresh process, which reports the seconds of each training epoch (stage) and the process's
peak resident memory; after training at the sizes in ``--inference-sizes`` (default: the
largest), also the seconds of ``get_latent_representation``, ``predict`` (CapVI) and
``get_marginal_ll`` (100 samples) on a 10,000-cell subset.

    OMP_NUM_THREADS=1 python benchmarks/atlas_scale.py --sizes 10000 100000 300000 1000000

Writes ``benchmarks/results/atlas_scale.csv`` (one row per model and size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import EpochTimer, environment, resample_cells, write

SUBSET = 10_000


def _peak_gib() -> float:
    from scvi_capvi.benchmark._report import peak_memory_gib

    return peak_memory_gib()["process"]


def one(size: int, dataset: str, model_name: str, threads: int, inference: bool) -> dict:
    import scipy.sparse as sp
    import scvi
    import torch

    from scvi_capvi.benchmark import load_dataset
    from scvi_capvi.model import CapVI

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    scvi.settings.seed = 0
    source = load_dataset(dataset)
    # one copy of the counts, in .X (the file keeps them in a layer too)
    source.layers = {}
    adata = resample_cells(source, size)
    adata.X = sp.csr_matrix(adata.X)
    timer = EpochTimer()
    quiet = {"enable_progress_bar": False, "callbacks": [timer], "early_stopping": False}
    subset = np.random.default_rng(1).choice(size, min(SUBSET, size), replace=False)
    start = time.perf_counter()
    if model_name == "SCVI":
        scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
        model = scvi.model.SCVI(adata)
        model.train(max_epochs=1, **quiet)
    else:
        CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
        model = CapVI(adata)
        model.train(classifier_epochs=1, frozen_epochs=1, max_epochs=1, **quiet)
    train_seconds = time.perf_counter() - start
    peak_train = _peak_gib()
    timings = {}
    if inference:
        timings = _inference(model, model_name, subset)
    epochs = {f"epoch_s_{stage}": v[0] for stage, v in timer.seconds.items()}
    stage_peaks = {f"peak_rss_gib_{stage}": v for stage, v in timer.peak_gib.items()}
    return {
        "model": model_name,
        "n_cells": size,
        "n_genes": adata.n_vars,
        **epochs,
        "epoch_s_per_1k_cells": sum(epochs.values()) / len(epochs) / (size / 1000),
        "train_s": train_seconds,
        **timings,
        **stage_peaks,
        "peak_rss_gib_after_training": peak_train,
        "peak_rss_gib": _peak_gib(),
        "dataset": f"{dataset} (cells resampled with replacement, CSR)",
        **{f"env_{k}": v for k, v in environment().items()},
    }


def _inference(model, model_name: str, subset: np.ndarray) -> dict:
    """Seconds of the latent space, ``predict`` and the 100-sample marginal LL on ``subset``."""
    timings = {}
    t = time.perf_counter()
    model.get_latent_representation(indices=subset)
    timings["latent_10k_s"] = time.perf_counter() - t
    if model_name == "CapVI":
        t = time.perf_counter()
        model.predict(indices=subset)
        timings["predict_10k_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if model_name == "SCVI":
        model.get_marginal_ll(indices=subset, n_mc_samples=100)
    else:
        model.get_marginal_ll(indices=subset, n_mc_samples=100, progress_bar=False)
    timings["marginal_ll_10k_100_samples_s"] = time.perf_counter() - t
    return timings


def table(frame: pd.DataFrame) -> str:
    """The markdown table of ``docs/benchmarks/scale.md`` from a results CSV."""

    def num(v, digits=1):
        return "–" if pd.isna(v) else f"{v:,.{digits}f}"

    lines = [
        "| cells | model | s / epoch (CapVI: stage 1 / 2 / 3) | s per 1k cells per epoch "
        "(SCVI; CapVI stage 2, 3) | latent, 10k (s) | predict, 10k (s) | marginal LL, "
        "10k × 100 samples (s) | peak RSS after training (GiB) | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in frame.sort_values(["n_cells", "model"], ascending=[True, False]).iterrows():
        k = r["n_cells"] / 1000
        if r["model"] == "SCVI":
            epoch, per_k = num(r["epoch_s_train"]), f"{r['epoch_s_train'] / k:.2f}"
        else:
            stages = [r["epoch_s_classifier"], r["epoch_s_frozen"], r["epoch_s_joint"]]
            epoch = " / ".join(num(v) for v in stages)
            per_k = f"{stages[1] / k:.2f}, {stages[2] / k:.2f}"
        cells = [
            f"{int(r['n_cells']):,}",
            r["model"],
            epoch,
            per_k,
            num(r.get("latent_10k_s")),
            num(r.get("predict_10k_s")),
            num(r.get("marginal_ll_10k_100_samples_s"), 0),
            f"{r['peak_rss_gib_after_training']:.2f}",
            f"{r['peak_rss_gib']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000]
    )
    parser.add_argument("--dataset", default="pbmc4k_10x_top2000")
    parser.add_argument("--models", nargs="+", default=["SCVI", "CapVI"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument(
        "--inference-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes after whose training the 10k-cell inference runs (default: the largest)",
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--inference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--table", action="store_true", help="only print the markdown table of the results file"
    )
    args = parser.parse_args()
    name = "atlas_scale" + (f"_{args.tag}" if args.tag else "")
    if args.table:
        print(table(pd.read_csv(Path(__file__).parent / "results" / f"{name}.csv")))
        return
    if args.one is not None:
        print(json.dumps(one(args.one, args.dataset, args.model, args.threads, args.inference)))
        return
    inference_sizes = [max(args.sizes)] if args.inference_sizes is None else args.inference_sizes
    rows = []
    for size in args.sizes:
        for model in args.models:
            cmd = [sys.executable, __file__, "--one", str(size), "--model", model]
            cmd += ["--dataset", args.dataset, "--threads", str(args.threads)]
            cmd += ["--inference"] if size in inference_sizes else []
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{model} at {size} cells failed:\n{done.stderr[-2000:]}", flush=True)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            # after every run, so partial results stay
            write(name, pd.DataFrame(rows))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
