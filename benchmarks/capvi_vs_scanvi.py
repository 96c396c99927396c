"""CapVI against SCVI and SCANVI run the way scvi-tools users run them.

Two protocols, both on the labelled datasets of ``../shared/data``:

* ``heldout`` — a seeded 50/25/25 train / validation / test split of the cells. Every model
  trains on the same training cells, validates on the same validation cells, and is scored on
  the test cells: marginal log-likelihood per cell (importance sampling), median cLISI and
  (several batches) median iLISI of the test cells' latent means, and for the classifiers
  accuracy, balanced accuracy and expected calibration error of ``predict(soft=True)``.
* ``transfer`` — label transfer to an unseen batch: the reference is every other batch, the
  query one batch never seen in training (Kang: the stimulated donor 107; CellBench: Drop-seq).
  SCANVI + scArches as in scvi-tools' tutorial (``SCANVI.load_query_data`` then query
  training), against CapVI's direct ``predict`` and CapVI after ``load_query_data`` + query
  training.

Baselines (see :func:`scvi_capvi.benchmark.fit_scvi_as_users_run_it`): SCVI with every
scvi-tools default, with and without its KL warm-up, with scvi-tools' network and with CapVI's
(D = 20, 3 x 256, dropout 0.25), SCVI with Clivio et al. (2022)'s recipe, and SCANVI via
``SCANVI.from_scvi_model`` + ``train(max_epochs=20, n_samples_per_label=100)`` on each SCVI.
Every SCVI gets ``--max-epochs`` (capped by scvi-tools' own heuristic); CapVI gets the same
budget for its two ELBO stages together (plus its classifier stage, which is cheap).

    python benchmarks/capvi_vs_scanvi.py heldout --datasets kang2018_pbmc_ifnb_muscat_subset \\
        --seeds 0 1 2
    python benchmarks/capvi_vs_scanvi.py transfer
    python benchmarks/capvi_vs_scanvi.py report  # the CSVs -> docs/benchmarks/capvi_vs_scanvi.md

Each run appends its rows to ``benchmarks/results/capvi_vs_scanvi_<protocol>.csv``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

from scvi_capvi.benchmark import (
    ARCHES_NETWORK,
    SCARCHES_QUERY_TRAIN,
    FitResult,
    Split,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi,
    fit_scvi_as_users_run_it,
)
from scvi_capvi.data import read_dataset
from scvi_capvi.metrics import (
    accuracy,
    clisi,
    expected_calibration_error,
    ilisi,
    weighted_accuracy,
)
from scvi_capvi.model import CapVI

OUT = Path(__file__).parent / "results"
DOC = Path(__file__).parents[1] / "docs" / "benchmarks" / "capvi_vs_scanvi.md"
QUIET = {"enable_progress_bar": False}
LABELS, BATCH, UNLABELED = "cell_type", "batch", "Unknown"
TRANSFER_QUERIES = {
    "kang2018_pbmc_ifnb_muscat_subset": "stim107",
    "cellbench_lung_cell_lines": "sc_dropseq",
}


def scvi_epochs(budget: int, n_obs: int) -> int:
    """The SCVI epochs: ``budget``, capped by scvi-tools' own heuristic for ``n_obs`` cells."""
    return min(budget, scvi.model._utils.get_max_epochs_heuristic(n_obs))


