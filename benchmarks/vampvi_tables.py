"""Dony et al. (2020) Tables 1-2 layout for AE / VAE / VAE-IAF / VAE-VAMP / VAMP+IAF.

For every dataset and bottleneck size: one seeded 80/20 cell split shared by all models, the
same number of epochs for all (no early stopping), then

* Table 1: active units (Eq. 2, threshold 0.01) and PCs for 95 % of latent variance,
  on the full dataset's latent means;
* Table 2: test NB reconstruction loss per cell (and per gene x cell, the paper's scale) and
  cell-type ASW (raw, in [-1, 1]) on the full dataset;
* seconds per epoch relative to scvi-tools' ``SCVI`` (same width, depth, latent size, NB).

VampVI models use the full, unannealed KL (Dony et al. 2020). ``SCVI`` runs with its own defaults
(KL warm-up over 400 epochs), so its metric row is a timing reference, not a like-for-like
comparison. Results go to ``benchmarks/results/`` (git-ignored).

Example::

    nice -n 10 python benchmarks/vampvi_tables.py --epochs 30
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch

import scvi_capvi
from scvi_capvi.benchmark import cell_split
from scvi_capvi.metrics import (
    active_units,
    cell_type_asw,
    latent_unit_activity,
    n_pcs_for_variance,
)
from scvi_capvi.model import NBAutoencoder, VampVI

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "PBMC4K": "pbmc4k_10x_top2000.h5ad",
    "KIDNEY": "human_kidney_young2018_top2000.h5ad",
    "BLADDER": "mouse_bladder_han2018.h5ad",
}
MODELS = {
    "AE": None,
    "VAE": {"prior": "normal", "posterior": "normal"},
    "IAF": {"prior": "normal", "posterior": "iaf"},
    "VAMP": {"prior": "vamp", "posterior": "normal"},
    "VAMP+IAF": {"prior": "vamp", "posterior": "iaf"},
    "SCVI": "scvi",
}


def build(name: str, adata: ad.AnnData, n_latent: int, args) -> object:
    common = {"n_latent": n_latent, "n_hidden": args.n_hidden, "n_layers": args.n_layers}
    spec = MODELS[name]
    if spec is None:
        NBAutoencoder.setup_anndata(adata)
        return NBAutoencoder(adata, **common)
    if spec == "scvi":
        scvi.model.SCVI.setup_anndata(adata)
        return scvi.model.SCVI(adata, gene_likelihood="nb", **common)
    VampVI.setup_anndata(adata)
    return VampVI(adata, n_pseudo_inputs=args.n_pseudo_inputs, **spec, **common)


def run_one(name: str, data: ad.AnnData, train_idx, test_idx, n_latent: int, args) -> dict:
    train = data[train_idx].copy()
    test = data[test_idx].copy()
    scvi.settings.seed = args.seed
    model = build(name, train, n_latent, args)
    start = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        train_size=1.0,
        batch_size=128,
        early_stopping=False,
        enable_progress_bar=False,
    )
    sec_per_epoch = (time.perf_counter() - start) / args.epochs

    full = data.copy()
    latent = model.get_latent_representation(full)
    torch.manual_seed(args.seed)
    rec = float(model.get_reconstruction_error(test)["reconstruction_loss"])
    row = {
        "model": name,
        "n_latent": n_latent,
        "epochs": args.epochs,
        "sec_per_epoch": sec_per_epoch,
        "active_units": active_units(latent),
        "active_units_0.1": active_units(latent, threshold=0.1),
        "median_unit_activity": float(np.median(latent_unit_activity(latent))),
        "pcs_95": n_pcs_for_variance(latent, 0.95),
        "asw_cell_type": cell_type_asw(latent, full.obs["cell_type"].to_numpy()),
        "test_nll_per_cell": rec,
        "test_nll_per_entry": rec / data.n_vars,
    }
    if isinstance(model, VampVI) and args.marginal_ll_samples > 0:
        torch.manual_seed(args.seed)
        row["test_marginal_ll"] = model.get_marginal_ll(
            test, n_mc_samples=args.marginal_ll_samples, progress_bar=False
        )
    return row


def paper_tables(df: pd.DataFrame) -> str:
    """Markdown in the layout of Dony et al. (2020) Tables 1 and 2 plus a timing table."""
    gen_models = [m for m in MODELS if m != "SCVI"]
    out = []
    for n_latent, sub in df.groupby("n_latent", sort=False):
        idx = sub.set_index(["dataset", "model"])
        datasets = list(dict.fromkeys(sub["dataset"]))

        def cell(ds, m, fmt, _idx=idx):
            return fmt(_idx.loc[(ds, m)]) if (ds, m) in _idx.index else "–"

        t1 = [f"### Table 1 (n_latent = {n_latent}): active units; PCs for 95 % variance", ""]
        t1.append("| dataset | " + " | ".join(gen_models + ["SCVI*"]) + " |")
        t1.append("|---" * (len(gen_models) + 2) + "|")
        for ds in datasets:
            vals = [
                cell(ds, m, lambda r: f"{int(r.active_units)}; {int(r.pcs_95)}")
                for m in gen_models + ["SCVI"]
            ]
            t1.append(f"| {ds} | " + " | ".join(vals) + " |")
        t2 = [
            "",
            f"### Table 2 (n_latent = {n_latent}): test NB reconstruction loss per cell "
            "(per gene × cell in brackets) | cell-type ASW",
            "",
        ]
        t2.append(
            "| dataset | "
            + " | ".join(f"RL {m}" for m in gen_models)
            + " | "
            + " | ".join(f"ASW {m}" for m in gen_models)
            + " |"
        )
        t2.append("|---" * (2 * len(gen_models) + 1) + "|")
        for ds in datasets:
            rl = [
                cell(ds, m, lambda r: f"{r.test_nll_per_cell:.1f} ({r.test_nll_per_entry:.4f})")
                for m in gen_models
            ]
            asw = [cell(ds, m, lambda r: f"{r.asw_cell_type:.3f}") for m in gen_models]
            t2.append(f"| {ds} | " + " | ".join(rl + asw) + " |")
        t3 = ["", f"### Seconds per epoch relative to SCVI (n_latent = {n_latent})", ""]
        t3.append("| dataset | SCVI s/epoch | " + " | ".join(gen_models) + " |")
        t3.append("|---" * (len(gen_models) + 2) + "|")
        for ds in datasets:
            ref = idx.loc[(ds, "SCVI")].sec_per_epoch if (ds, "SCVI") in idx.index else np.nan
            rel = [
                cell(ds, m, lambda r, ref=ref: f"{r.sec_per_epoch / ref:.2f}") for m in gen_models
            ]
            t3.append(f"| {ds} | {ref:.2f} | " + " | ".join(rel) + " |")
        extra = []
        if "test_marginal_ll" in sub:
            extra = ["", f"### Test marginal log-likelihood per cell (n_latent = {n_latent})", ""]
            vm = [m for m in gen_models if m != "AE"]
            extra.append("| dataset | " + " | ".join(vm) + " |")
            extra.append("|---" * (len(vm) + 1) + "|")
            for ds in datasets:
                vals = [cell(ds, m, lambda r: f"{r.test_marginal_ll:.1f}") for m in vm]
                extra.append(f"| {ds} | " + " | ".join(vals) + " |")
        out.append("\n".join(t1 + t2 + t3 + extra))
    return "\n\n".join(out)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--latent", nargs="+", type=int, default=[128, 20])
    parser.add_argument(
        "--latent20-datasets",
        nargs="*",
        default=None,
        help="restrict the n_latent=20 runs to these datasets (default: all)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-hidden", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=1)
    parser.add_argument("--n-pseudo-inputs", type=int, default=500)
    parser.add_argument("--marginal-ll-samples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "vampvi_tables.csv"

    rows = []
    t0 = time.perf_counter()
    for ds in args.datasets:
        data = ad.read_h5ad(args.data_dir / DATASETS[ds])
        data.X = data.X.astype(np.float32)
        # 80/20: the test cells are the first 20 % of the seeded permutation, as the
        # recorded tables drew them
        test_idx, _, train_idx = cell_split(data.n_obs, (0.2, 0.0, 0.8), seed=args.seed)
        for n_latent in args.latent:
            if n_latent != max(args.latent) and args.latent20_datasets is not None:
                if ds not in args.latent20_datasets:
                    continue
            for name in args.models:
                row = {"dataset": ds, **run_one(name, data, train_idx, test_idx, n_latent, args)}
                rows.append(row)
                print(
                    f"[{time.perf_counter() - t0:7.0f}s] {ds} z={n_latent} {name}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)),
                    flush=True,
                )
                pd.DataFrame(rows).to_csv(csv, index=False)

    df = pd.DataFrame(rows)
    header = (
        f"# Dony et al. (2020) tables (scvi-capvi {scvi_capvi.__version__}, scvi-tools "
        f"{scvi.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}, "
        f"{args.threads} thread(s))\n\nSettings: epochs={args.epochs} (no early stopping), "
        f"n_hidden={args.n_hidden}, n_layers={args.n_layers}, K={args.n_pseudo_inputs}, "
        f"80/20 cell split seed={args.seed}, batch size 128, lr 1e-3 (Adam). "
        "*SCVI uses its default KL warm-up (400 epochs), so its KL weight stays below "
        f"{args.epochs / 400:.3f}: timing reference only. Total wall time "
        f"{time.perf_counter() - t0:.0f} s.\n\n"
    )
    md = header + paper_tables(df)
    (args.out / "vampvi_tables.md").write_text(md)
    print(md)
    return df


if __name__ == "__main__":
    main()
