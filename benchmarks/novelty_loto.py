"""Leave-one-type-out: unknown-type detection and calibration of CapVI vs SCANVI (issue 7).

    OMP_NUM_THREADS=1 python benchmarks/novelty_loto.py --datasets kang2018_pbmc_ifnb_muscat_subset

Writes ``benchmarks/results/novelty/<dataset>_<mode>.csv`` (one row per hidden type) and
``summary.md`` (per dataset and mode, averaged over hidden types), and prints them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

from scvi_capvi.benchmark import leave_one_type_out
from scvi_capvi.data import read_dataset

OUT = Path(__file__).parent / "results" / "novelty"


def cap_cells_per_type(adata, n_max: int, seed: int):
    """At most ``n_max`` random cells of each type (rare types are kept whole)."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in adata.obs.groupby("cell_type", observed=True).indices.items():
        keep.append(rng.choice(idx, n_max, replace=False) if len(idx) > n_max else idx)
    return adata[np.sort(np.concatenate(keep))].copy()


COLUMNS = {
    "n_test_hidden": "hidden test cells",
    "auroc_prior": "AUROC prior",
    "auroc_latent": "AUROC latent",
    "auroc_entropy": "AUROC entropy",
    "auroc_max_prob": "AUROC max-prob",
    "auroc_combined": "AUROC combined",
    "auroc_scanvi_max_prob": "AUROC SCANVI max-prob",
    "known_accuracy": "known acc",
    "known_accuracy_with_unknown": "known acc (unknown option)",
    "hidden_called_unknown": "hidden called unknown",
    "scanvi_known_accuracy": "SCANVI known acc",
    "ece_before": "ECE before",
    "ece_after": "ECE after",
    "scanvi_ece": "SCANVI ECE",
    "temperature": "T",
}


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
    """Per-type tables and the mean over hidden types of every CSV in ``out``."""
    means, sections = [], []
    for path in sorted(out.glob("*.csv")):
        frame = pd.read_csv(path, index_col=0)
        sections.append(f"### {path.stem}\n\n{_markdown(frame)}\n")
        means.append(frame.select_dtypes("number").mean().rename(path.stem))
    summary = pd.DataFrame(means)
    summary.index.name = "run (mean over hidden types)"
    return "\n".join(
        ["## Means over hidden types\n", _markdown(summary), "", "## Per hidden type\n", *sections]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=[
            "kang2018_pbmc_ifnb_muscat_subset",
            "pbmc4k_10x_top2000",
            "human_kidney_young2018_top2000",
        ],
    )
    parser.add_argument("--modes", nargs="+", default=["unlabelled"])
    parser.add_argument("--epochs", type=int, default=60, help="cap of each CapVI stage")
    parser.add_argument("--scvi-epochs", type=int, default=100)
    parser.add_argument("--scanvi-epochs", type=int, default=20)
    parser.add_argument("--semi-supervised", action="store_true")
    parser.add_argument("--no-scanvi", action="store_true")
    parser.add_argument("--hidden-types", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="only collect every CSV under --out into this markdown file (no training)",
    )
    parser.add_argument(
        "--max-cells-per-type",
        type=int,
        default=None,
        help="subsample each cell type to at most this many cells (seeded; for CPU budgets)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        args.report.write_text(collect_report(args.out))
        print(args.report.read_text())
        return
    scvi.settings.seed = args.seed
    tag = "_semi" if args.semi_supervised else ""
    summaries = []
    for name in args.datasets:
        adata = read_dataset(name)
        if args.max_cells_per_type:
            adata = cap_cells_per_type(adata, args.max_cells_per_type, args.seed)
        for mode in args.modes:
            start = time.perf_counter()
            frame = leave_one_type_out(
                adata,
                hidden_types=args.hidden_types,
                mode=mode,
                seed=args.seed,
                capvi_kwargs={"semi_supervised": args.semi_supervised},
                capvi_train_kwargs={
                    "classifier_epochs": args.epochs,
                    "frozen_epochs": args.epochs,
                    "max_epochs": args.epochs,
                },
                scanvi=not args.no_scanvi,
                scvi_max_epochs=args.scvi_epochs,
                scanvi_train_kwargs={"max_epochs": args.scanvi_epochs},
            )
            frame.attrs["n_cells"] = adata.n_obs
            frame.to_csv(args.out / f"{name}_{mode}{tag}.csv")
            print(
                f"\n## {name} ({mode}{tag}), {adata.n_obs} cells, "
                f"{time.perf_counter() - start:.0f} s"
            )
            print(frame.round(3).to_string())
            mean = frame.select_dtypes("number").mean().rename(f"{name} ({mode}{tag})")
            summaries.append(mean)
    summary = pd.DataFrame(summaries)
    cols = [c for c in summary.columns if not c.startswith("n_test")]
    text = summary[cols].round(3).T.to_string()
    meta = {
        "torch": torch.__version__,
        "scvi-tools": scvi.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / f"summary{tag}.md").write_text(
        "Means over hidden types\n\n```\n" + text + "\n```\n\n" + json.dumps(meta, indent=1)
    )
    print("\n# mean over hidden types\n" + text)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
