"""CapVI without labels (a Gaussian-mixture VAE) against SCVI + k-means and SCVI + Leiden.

For every labelled dataset, K = its number of annotated cell types, seeds 0-2: ARI / NMI of
the GMVAE's components and of k-means / Leiden (resolution giving K clusters) on SCVI's
latent (scvi-tools' defaults), components in use (>= 1 % of cells), and training time, both
models with the same epoch budget. Datasets with more than 2,000 genes keep scanpy's 2,000
most variable ones (``seurat_v3`` on counts, per batch), as scvi-tools' tutorials do.
``--k-range`` adds the choice of K without labels: held-out ELBO and marginal LL against K.

    python benchmarks/gmvae_clustering.py                      # every dataset, 3 seeds
    python benchmarks/gmvae_clustering.py --datasets pbmc4k_10x_top2000 --seeds 0
    python benchmarks/gmvae_clustering.py --datasets kang2018_pbmc_ifnb_muscat_subset \
        --seeds 0 --k-range 2 3 4 5 6 8 10 --skip-clustering

Writes ``benchmarks/results/gmvae_clustering_<dataset>_<network>_seed<seed>.csv`` and prints
them; ``--figures`` draws a UMAP per dataset (first seed) into ``docs/benchmarks/gmvae/``;
``--table`` prints the mean ± sd table of every result file present (the one in
``docs/benchmarks/gmvae_clustering.md``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import scanpy as sc
import scvi
import torch
from _common import top_variable_genes

from scvi_capvi.benchmark import available_datasets, load_dataset
from scvi_capvi.benchmark._clustering import fit_gmvae, gmvae_clustering
from scvi_capvi.metrics import clustering_agreement, components_used

RESULTS = Path(__file__).parent / "results"
NETWORKS = {
    "capvi": {},
    "scvi": {"n_hidden": 128, "n_layers": 1, "dropout_rate": 0.1, "classifier_n_hidden": 128},
}
DOCS = Path(__file__).parent.parent / "docs" / "benchmarks"


def prepare(name: str) -> sc.AnnData:
    return top_variable_genes(load_dataset(name))


def umap(adata, model, path: Path):
    import matplotlib.pyplot as plt

    adata = adata.copy()
    adata.obsm["gmvae"] = model.get_latent_representation()
    adata.obs["component"] = pd.Categorical(
        model.predict(soft=True).to_numpy().argmax(1).astype(str)
    )
    sc.pp.neighbors(adata, use_rep="gmvae", random_state=0)
    sc.tl.umap(adata, random_state=0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key in zip(axes, ("cell_type", "component"), strict=True):
        sc.pl.umap(adata, color=key, ax=ax, show=False, frameon=False, title=key, size=8)
    fig.suptitle(f"{adata.uns['benchmark_name']}: GMVAE latent (seed 0)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def choose_k(adata, ks, max_epochs, seed, network):
    rows = []
    for k in ks:
        scvi.settings.seed = seed
        model, _ = fit_gmvae(adata, k, max_epochs, **NETWORKS[network])
        val = model.validation_indices
        components = model.predict(soft=True).to_numpy().argmax(1)
        rows.append(
            {
                "n_components": k,
                "validation_elbo": float(model.get_elbo(indices=val)),
                "validation_marginal_ll": float(
                    model.get_marginal_ll(indices=val, n_mc_samples=100, progress_bar=False)
                ),
                "components_used": components_used(components, k),
                **clustering_agreement(adata.obs["cell_type"], components),
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def summarise() -> pd.DataFrame:
    """Mean ± sd over seeds per dataset and method, from every result file present."""
    paths = sorted(RESULTS.glob("gmvae_clustering_*_seed*.csv"))
    table = pd.concat([pd.read_csv(p) for p in paths]).drop_duplicates(
        ["dataset", "method", "seed"], keep="last"
    )
    return (
        table.groupby(["dataset", "method"], sort=False)
        .agg(
            K=("n_components", "first"),
            cells=("n_cells", "first"),
            seeds=("seed", "nunique"),
            ari=("ari", "mean"),
            ari_sd=("ari", "std"),
            nmi=("nmi", "mean"),
            nmi_sd=("nmi", "std"),
            used_min=("components_used", "min"),
            seconds=("seconds", "mean"),
            cost_vs_scvi=("cost_vs_scvi", "mean"),
        )
        .reset_index()
    )


def markdown(summary: pd.DataFrame) -> str:
    def pm(mean, sd):
        return f"{mean:.3f}" if pd.isna(sd) else f"{mean:.3f} ± {sd:.3f}"

    lines = [
        "| dataset | K | method | seeds | ARI | NMI | components used (min) | train s | "
        "cost / SCVI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        cost = "" if pd.isna(r.cost_vs_scvi) else f"{r.cost_vs_scvi:.2f}"
        lines.append(
            f"| {r.dataset} | {r.K} | {r.method} | {r.seeds} | {pm(r.ari, r.ari_sd)} | "
            f"{pm(r.nmi, r.nmi_sd)} | {r.used_min} | {r.seconds:.0f} | {cost} |"
        )
    lines += [
        "",
        "| dataset | better baseline ARI | GMVAE ARI | ratio (goal >= 0.95) | components with "
        ">= 1 % (goal >= 0.8 K) | annotated types with >= 1 % | cost / SCVI (goal <= 1.5) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, rows in summary.groupby("dataset", sort=False):
        base = rows[rows["method"].str.startswith("SCVI")]
        fractions = load_dataset(dataset).obs["cell_type"].value_counts(normalize=True)
        for r in rows[rows["method"].str.startswith("CapVI")].itertuples():
            best = base["ari"].max()
            lines.append(
                f"| {dataset} | {best:.3f} | {r.ari:.3f} | {r.ari / best:.3f} | "
                f"{r.used_min} of {r.K} | {(fractions >= 0.01).sum()} | "
                f"{r.cost_vs_scvi:.2f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--k-range", nargs="*", type=int, default=None)
    parser.add_argument("--skip-clustering", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the summary table and exit")
    parser.add_argument("--figures", action="store_true", help="UMAP per dataset (seed 0)")
    parser.add_argument(
        "--network",
        choices=("capvi", "scvi"),
        default="capvi",
        help="the GMVAE's network: CapVI's defaults (3 x 256) or SCVI's (1 x 128, dropout 0.1)",
    )
    args = parser.parse_args()
    if args.table:
        summary = summarise()
        summary.to_csv(RESULTS / "gmvae_clustering_summary.csv", index=False)
        print(markdown(summary))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    names = args.datasets or [n for n in available_datasets() if n != "pbmc68k_reduced"]
    for name in names:
        adata = prepare(name)
        if not args.skip_clustering:
            for seed in args.seeds:
                network = NETWORKS[args.network]
                frame = gmvae_clustering(
                    adata, max_epochs=args.max_epochs, seed=seed, gmvae_kwargs=network
                )
                gmvae = frame["method"] == "CapVI GMVAE"
                frame.loc[gmvae, "method"] += f" ({args.network} network)"
                model = frame.attrs.pop("gmvae")
                frame.attrs.clear()
                frame.insert(0, "dataset", name)
                frame.insert(1, "n_cells", adata.n_obs)
                frame.insert(2, "n_genes", adata.n_vars)
                RESULTS.mkdir(exist_ok=True)
                frame.to_csv(
                    RESULTS / f"gmvae_clustering_{name}_{args.network}_seed{seed}.csv", index=False
                )
                print(frame.to_string(index=False), flush=True)
                if args.figures and seed == args.seeds[0]:
                    umap(adata, model, DOCS / "gmvae" / f"{name}.png")
        if args.k_range:
            table = choose_k(adata, args.k_range, args.max_epochs, args.seeds[0], args.network)
            table.insert(0, "dataset", name)
            table.insert(1, "n_cell_types", adata.obs["cell_type"].nunique())
            table.to_csv(RESULTS / f"gmvae_clustering_k_{name}.csv", index=False)
            print(table.to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
