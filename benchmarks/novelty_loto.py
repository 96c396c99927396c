"""Leave-one-type-out: unknown cell types called unknown, CapVI vs SCANVI.

    OMP_NUM_THREADS=1 python benchmarks/novelty_loto.py --datasets kang2018_pbmc_ifnb_muscat_subset

Every model at its defaults (CapVI; SCVI then SCANVI as scvi-tools' tutorials run them).
Protocols (``--modes``): ``removed`` (the hidden type's cells removed from the training data,
the held-out test cells scored) and ``query`` (the hidden type removed from the reference
batches; a query batch with every type mapped with ``load_query_data`` and scored; only for
datasets in ``QUERY_BATCHES``). Each run writes one table per dataset, mode and seed (a CSV,
and a JSON with its command and environment, where a note on the run can be added by hand) to
``docs/benchmarks/novelty/``, kept in the repository, and the per-cell scores to
``benchmarks/results/novelty_scores/`` (not kept); then

    python benchmarks/novelty_loto.py --report docs/benchmarks/novelty.md

writes the page from every table there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from _common import top_variable_genes

from scvi_capvi.benchmark import leave_one_type_out
from scvi_capvi.data import read_dataset
from scvi_capvi.model._novelty import DEFAULT_NOVELTY_METHOD

# the runs' tables (small, kept in the repository so that the page can be rebuilt anywhere)
OUT = Path(__file__).parent.parent / "docs" / "benchmarks" / "novelty"
# per-cell scores of every run (large, not kept)
SCORES = Path(__file__).parent / "results" / "novelty_scores"
QUERY_BATCHES = {
    "kang2018_pbmc_ifnb_muscat_subset": ["stim107"],
    "cellbench_lung_cell_lines": ["sc_dropseq"],
}
LABELLED = [
    "kang2018_pbmc_ifnb_muscat_subset",
    "pbmc4k_10x_top2000",
    "cellbench_lung_cell_lines",
    "human_kidney_young2018_top2000",
    "mouse_bladder_han2018",
    "pbmc8k_scvijl_200genes",
]

COLUMNS = {
    "n_types": "hidden types run",
    "n_query_hidden": "hidden cells",
    "auroc_auto": "AUROC default (auto)",
    "auroc_neighbors": "AUROC neighbors",
    "auroc_ensemble": "AUROC ensemble",
    "auroc_latent": "AUROC latent",
    "auroc_reconstruction": "AUROC reconstruction",
    "auroc_prior": "AUROC prior",
    "auroc_entropy": "AUROC entropy",
    "auroc_max_prob": "AUROC max-prob",
    "auroc_scanvi_max_prob": "AUROC SCANVI max-prob",
    "auroc_scanvi_entropy": "AUROC SCANVI entropy",
    "auroc_scanvi_neighbors": "AUROC SCANVI latent + neighbors",
    "false_unknown_rate": "false unknown (target 5 %)",
    "hidden_called_unknown": "hidden called unknown",
    "known_accuracy": "known acc",
    "known_accuracy_with_unknown": "known acc with unknown",
    "scanvi_false_unknown_rate": "SCANVI false unknown",
    "scanvi_hidden_called_unknown": "SCANVI hidden called unknown",
    "scanvi_known_accuracy": "SCANVI known acc",
    "scanvi_known_accuracy_with_unknown": "SCANVI known acc with unknown",
    "ece_after": "ECE",
    "scanvi_ece": "SCANVI ECE",
}

PREAMBLE = """# Unknown cell types called unknown (leave one type out)

Can CapVI tell a cell type it was never shown from the ones it knows, at a false-unknown rate
you choose, and keep labelling the known ones right? Each annotated type is hidden in turn
({{func}}`scvi_capvi.benchmark.leave_one_type_out`), on the same split for CapVI and the
baseline, scvi-tools' SCANVI with its maximum posterior probability and its entropy (the only
guards it offers).

- **`removed`**: the hidden type's cells are removed from the training data (seeded
  50/25/25 train / validation / test cells); the test cells, all types, are scored.
- **`query`**: the reference is every batch but the query batch, without the hidden type; the
  query batch (every type) is mapped with `load_query_data` (scArches: CapVI's 100 query
  epochs; SCANVI from the scArches tutorial's SCVI network, its 100 query epochs) and scored.
- **Models at their defaults**: CapVI (three stages, early stopping); SCVI at scvi-tools'
  defaults, then `SCANVI.from_scvi_model` with the tutorial's 20 epochs.
- **AUROC**: hidden-type vs known-type cells, per score. CapVI's default score is
  `{default}`: `neighbors` for cells of the batches the reference trained on (the `removed`
  protocol); for a batch it never saw (the `query` protocol), the mean of the `ensemble`
  quantile among the kept validation cells and the `neighbors` quantile among the query
  cells `ensemble` finds typical (below the validation median; at least 50), ranked among
  the validation cells' own means (rows of `removed` runs from before `auto` existed show
  `neighbors` in its column). `neighbors`: the
  share of query cells among each scored cell's 50 nearest neighbours in a pool of annotated
  reference cells and query cells (E_q[z]). `ensemble` (the default before): the
  Mahalanobis distance of E_q[z] to the nearest known type (`latent`) plus the Pearson misfit
  of the counts under the decoder (`reconstruction`), each standardised on the training
  cells. *SCANVI latent + neighbors* is the `neighbors` score computed in SCANVI's latent
  space (its reference cells, validation cells and query), to tell the score's share of a
  gain from the latent space's.
