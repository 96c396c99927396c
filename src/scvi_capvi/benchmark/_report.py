"""The benchmark's report: ``report.md`` (settings, environment, one table per dataset, the
papers' claims beside our numbers) and the figures of each dataset."""

from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from scvi_capvi.metrics import confusion_matrix

from ._config import BenchmarkConfig
from ._datasets import BATCH_KEY, LABELS_KEY

MAIN_COLUMNS = [
    "test_marginal_ll",
    "test_reconstruction",
    "accuracy",
    "weighted_accuracy",
    "median_clisi",
    "median_pairwise_ilisi",
    "median_ilisi",
    "cell_type_asw",
    "batch_entropy_mixing",
    "knn_purity",
    "active_units",
    "pcs_95",
    "probe_accuracy",
    "Bio conservation",
    "Batch correction",
    "Total",
    "epochs",
    "train_seconds",
    "s_per_1k_cells_10_epochs",
]


def peak_memory_gib() -> dict[str, float]:
    """Peak resident memory so far, in GiB: of this process and of its largest finished child
    process (e.g. a Ray worker of the model selection), from ``getrusage``."""
    import resource
    import sys

    # ru_maxrss is in KiB on Linux, in bytes on macOS
    unit = 1 if sys.platform == "darwin" else 1024
    flags = {"process": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    return {who: resource.getrusage(flag).ru_maxrss * unit / 2**30 for who, flag in flags.items()}


def environment() -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in (
        "scvi-capvi",
        "scvi-tools",
        "torch",
        "scanpy",
        "anndata",
        "scib-metrics",
        "scikit-learn",
        "numpy",
        "scanorama",
        "ray",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def draw_figures(out: Path, name: str, adata, split, outputs: dict, lisi_values: dict, seed=0):
    """UMAPs of every latent, LISI distributions, confusion matrices and training curves of
    one dataset, saved in ``out``; returns the file names."""
    import anndata as ad
    import matplotlib.pyplot as plt

    from scvi_capvi.pl import confusion_heatmap, lisi_distributions, training_curves, umap_grid

    labels = adata.obs[LABELS_KEY].astype(str).to_numpy()
    files = []

    def save(fig, filename):
        fig.savefig(out / filename, dpi=80, bbox_inches="tight")
        plt.close(fig)
        files.append(filename)

    obs = adata.obs[[LABELS_KEY, BATCH_KEY]].copy()
    view = ad.AnnData(np.zeros((adata.n_obs, 1), dtype=np.float32), obs=obs)
    for key, output in outputs.items():
        view.obsm[f"X_{key}"] = output.latent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embeddings = {k: f"X_{k}" for k in outputs}
        umap = umap_grid(view, embeddings, color=(LABELS_KEY, BATCH_KEY), seed=seed)
        save(umap, f"umap_{name}.png")
        save(lisi_distributions(lisi_values), f"lisi_{name}.png")
        for key, output in outputs.items():
            if output.test_predictions is not None:
                table = confusion_matrix(labels[split.test], output.test_predictions)
                save(
                    confusion_heatmap(table, title=f"{key} on {name} test cells"),
                    f"confusion_{name}_{key}.png",
                )
            if output.history:
                try:
                    fig = training_curves(output.history, title=f"{key} on {name}")
                except ValueError:
                    continue
                save(fig, f"curves_{name}_{key}.png")
    return files


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame, columns: list[str], index: str) -> str:
    columns = [c for c in columns if c in frame and frame[c].notna().any()]
    lines = [f"| {index} | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for _, row in frame.iterrows():
        lines.append(f"| {row[index]} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _get(results: pd.DataFrame, dataset: str, method: str, column: str) -> float:
    hit = results[(results["dataset"] == dataset) & (results["method"] == method)]
    if not len(hit) or column not in hit:
        return float("nan")
    return float(hit[column].iloc[0])


def _claims(results: pd.DataFrame, infos: list[dict]) -> list[str]:
    """Each paper's claim beside our numbers, dataset by dataset."""
    lines = ["## The papers' claims beside ours", ""]
    datasets = [i["dataset"] for i in infos]

    lines += ["### Clivio et al. (2022), capVI", ""]
    if "pbmc11k" in datasets:
        ours = {m: _get(results, "pbmc11k", m, "test_marginal_ll") for m in ("CapVI", "SCVI")}
        lines.append(
            f"- PBMC-11K test log-likelihood: published capVI −655.85 vs scVI −662.79; ours "
            f"CapVI {_fmt(ours['CapVI'], 2)} vs SCVI {_fmt(ours['SCVI'], 2)}."
        )
    else:
        lines.append(
            "- PBMC-11K test log-likelihood (published capVI −655.85 vs scVI −662.79): not run "
            "here — PBMC-11K's 10x matrices are not in the data folder."
        )
    lines += [
        "",
        "| dataset | CapVI LL | SCVI LL | CapVI−SCVI | CapVI-e2e LL | cLISI CapVI / "
        "SCVI / Scanorama | pairwise iLISI CapVI / SCVI / Scanorama | claim holds? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds in datasets:
        ll = {m: _get(results, ds, m, "test_marginal_ll") for m in ("CapVI", "SCVI", "CapVI-e2e")}
        cl = {m: _get(results, ds, m, "median_clisi") for m in ("CapVI", "SCVI", "Scanorama")}
        il = {
            m: _get(results, ds, m, "median_pairwise_ilisi")
            for m in ("CapVI", "SCVI", "Scanorama")
        }
        verdict = []
        if np.isfinite(ll["CapVI"]) and np.isfinite(ll["SCVI"]):
            verdict.append("LL " + ("yes" if ll["CapVI"] > ll["SCVI"] else "no"))
        others = [v for k, v in cl.items() if k != "CapVI" and np.isfinite(v)]
        if np.isfinite(cl["CapVI"]) and others:
            verdict.append("cLISI " + ("yes" if cl["CapVI"] < min(others) else "no"))
        lines.append(
            f"| {ds} | {_fmt(ll['CapVI'], 2)} | {_fmt(ll['SCVI'], 2)} | "
            f"{_fmt(ll['CapVI'] - ll['SCVI'], 2)} | {_fmt(ll['CapVI-e2e'], 2)} | "
            + " / ".join(_fmt(cl[m]) for m in cl)
            + " | "
            + " / ".join(_fmt(il[m]) for m in il)
            + f" | {', '.join(verdict) or '–'} |"
        )

    lines += [
        "",
        "### Dony et al. (2020), VampPrior: VAMP more active units, fewer PCs for 95 %, "
        "higher cell-type ASW than VAE",
        "",
        "| dataset | active units VAE / VAMP | PCs-95 VAE / VAMP | ASW VAE / VAMP | "
        "claim holds? |",
        "|---|---|---|---|---|",
    ]
    for ds in datasets:
        vals = {
            c: [_get(results, ds, m, c) for m in ("VampVI-VAE", "VampVI-VAMP")]
            for c in ("active_units", "pcs_95", "cell_type_asw")
        }
        if not all(np.isfinite(vals["active_units"])):
            continue
        # strict: a tie (e.g. every unit active in both) does not reproduce "more" / "fewer"
        holds = [
            vals["active_units"][1] > vals["active_units"][0],
            vals["pcs_95"][1] < vals["pcs_95"][0],
            vals["cell_type_asw"][1] > vals["cell_type_asw"][0],
        ]
        lines.append(
            f"| {ds} | "
            + " | ".join(
                " / ".join(_fmt(v, 3 if c == "cell_type_asw" else 0) for v in vals[c])
                for c in vals
            )
            + f" | {sum(holds)} of 3 |"
        )

    lines += [
        "",
        "### Bolos et al. (2020), probe: FFNN on raw vs PCA vs latent",
        "",
        "Published (1,300 PBMC-68k cells): raw 0.655; PCA k=10/25/50/100: 0.580 / 0.556 / "
        "0.569 / 0.621; scVAE latent Z=10/25/50/100: 0.536 / 0.622 / 0.765 / 0.585 — "
        "no clear difference between inputs.",
        "",
    ]
    for info in infos:
        probe = info.get("probe")
        if probe is None:
            continue
        parts = [f"{r.input}({r.dim}) {r.accuracy:.3f}" for r in probe.itertuples()]
        lines.append(f"- {info['dataset']}: " + "; ".join(parts))

    lines += [
        "",
        "### Svensson et al. (2020), LDVAE: LinearSCVI vs SCVI reconstruction; ~5 s per 1,000 "
        "cells per 10 epochs on a desktop CPU",
        "",
        "| dataset | test reconstruction SCVI / LinearSCVI | s per 1k cells per 10 epochs "
        "SCVI / LinearSCVI |",
        "|---|---|---|",
    ]
    for ds in datasets:
        rec = [_get(results, ds, m, "test_reconstruction") for m in ("SCVI", "LinearSCVI")]
        cost = [_get(results, ds, m, "s_per_1k_cells_10_epochs") for m in ("SCVI", "LinearSCVI")]
        if not any(np.isfinite(rec + cost)):
            continue
        lines.append(
            f"| {ds} | {' / '.join(_fmt(v, 1) for v in rec)} | "
            f"{' / '.join(_fmt(v, 2) for v in cost)} |"
        )
    return lines


def write_report(
    out: Path,
    results: pd.DataFrame,
    infos: list[dict],
    config: BenchmarkConfig,
    wall_seconds: float,
    command: str = "",
    env: dict | None = None,
) -> Path:
    """``report.md``: settings, environment, one table per dataset, figures, the papers."""
    env = env or environment()
    peak = peak_memory_gib()
    quick = config.max_epochs is not None
    lines = [
        "# scvi-capvi benchmark report",
        "",
        f"- command: `{command or 'scvi-capvi benchmark'}`",
        "- mode: "
        + (
            "**quick** (epoch caps, few importance samples: not the full benchmark)"
            if quick
            else "full"
        ),
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; wall time {wall_seconds:.0f} s; "
        f"peak memory {peak['process']:.2f} GiB resident (largest child process "
        f"{peak['children']:.2f} GiB)",
        f"- seed: {config.seed} (splits, training, probe, UMAP)",
        f"- hardware: {env['processor']}, {env['cpu_count']} CPUs visible, torch threads "
        f"{env['torch_threads']}, GPU: {env['cuda']}; {env['platform']}, Python {env['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "- settings: "
        + ", ".join(f"{k}={v}" for k, v in asdict(config).items() if k not in ("progress_bar",)),
        "",
        "Higher is better for log-likelihoods, accuracies, iLISI, ASW, BEM, k-NN purity and "
        "scIB scores; lower for cLISI and reconstruction loss. LISI, ASW, BEM, purity and scIB "
        "are computed on the latent of all cells; likelihood, reconstruction and accuracy on "
        "the test cells only. Test log-likelihood: importance sampling with "
        f"{config.n_mc_samples} samples per cell. Models with a batch covariate see held-out "
        "batches as their first training batch. Epochs: every stage early-stops on its "
        "validation criterion; with an epoch cap E (quick mode) CapVI gets E per stage, "
        "the single-stage VAEs 2E (CapVI's stages 2 + 3), SCANVI min(E, 20) after its SCVI. "
        "`s_per_1k_cells_10_epochs` is the cost unit of Svensson et al. (2020) (training "
        "cells, this machine).",
        "",
    ]
    for info in infos:
        ds = info["dataset"]
        lines += [
            f"## {ds}",
            "",
            f"{info['n_cells']} cells × {info['n_genes']} genes, {info['n_cell_types']} "
            f"cell types, {info['n_batches']} batches. Split: {info['split']}. "
            f"Wall time {info.get('wall_seconds', float('nan')):.0f} s.",
            "",
        ]
        if info.get("selection"):
            lines += [
                f"CapVI model selection: chose {info['selection']['chosen']} "
                f"(grid in `{info['selection']['file']}`).",
                "",
            ]
        part = results[results["dataset"] == ds] if len(results) else results
        if len(part):
            lines += [_markdown_table(part, MAIN_COLUMNS, "method"), ""]
        for method, why in info["skipped"].items():
            lines.append(f"- {method}: not run — {why}")
        if info["skipped"]:
            lines.append("")
        for fig in info["figures"]:
            lines.append(f"![{fig}]({fig})")
        lines.append("")
    lines += _claims(results, infos) if len(results) else []
    lines += [
        "",
        "Files: `results.csv` (every metric), `probe_<dataset>.csv`, "
        "`scib_<dataset>.csv` (each scIB metric), `selection_<dataset>.csv`, PNGs.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