def capvi_epochs(budget: int, n_obs: int) -> dict:
    """CapVI's two ELBO stages share the SCVI epochs."""
    total = scvi_epochs(budget, n_obs)
    return {"frozen_epochs": total // 2, "max_epochs": total - total // 2}


def heldout_fits(
    fit_data, train_size, methods, budget, capvi_kwargs, capvi_train=None, seed=0
) -> dict[str, FitResult]:
    """Train every method on ``fit_data`` (training + validation cells)."""
    epochs = scvi_epochs(budget, fit_data.n_obs)
    common = {"max_epochs": epochs, "train_kwargs": QUIET}
    scvi_variants = {
        "SCVI": {},
        "SCVI, no warm-up": {"kl_warmup": False},
        "SCVI, CapVI net": {"network": "capvi"},
        "SCVI, CapVI net, no warm-up": {"network": "capvi", "kl_warmup": False},
    }
    fits: dict[str, FitResult] = {}
    for name, kwargs in scvi_variants.items():
        wanted = name in methods or f"SCANVI{name[4:]}" in methods
        if wanted:
            scvi.settings.seed = seed
            fits[name] = fit_scvi_as_users_run_it(fit_data.copy(), train_size, **common, **kwargs)
    for name in list(fits):
        scanvi_name = f"SCANVI{name[4:]}"
        if scanvi_name in methods:
            scvi.settings.seed = seed
            fits[scanvi_name] = fit_scanvi_from_scvi(
                fits[name], train_size=train_size, train_kwargs=QUIET
            )
    if "SCVI, paper recipe" in methods:
        scvi.settings.seed = seed
        fits["SCVI, paper recipe"] = fit_scvi(fit_data.copy(), train_size, **common)
    for name, recipe in (("CapVI", "scvi-tools"), ("CapVI, paper recipe", "paper")):
        if name in methods:
            scvi.settings.seed = seed
            kwargs = {"recipe": recipe, **capvi_kwargs}
            train = {**QUIET, **capvi_epochs(budget, fit_data.n_obs), **(capvi_train or {})}
            fits[name] = fit_capvi(
                fit_data.copy(), train_size, model_kwargs=kwargs, train_kwargs=train
            )
    return {name: fits[name] for name in methods if name in fits}


def score(fit: FitResult, test, n_mc_samples: int) -> dict:
    """Held-out metrics of one fitted model on the test cells."""
    model = fit.model
    y = test.obs[LABELS].to_numpy()
    row: dict = {"train_seconds": fit.seconds, "epochs": json.dumps(fit.epochs)}
    query = test.copy()
    if isinstance(model, scvi.model.SCANVI):
        query.obs[LABELS] = UNLABELED  # a held-out cell brings no annotation
    extra = {"progress_bar": False} if isinstance(model, CapVI) else {}
    ll = model.get_marginal_ll(query, n_mc_samples=n_mc_samples, return_mean=False, **extra)
    row["test_marginal_ll"] = float(np.mean(np.asarray(ll)))
    latent = model.get_latent_representation(query)
    k = int(min(90, len(latent) - 1))
    row["median_clisi"] = float(np.median(clisi(latent, y, n_neighbors=k)))
    batch = test.obs[BATCH].to_numpy()
    if len(np.unique(batch)) > 1:
        row["median_ilisi"] = float(np.median(ilisi(latent, batch, n_neighbors=k)))
    if isinstance(model, CapVI | scvi.model.SCANVI):
        row.update(classification(model, query, y))
    return row


def classification(model, query, y) -> dict:
    probs = model.predict(query, soft=True)
    pred = probs.columns.to_numpy()[probs.to_numpy().argmax(1)]
    return {
        "accuracy": accuracy(y, pred),
        "balanced_accuracy": weighted_accuracy(y, pred),
        "ece": expected_calibration_error(probs, y),
    }


def run_heldout(args) -> pd.DataFrame:
    rows = []
    for name in args.datasets:
        adata = read_dataset(name)
        for seed in args.seeds:
            split = Split.by_cells(adata.n_obs, (0.5, 0.25, 0.25), seed=seed)
            fits = heldout_fits(
                adata[split.fit].copy(),
                split.train_size,
                args.methods,
                args.max_epochs,
                json.loads(args.capvi),
                json.loads(args.capvi_train),
                seed,
            )
            test = adata[split.test].copy()
            for method, fit in fits.items():
                scvi.settings.seed = seed
                row = {"dataset": name, "seed": seed, "method": method + args.label}
                row.update(score(fit, test, args.n_mc_samples))
                print(json.dumps(row), flush=True)
                rows.append(row)
            append(pd.DataFrame(rows[-len(fits) :]), "heldout")
    return pd.DataFrame(rows)


def run_transfer(args) -> pd.DataFrame:
    rows = []
    for name in args.datasets:
        query_batch = TRANSFER_QUERIES[name]
        adata = read_dataset(name)
        is_query = (adata.obs[BATCH] == query_batch).to_numpy()
        for seed in args.seeds:
            ref, query = adata[~is_query].copy(), adata[is_query].copy()
            y = query.obs[LABELS].to_numpy()
            query.obs[LABELS] = pd.Categorical([UNLABELED] * query.n_obs)
            base = {"dataset": name, "seed": seed, "query_batch": query_batch}
            for method, seconds, query_seconds, probs in transfer_methods(
                ref, query, args.methods, args.max_epochs, json.loads(args.capvi), seed
            ):
                pred = probs.columns.to_numpy()[probs.to_numpy().argmax(1)]
                row = {
                    **base,
                    "method": method + args.label,
                    "accuracy": accuracy(y, pred),
                    "balanced_accuracy": weighted_accuracy(y, pred),
                    "ece": expected_calibration_error(probs, y),
                    "reference_seconds": seconds,
                    "query_seconds": query_seconds,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
            append(
                pd.DataFrame([r for r in rows if r["seed"] == seed and r["dataset"] == name]),
                "transfer",
            )
    return pd.DataFrame(rows)


def transfer_methods(ref, query, methods, budget, capvi_kwargs, seed=0):
    """Yield ``(method, reference seconds, query seconds, query probabilities)``."""
    epochs = scvi_epochs(budget, ref.n_obs)
    for name, network in (
        ("SCANVI + scArches", ARCHES_NETWORK),
        ("SCANVI + scArches, SCVI defaults", {}),
    ):
        if name not in methods:
            continue
        scvi.settings.seed = seed
        data = ref.copy()
        ref_fit = fit_scanvi_from_scvi(
            fit_scvi_as_users_run_it(
                data, 0.9, max_epochs=epochs, model_kwargs=network, train_kwargs=QUIET
            ),
            train_kwargs=QUIET,
        )
        q = query.copy()
        scvi.model.SCANVI.prepare_query_anndata(q, ref_fit.model)
        qmodel = scvi.model.SCANVI.load_query_data(q, ref_fit.model)
        start = time.perf_counter()
        qmodel.train(**SCARCHES_QUERY_TRAIN, **QUIET)
        yield name, ref_fit.seconds, time.perf_counter() - start, qmodel.predict(soft=True)
    for name, recipe in (("CapVI", "scvi-tools"), ("CapVI, paper recipe", "paper")):
        if name not in methods and f"{name} + query training" not in methods:
            continue
        scvi.settings.seed = seed
        fit = fit_capvi(
            ref.copy(),
            0.9,
            model_kwargs={"recipe": recipe, **capvi_kwargs},
            train_kwargs={**QUIET, **capvi_epochs(budget, ref.n_obs)},
        )
        if name in methods:
            yield name, fit.seconds, 0.0, fit.model.predict(query.copy(), soft=True)
        if f"{name} + query training" in methods:
            q = query.copy()
            qmodel = CapVI.load_query_data(q, fit.model)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No annotated cell")
                qmodel.train(max_epochs=SCARCHES_QUERY_TRAIN["max_epochs"], **QUIET)
            yield (
                f"{name} + query training",
                fit.seconds,
                time.perf_counter() - start,
                qmodel.predict(soft=True),
            )


def append(frame: pd.DataFrame, protocol: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"capvi_vs_scanvi_{protocol}.csv"
    if path.exists():  # rows of one-batch datasets have no iLISI: align the columns
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    frame.to_csv(path, index=False)


def summarise(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean ± sd over seeds ("± sd" only with several seeds)."""
    metrics = [m for m in metrics if m in frame]
    grouped = frame.groupby(keys, sort=False)[metrics]
    mean, sd, n = grouped.mean(), grouped.std(), grouped.size()

    def cell(m, s, k):
        if np.isnan(m):
            return "–"
        digits = 1 if abs(m) >= 100 else 3
        return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if k > 1 else "")

    out = pd.DataFrame(
        {c: [cell(m, s, k) for m, s, k in zip(mean[c], sd[c], n)] for c in metrics},
        index=mean.index,
    )
    out["seeds"] = n.to_numpy()
    return out


# (metric, higher is better, the baselines it is compared with: a prefix of the method name)
VERDICTS = [
    ("test_marginal_ll", True, ("SCVI", "SCANVI")),
    ("accuracy", True, ("SCANVI",)),
    ("balanced_accuracy", True, ("SCANVI",)),
    ("ece", False, ("SCANVI",)),
    ("median_clisi", False, ("SCANVI",)),
]


def verdicts(frame: pd.DataFrame, candidate: str = "CapVI") -> pd.DataFrame:
    """CapVI minus the best baseline, paired by seed (same split), mean ± sd over seeds.

    The best baseline of a metric is the one with the best mean over seeds among the methods
    named ``SCVI…`` / ``SCANVI…`` run on every seed CapVI ran on (the paper-recipe rows
    excluded); "win" means the paired
    difference is better than 0 by more than its sd (by any margin with one seed).
    """
    rows = []
    for dataset, data in frame.groupby("dataset", sort=False):
        wide = data.pivot_table(index="seed", columns="method", aggfunc="first")
        for metric, higher, prefixes in VERDICTS:
            if metric not in wide or candidate not in wide[metric]:
                continue
            values = wide[metric]
            base = [m for m in values if m.startswith(prefixes) and "paper" not in m]
            # baselines run on every seed CapVI ran on (a partial one would pick its seeds)
            seeds = values[candidate].notna()
            base = [m for m in base if values[m][seeds].notna().all()]
            if not base:
                continue
            means = values[base].mean()
            bar = means.idxmax() if higher else means.idxmin()
            diff = (values[candidate] - values[bar]).dropna()
            sign = 1 if higher else -1
            mean, sd = diff.mean(), diff.std() if len(diff) > 1 else 0.0
            win = sign * mean > (sd if len(diff) > 1 else 0)
            rows.append(
                {
                    "dataset": dataset,
                    "metric": metric,
                    "bar": bar,
                    "bar value": values[bar].mean(),
                    "CapVI": values[candidate].mean(),
                    "CapVI − bar": f"{mean:+.3f} ± {sd:.3f}" if len(diff) > 1 else f"{mean:+.3f}",
                    "seeds": len(diff),
                    "verdict": "win" if win else ("tie" if sign * mean >= -sd else "loss"),
                }
            )
        for metric, base, target in (
            ("median_ilisi", "SCVI", 0.95),
            ("train_seconds", "SCANVI", 1.25),
            ("train_seconds", "SCANVI, CapVI net", 1.25),
        ):
            if metric not in wide or base not in wide[metric] or candidate not in wide[metric]:
                continue
            ratio = wide[metric][candidate] / wide[metric][base]
            if ratio.isna().all():
                continue
            ok = ratio.mean() >= target if metric == "median_ilisi" else ratio.mean() <= target
            rows.append(
                {
                    "dataset": dataset,
                    "metric": f"{metric} ratio",
                    "bar": base,
                    "bar value": wide[metric][base].mean(),
                    "CapVI": wide[metric][candidate].mean(),
                    "CapVI − bar": f"× {ratio.mean():.2f}"
                    + (f" ± {ratio.std():.2f}" if len(ratio.dropna()) > 1 else ""),
                    "seeds": int(ratio.notna().sum()),
                    "verdict": ("≥" if metric == "median_ilisi" else "≤")
                    + f" × {target}: "
                    + ("met" if ok else "missed"),
                }
            )
    return pd.DataFrame(rows).round(3)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of ``table`` with its index levels as the first columns."""
    frame = table.reset_index()
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + " --- |" * frame.shape[1])
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def report(args) -> None:
    parts = [DOC.read_text().split("<!-- results -->")[0].rstrip(), "<!-- results -->", ""]
    heldout = OUT / "capvi_vs_scanvi_heldout.csv"
    if heldout.exists():
        frame = pd.read_csv(heldout)
        table = summarise(
            frame,
            ["dataset", "method"],
            [
                "test_marginal_ll",
                "accuracy",
                "balanced_accuracy",
                "ece",
                "median_clisi",
                "median_ilisi",
                "train_seconds",
            ],
        )
        parts += ["### Held-out cells (50/25/25 split)", "", markdown(table), ""]
        table = verdicts(frame).set_index(["dataset", "metric"])
        parts += ["### CapVI against the best baseline, paired by seed", "", markdown(table), ""]
    transfer = OUT / "capvi_vs_scanvi_transfer.csv"
    if transfer.exists():
        frame = pd.read_csv(transfer)
        table = summarise(
            frame,
            ["dataset", "query_batch", "method"],
            ["accuracy", "balanced_accuracy", "ece", "reference_seconds", "query_seconds"],
        )
        parts += ["### Label transfer to an unseen batch", "", markdown(table), ""]
        table = verdicts(frame).set_index(["dataset", "metric"])
        parts += ["### Label transfer: CapVI against the best SCANVI + scArches, paired by seed"]
        parts += ["", markdown(table), ""]
    DOC.write_text("\n".join(parts))
    print("\n".join(parts[3:]))


HELDOUT_METHODS = [
    "SCVI",
    "SCVI, no warm-up",
    "SCVI, CapVI net",
    "SCVI, CapVI net, no warm-up",
    "SCANVI",
    "SCANVI, CapVI net",
    "CapVI",
]
TRANSFER_METHODS = [
    "SCANVI + scArches",
    "SCANVI + scArches, SCVI defaults",
    "CapVI",
    "CapVI + query training",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["heldout", "transfer", "report"])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="default: every baseline and CapVI; add 'SCVI, paper recipe' and "
        "'CapVI, paper recipe' for the paper's recipe",
    )
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--n-mc-samples", type=int, default=100)
    parser.add_argument("--capvi", default="{}", help="JSON keyword arguments of CapVI")
    parser.add_argument("--capvi-train", default="{}", help="JSON keyword arguments of train")
    parser.add_argument("--label", default="", help="suffix of the method names")
    args = parser.parse_args()
    if args.protocol == "report":
        return report(args)
    if args.datasets is None:
        args.datasets = (
            list(TRANSFER_QUERIES)
            if args.protocol == "transfer"
            else ["kang2018_pbmc_ifnb_muscat_subset", "pbmc4k_10x_top2000"]
        )
    if args.methods is None:
        args.methods = HELDOUT_METHODS if args.protocol == "heldout" else TRANSFER_METHODS
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(
        f"{machine}, torch {torch.__version__} ({threads} threads), scvi-tools {scvi.__version__}",
        flush=True,
    )
    (run_heldout if args.protocol == "heldout" else run_transfer)(args)


if __name__ == "__main__":
    main()