- **Unknown call** (CapVI's default score): the split-conformal threshold at 5 % over the
  reference's validation cells of known types (`get_novelty_threshold`; SCANVI: the same
  threshold rule on its 1 − max-probability). *false unknown* is the measured fraction of
  known test/query cells called unknown; *known acc with unknown* counts an unknown call as
  an error.

Commands: under each run below; this page:
`python benchmarks/novelty_loto.py --report docs/benchmarks/novelty.md`.
"""


def _markdown(frame: pd.DataFrame) -> str:
    cols = [c for c in COLUMNS if c in frame.columns]
    frame = frame[cols].rename(columns=COLUMNS)
    head = "| " + " | ".join([frame.index.name or "", *frame.columns]) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    body = [
        "| "
        + " | ".join([str(i), *(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row)])
        + " |"
        for i, row in zip(frame.index, frame.itertuples(index=False))
    ]
    return "\n".join([head, rule, *body])


def collect_report(out: Path) -> str:
    """The page: per-run means over hidden types, then every run's per-type table."""
    means, sections, meta = [], [], {}
    for path in sorted(out.glob("*.csv")):
        frame = pd.read_csv(path, index_col=0)
        if "_removed_" in path.stem:
            # rows from before "auto" existed: in this protocol it is "neighbors" (every
            # scored cell is of the reference's batches)
            if "auroc_auto" not in frame:
                frame.insert(frame.columns.get_loc("auroc_neighbors"), "auroc_auto", np.nan)
            frame["auroc_auto"] = frame["auroc_auto"].fillna(frame["auroc_neighbors"])
        info = path.with_suffix(".json")
        if info.exists():
            meta[path.stem] = json.loads(info.read_text())
        run = meta.get(path.stem, {})
        how = "".join(f"\n`{c}`\n" for c in np.atleast_1d(run.get("command", [])))
        how += f"\n{run['note']}\n" if "note" in run else ""
        sections.append(f"### {path.stem}\n{how}\n{_markdown(frame)}\n")
        mean = frame.select_dtypes("number").mean()
        # a run stopped early holds fewer types than the dataset: say how many
        mean["n_types"] = len(frame)
        means.append(mean.rename(path.stem))
    summary = pd.DataFrame(means)
    summary.index.name = "run (mean over hidden types)"
    env = sorted({json.dumps(m.get("environment", {}), sort_keys=True) for m in meta.values()})
    return "\n".join(
        [
            PREAMBLE.format(default=DEFAULT_NOVELTY_METHOD),
            "## Means over hidden types\n",
            _markdown(summary),
            "",
            "Environment: " + "; ".join(env) + ".",
            "",
            "## Per hidden type\n",
            *sections,
        ]
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=LABELLED)
    parser.add_argument("--modes", nargs="+", default=["removed", "query"])
    parser.add_argument("--hidden-types", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-scanvi", action="store_true")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="only write the page from every CSV under --out (no training)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        args.report.write_text(collect_report(args.out))
        print(args.report.read_text())
        return
    scvi.settings.seed = args.seed
    for name in args.datasets:
        # as the clustering benchmark: 2,000 most variable genes for datasets with more
        adata = top_variable_genes(read_dataset(name))
        batch_key = "batch" if adata.obs["batch"].nunique() > 1 else None
        for mode in args.modes:
            if mode == "query" and name not in QUERY_BATCHES:
                continue
            start = time.perf_counter()
            stem = f"{name}_{mode}_seed{args.seed}"
            labels = adata.obs["cell_type"].astype(str)
            if mode == "query":  # a type the query batch lacks has no cell to score
                labels = labels[adata.obs["batch"].astype(str).isin(QUERY_BATCHES[name])]
            types = args.hidden_types or sorted(labels.unique())
            # rows of other hidden types from an earlier run stay (a run can be extended or
            # resumed type by type); a type run again replaces its row
            rows = []
            if (args.out / f"{stem}.csv").exists():
                earlier = pd.read_csv(args.out / f"{stem}.csv", index_col=0)
                rows.append(earlier[~earlier.index.astype(str).isin(types)])
            for hidden in types:  # one type at a time, so a long run keeps what it finished
                rows.append(
                    leave_one_type_out(
                        adata,
                        batch_key=batch_key,
                        hidden_types=[hidden],
                        mode=mode,
                        query_batches=QUERY_BATCHES[name] if mode == "query" else None,
                        seed=args.seed,
                        scanvi=not args.no_scanvi,
                        progress_bar=False,
                    )
                )
                frame = pd.concat(rows)
                frame.to_csv(args.out / f"{stem}.csv")
                # per-cell scores, to try other score combinations without training again
                SCORES.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(
                    SCORES / f"{stem}_{_slug(hidden)}.npz",
                    **rows[-1].attrs["scores"][hidden],
                )
                print(frame.tail(1).round(3).to_string(), flush=True)
            meta = {
                "command": "OMP_NUM_THREADS=1 python benchmarks/novelty_loto.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "date": str(date.today()),
                "seconds": round(time.perf_counter() - start),
                "n_cells": adata.n_obs,
                "environment": {
                    "torch": torch.__version__,
                    "scvi-tools": scvi.__version__,
                    "machine": platform.machine(),
                    "threads": torch.get_num_threads(),
                },
            }
            (args.out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
            print(f"\n## {stem}, {adata.n_obs} cells, {meta['seconds']} s")
            print(frame.round(3).to_string(), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
