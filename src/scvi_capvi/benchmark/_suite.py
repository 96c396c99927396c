"""``scvi-capvi benchmark``: methods × datasets × metrics → results.csv, report.md, PNGs."""

from __future__ import annotations

import json
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from scvi_capvi.metrics import probe_table, scib_scores

from ._config import BenchmarkConfig
from ._datasets import BATCH_KEY, LABELS_KEY, load_dataset
from ._evaluation import method_scores, nonfinite_validation
from ._methods import Method, MethodOutput, MethodSkipped, resolve_methods
from ._report import draw_figures, environment, write_report
from ._splits import add_model_batch, make_split


def run_dataset(
    name: str,
    methods: list[Method],
    config: BenchmarkConfig,
    out: Path,
    data_dir=None,
    log=print,
) -> tuple[pd.DataFrame, dict]:
    """Fit every method on one dataset, compute the metrics, draw the figures."""
    adata = load_dataset(name, data_dir, max_cells=config.max_cells, seed=config.seed)
    split = make_split(adata, seed=config.seed)
    add_model_batch(adata, split)
    labels = adata.obs[LABELS_KEY].astype(str).to_numpy()
    batch = adata.obs[BATCH_KEY].astype(str).to_numpy()
    n_batches = np.unique(batch).size
    info = {
        "dataset": name,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_cell_types": int(np.unique(labels).size),
        "n_batches": int(n_batches),
        "split": split.describe(),
        "skipped": {},
        "selection": None,
        "figures": [],
    }
    log(
        f"[{name}] {adata.n_obs} cells x {adata.n_vars} genes, {info['n_cell_types']} types, "
        f"{n_batches} batches; split: {split.describe()}"
    )

    if config.select and any(m.name == "CapVI" for m in methods):
        from ._selection import select_capvi

        chosen, table = select_capvi(adata, split, config, backend=config.tune_backend, log=log)
        table.to_csv(out / f"selection_{name}.csv", index=False)
        info["selection"] = {"chosen": chosen, "file": f"selection_{name}.csv"}
        config = replace(config, capvi_kwargs={**config.capvi_kwargs, **chosen})

    rows, outputs, lisi_values = {}, {}, {}
    for position, method in enumerate(methods, start=1):
        if method.needs_batches and n_batches < 2:
            info["skipped"][method.name] = "needs at least two batches"
            continue
        log(f"[{name}] {position}/{len(methods)} {method.name}: fitting...")
        start = time.perf_counter()
        try:
            output: MethodOutput = method.fit(adata, split, config)
        except MethodSkipped as err:
            info["skipped"][method.name] = str(err)
            log(f"[{name}] {method.name} skipped: {err}")
            continue
        except Exception as err:
            info["skipped"][method.name] = f"failed: {type(err).__name__}: {err}"[:300]
            log(f"[{name}] {method.name} FAILED:\n{traceback.format_exc()}")
            continue
        log(f"[{name}] {method.name}: fitted in {time.perf_counter() - start:.0f} s")
        bad = nonfinite_validation(output.history)
        if bad:
            info["skipped"][method.name] = f"failed: non-finite validation loss ({bad})"
            log(f"[{name}] {method.name} FAILED: non-finite validation loss ({bad})")
            continue
        row, per_cell = method_scores(output, labels, batch, split)
        row["wall_seconds"] = time.perf_counter() - start
        if output.info:
            row["info"] = json.dumps(output.info, default=str)
        rows[method.name] = row
        outputs[method.name] = output
        lisi_values[method.name] = per_cell

    frame = pd.DataFrame.from_dict(rows, orient="index")
    if not len(frame):
        return frame, info

    # scIB totals over all embeddings at once (batch correction needs >= 2 batches)
    if n_batches > 1:
        log(f"[{name}] scIB metrics ({'fast' if config.scib_fast else 'all'})...")
        pca = outputs["PCA"].latent if "PCA" in outputs else None
        scores = scib_scores(
            {k: v.latent for k, v in outputs.items()},
            labels,
            batch,
            X_pre=pca,
            fast=config.scib_fast,
        )
        for col in ("Bio conservation", "Batch correction", "Total"):
            frame[col] = scores[col]
        scores.to_csv(out / f"scib_{name}.csv")

    # the probe of Bolos et al. (2020): raw counts vs PCA(k) vs each method's latent
    log(f"[{name}] probe of Bolos et al. (2020) ({config.probe_epochs} epochs)...")
    probe = probe_table(
        adata.X,
        labels,
        latents={k: v.latent for k, v in outputs.items()},
        ks=config.probe_ks,
        seed=config.seed,
        n_epochs=config.probe_epochs,
    )
    probe.to_csv(out / f"probe_{name}.csv", index=False)
    # rows: raw, one per k, then one per method (a method may be called "PCA" too)
    latent_rows = probe.iloc[1 + len(config.probe_ks) :]
    frame["probe_accuracy"] = pd.Series(latent_rows["accuracy"].to_numpy(), index=list(outputs))
    info["probe"] = probe

    info["figures"] = draw_figures(out, name, adata, split, outputs, lisi_values, config.seed)
    frame.insert(0, "method", frame.index)
    frame.insert(0, "dataset", name)
    return frame.reset_index(drop=True), info


def run_benchmark(
    datasets: list[str],
    methods: list[str] | None = None,
    config: BenchmarkConfig | None = None,
    out_dir: str | Path = "capvi_benchmark",
    data_dir=None,
    command: str = "",
) -> pd.DataFrame:
    """Run methods × datasets and write ``results.csv``, ``report.md`` and the PNGs.

    Parameters
    ----------
    datasets
        Dataset names (see :func:`~scvi_capvi.benchmark.available_datasets`).
    methods
        Method names (see ``METHODS``); all when ``None``.
    config
        Training / evaluation settings (:meth:`BenchmarkConfig.quick` for ``--quick``).
    out_dir
        Report folder.
    data_dir
        Folder of the local datasets.
    command
        The command line, recorded in the report.
    """
    import logging

    import scvi

    config = config or BenchmarkConfig()
    chosen = resolve_methods(methods)
    # keep the console to our progress bars and one line per step
    scvi.settings.verbosity = logging.WARNING
    for logger in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    # Lightning 2.6 warns once per trainer about torch's pytree API: noise between the bars
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()  # before any library changes the thread settings
    t0 = time.perf_counter()
    frames, infos = [], []
    for name in tqdm(datasets, desc="datasets", disable=not config.progress_bar):
        frame, info = run_dataset(name, chosen, config, out, data_dir=data_dir)
        info["wall_seconds"] = time.perf_counter() - t0 - sum(i["wall_seconds"] for i in infos)
        frames.append(frame)
        infos.append(info)
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    results.to_csv(out / "results.csv", index=False)
    wall = time.perf_counter() - t0
    write_report(out, results, infos, config, wall, command, env=env)
    return results
