"""The main job: CapVI vs scVI on real PBMCs, offline, in a few minutes on a laptop CPU."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import scvi

from scvi_capvi._catalog import QUICKSTART_EPOCHS
from scvi_capvi.data import pbmc68k_reduced

from ._evaluation import evaluate_models
from ._recipes import (
    SCANVI_TUTORIAL_TRAIN,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi_as_users_run_it,
)
from ._splits import Split

# Epoch caps (in the command line's catalog, which shows them in `scvi-capvi quickstart -h`)
QUICK_EPOCHS = QUICKSTART_EPOCHS


def quickstart(
    out_dir: str | Path = "capvi_quickstart",
    seed: int = 0,
    n_mc_samples: int = 1000,
    epochs: dict | None = None,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Train CapVI, SCVI and SCANVI on scanpy's bundled ``pbmc68k_reduced`` and compare them.

    CapVI runs with its defaults; SCVI with scvi-tools' defaults (CapVI's network, the same
    epoch budget as CapVI's two ELBO stages together) and SCANVI as scvi-tools' tutorials run
    it (``SCANVI.from_scvi_model`` on that SCVI, 20 more epochs; fewer when ``epochs`` caps
    CapVI's stages below 20).

    Cells are split 60/20/20 (train / validation / held-out test, seeded). Prints and returns
    a table with, per model, the classifier's test accuracy (CapVI), the test marginal
    log-likelihood per cell (importance sampling, ``n_mc_samples`` samples), the median cLISI
    of the test cells' latent (lower = purer cell-type neighbourhoods), epochs and seconds per
    epoch; writes ``results.csv`` and ``umap_capvi.png`` (CapVI latent, coloured by cell type)
    into ``out_dir``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    adata = pbmc68k_reduced()
    split = Split.by_cells(adata.n_obs, (0.6, 0.2, 0.2), seed=seed)
    train_size = split.train_size
    test = adata[split.test].copy()
    print(
        f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{adata.obs['cell_type'].nunique()} cell types; train/val/test = "
        f"{len(split.train)}/{len(split.validation)}/{len(split.test)} cells (seed {seed})"
    )
    quiet = {} if progress_bar else {"enable_progress_bar": False}
    epochs = {**QUICK_EPOCHS, **(epochs or {})}

    print("Training CapVI (stage 1 classifier -> stage 2 frozen -> stage 3 end to end)...")
    scvi.settings.seed = seed
    capvi = fit_capvi(
        adata[split.fit].copy(), train_size, batch_key=None, train_kwargs={**epochs, **quiet}
    )
    print("Training SCVI (scvi-tools' defaults, CapVI's network), then SCANVI from it...")
    scvi.settings.seed = seed
    ref = fit_scvi_as_users_run_it(
        adata[split.fit].copy(),
        train_size,
        batch_key=None,
        network="capvi",
        max_epochs=epochs["max_epochs"] + epochs["frozen_epochs"],
        train_kwargs=quiet,
    )
    # the tutorial's 20 SCANVI epochs, or fewer when `epochs` caps the stages lower
    scanvi_epochs = min(SCANVI_TUTORIAL_TRAIN["max_epochs"], epochs["max_epochs"])
    scanvi = fit_scanvi_from_scvi(
        ref, train_size=train_size, train_kwargs={**quiet, "max_epochs": scanvi_epochs}
    )

    print(f"Evaluating on {test.n_obs} held-out cells ({n_mc_samples} importance samples)...")
    scvi.settings.seed = seed
    table = evaluate_models(
        {"CapVI": capvi, "SCVI": ref, "SCANVI": scanvi},
        test,
        batch_key=None,
        n_mc_samples=n_mc_samples,
        progress_bar=progress_bar,
    )
    table.to_csv(out / "results.csv")

    full = adata.copy()
    full.obsm["X_capvi"] = capvi.model.get_latent_representation(full)
    types = full.obs["cell_type"].astype("category").cat.categories
    full.obs["capvi_pred"] = pd.Categorical(capvi.model.predict(full), categories=types)
    # one colour per cell type in both panels
    palette = list(sc.pl.palettes.default_20[: len(types)])
    full.uns["cell_type_colors"] = full.uns["capvi_pred_colors"] = palette
    sc.pp.neighbors(full, use_rep="X_capvi", random_state=seed)
    sc.tl.umap(full, random_state=seed)
    fig = sc.pl.umap(
        full,
        color=["cell_type", "capvi_pred"],
        title=["annotation", "CapVI prediction"],
        wspace=0.6,
        show=False,
        return_fig=True,
    )
    fig.savefig(out / "umap_capvi.png", dpi=110, bbox_inches="tight")

    shown = table[
        ["accuracy", "test_marginal_ll", "median_clisi", "epochs", "seconds_per_epoch"]
    ].rename(columns={"test_marginal_ll": f"test_marginal_ll ({n_mc_samples} IS)"})
    print()
    print(shown.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(
        f"\nWrote {out / 'results.csv'} and {out / 'umap_capvi.png'} "
        f"in {time.perf_counter() - t0:.0f} s."
    )
    return table
