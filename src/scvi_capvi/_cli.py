"""Console entry point ``scvi-capvi``.

Only the standard library and :mod:`scvi_capvi._catalog` are imported at start, so ``--help``,
``--version``, ``list`` and argument errors answer at once; scvi-tools, PyTorch and scanpy are
imported by the commands that train.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from scvi_capvi import __version__
from scvi_capvi._catalog import (
    BENCHMARK_DEFAULTS,
    BUNDLED_DATASET,
    DATA_DIR_ENV,
    DATASETS,
    DEFAULT_METHODS,
    METHOD_INFO,
    QUICK_DATASETS,
    QUICK_SETTINGS,
    QUICKSTART_EPOCHS,
    available_datasets,
    candidate_data_dirs,
    dataset_status,
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to each option's help, except for switches and options whose
    help states its default in words; keeps the paragraphs of descriptions."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is True:
            return text
        return super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # keep hyphenated names (VampVI-VAE, --max-epochs) on one line
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(
                " ".join(p.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            for p in text.split("\n\n")
        )


def _join(names) -> str:
    return ", ".join(names)


def _looked_in(data_dir) -> str:
    dirs = candidate_data_dirs(data_dir)
    if not dirs:
        return f"no data folder: pass --data-dir or set ${DATA_DIR_ENV}"
    return "data folder: " + _join(str(d) for d in dirs)


# ---------------------------------------------------------------------------- commands
def _quickstart(args: argparse.Namespace) -> int:
    from scvi_capvi.benchmark import quickstart

    quickstart(
        out_dir=args.out,
        seed=args.seed,
        n_mc_samples=args.n_mc_samples,
        epochs=None
        if args.max_epochs is None
        else dict.fromkeys(("classifier_epochs", "frozen_epochs", "max_epochs"), args.max_epochs),
        progress_bar=not args.no_progress,
    )
    return 0


def _check_datasets(args: argparse.Namespace) -> list[str]:
    """The datasets to run; a usage error for unknown names or missing files, before any
    heavy import."""
    status = dataset_status(args.data_dir)
    if not args.datasets:
        if args.quick:
            return list(QUICK_DATASETS)
        return available_datasets(args.data_dir)
    unknown = [n for n in args.datasets if n not in status]
    if unknown:
        local = [n for n in status if n not in DATASETS]
        args.parser.error(
            f"unknown dataset(s): {_join(unknown)}. Known datasets: {_join(DATASETS)}"
            + (f"; other .h5ad files found: {_join(local)}" if local else "")
            + f" ({_looked_in(args.data_dir)}). See `scvi-capvi list`."
        )
    missing = [n for n in args.datasets if not status[n]]
    if missing:
        args.parser.error(
            f"dataset(s) not found here: {_join(missing)} ({_looked_in(args.data_dir)}). "
            f"Point --data-dir or ${DATA_DIR_ENV} at the folder holding them; "
            "`scvi-capvi list` shows what is available."
        )
    return list(args.datasets)


def _benchmark(args: argparse.Namespace) -> int:
    datasets = _check_datasets(args)

    import shlex
    from dataclasses import replace

    from scvi_capvi.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
    overrides = {
        "seed": args.seed,
        "progress_bar": not args.no_progress,
        "select": not args.no_select,
        "tune_backend": args.tune_backend,
    }
    for key in ("max_cells", "max_epochs", "n_mc_samples", "probe_epochs"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.probe_ks is not None:
        overrides["probe_ks"] = tuple(args.probe_ks)
    config = replace(config, **overrides)
    run_benchmark(
        datasets,
        args.methods,
        config,
        out_dir=args.out,
        data_dir=args.data_dir,
        command="scvi-capvi " + shlex.join(sys.argv[1:] if args.argv is None else args.argv),
    )
    from scvi_capvi.benchmark._report import peak_memory_gib

    peak = peak_memory_gib()
    print(f"Wrote {args.out}/results.csv and {args.out}/report.md")
    print(
        f"Peak memory: {peak['process']:.2f} GiB resident (largest child process "
        f"{peak['children']:.2f} GiB)"
    )
    return 0


def _wrap(text: str, indent: int = 0, width: int = 100) -> str:
    pad = " " * indent
    return textwrap.fill(
        text, width, initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False
    )


def _list(args: argparse.Namespace) -> int:
    status = dataset_status(args.data_dir)
    print(f"Datasets ([x] = available; {_looked_in(args.data_dir)})")
    for name, ok in status.items():
        mark = "[x]" if ok else "[ ]"
        info = DATASETS.get(name)
        if info is None:
            print(f"  {mark} {name}")
            print(_wrap("a local .h5ad file (not a registered dataset)", 6))
            continue
        batches = f"{info.n_batches} batch" + ("es" if info.n_batches != 1 else "")
        print(
            f"  {mark} {name}: {info.n_cells:,} cells x {info.n_genes:,} genes, "
            f"{info.n_cell_types} cell types, {batches}"
        )
        print(_wrap(info.description, 6))
    print(
        _wrap(
            "`scvi-capvi benchmark` runs every available dataset unless --datasets names some "
            f"(with --quick: {_join(QUICK_DATASETS)})."
        )
    )
    print()
    print("Methods ([x] = runs by default)")
    width = max(map(len, METHOD_INFO))
    for name, info in METHOD_INFO.items():
        mark = "[x]" if info.default else "[ ]"
        text = _wrap(info.description, 6 + width + 2).lstrip()
        print(f"  {mark} {name:<{width}}  {text}")
    print("`scvi-capvi benchmark` runs the [x] methods unless --methods names some.")
    return 0


# ---------------------------------------------------------------------------- parser
def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder of the local datasets: <name>.h5ad files, and 10x/ with pbmc11k_metadata/ "
        f"for pbmc11k (default: ${DATA_DIR_ENV}, then shared/data beside a source checkout)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``scvi-capvi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scvi-capvi",
        description="Multimodal latent priors for single-cell RNA-seq VAEs (CapVI, VampVI), "
        "as an scvi-tools plugin.",
        epilog="Start with `scvi-capvi quickstart` (offline, a few minutes on a CPU). "
        "`scvi-capvi <command> --help` describes a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    # ------------------------------------------------------------------ quickstart
    ep = QUICKSTART_EPOCHS
    quick = sub.add_parser(
        "quickstart",
        help="train CapVI, SCVI and SCANVI on bundled PBMCs and compare them (offline, "
        "a few minutes on a CPU)",
        description=f"Trains CapVI, SCVI and SCANVI on scanpy's bundled {BUNDLED_DATASET.name} "
        f"({BUNDLED_DATASET.n_cells} cells, {BUNDLED_DATASET.n_cell_types} cell types) with a "
        "60/20/20 train/validation/test split of the cells, then prints and writes to --out a "
        "table of the test marginal log-likelihood, cell-type accuracy, cLISI, epochs and "
        "seconds per epoch (results.csv), and a UMAP of CapVI's latent space "
        "(umap_capvi.png). Needs no download.",
        formatter_class=_HelpFormatter,
    )
    quick.add_argument("--out", metavar="DIR", default="capvi_quickstart", help="output folder")
    quick.add_argument("--seed", type=int, default=0, help="random seed (split and training)")
    quick.add_argument(
        "--n-mc-samples",
        metavar="N",
        type=int,
        default=1000,
        help="importance samples per test cell for the marginal log-likelihood",
    )
    quick.add_argument(
        "--max-epochs",
        metavar="N",
        type=int,
        default=None,
        help="cap each of CapVI's three training stages at N epochs, SCVI at 2N and SCANVI's "
        f"20 at N, for a quick smoke test (default: {ep['classifier_epochs']} classifier, "
        f"{ep['frozen_epochs']} frozen-classifier and {ep['max_epochs']} end-to-end epochs "
        f"for CapVI, {ep['frozen_epochs'] + ep['max_epochs']} for SCVI)",
    )
    quick.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    quick.set_defaults(func=_quickstart)

    # ------------------------------------------------------------------ benchmark
    qs = QUICK_SETTINGS
    off = [n for n in METHOD_INFO if n not in DEFAULT_METHODS]
    bench = sub.add_parser(
        "benchmark",
        help="run methods x datasets and write results.csv, report.md and figures",
        description="Fits each method on the training and validation cells of each dataset "
        "and scores the held-out test cells: marginal log-likelihood, reconstruction error, "
        "cell-type accuracy, LISI, scIB metrics and a cell-type probe on each latent space. "
        "Datasets with 4 or more batches are split by batch (the test batches are unseen in "
        "training), the others by cell. Writes results.csv, report.md and PNG figures to "
        "--out.\n\n"
        "Use --quick first: its settings finish in minutes on a CPU. `scvi-capvi list` shows "
        "the datasets and methods.",
        formatter_class=_HelpFormatter,
    )
    bench.add_argument(
        "--datasets",
        metavar="NAME",
        nargs="+",
        default=None,
        help=f"datasets to run: {_join(DATASETS)}, or the name of any other <name>.h5ad in "
        "the data folder (with obs columns 'cell_type' and 'batch') (default: every available "
        f"dataset; with --quick: {_join(QUICK_DATASETS)})",
    )
    bench.add_argument(
        "--methods",
        metavar="NAME",
        nargs="+",
        choices=list(METHOD_INFO),
        default=None,
        help=f"methods to run: {_join(METHOD_INFO)} (default: all but {_join(off)})",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"small settings for a run of minutes on a CPU: at most {qs['max_epochs']} epochs "
        f"per training stage, {qs['n_mc_samples']} importance samples, {qs['probe_epochs']} "
        f"probe epochs, at most {qs['max_cells']:,} cells per dataset, fast scIB metrics and "
        "small hyperparameter grids",
    )
    bench.add_argument("--out", metavar="DIR", required=True, help="report folder (required)")
    _add_data_dir(bench)
    bench.add_argument(
        "--seed", type=int, default=0, help="random seed (splits, subsampling and training)"
    )
    bench.add_argument(
        "--no-select",
        action="store_true",
        help="skip CapVI's hyperparameter search and use its defaults (the search picks the "
        "classifier by validation cross-entropy, then the prior scale and mixing penalty by "
        "validation log-likelihood)",
    )
    bench.add_argument(
        "--tune-backend",
        choices=("auto", "ray", "local"),
        default="auto",
        help="how to run the hyperparameter search: 'ray' through scvi.autotune (Ray Tune), "
        "'local' one model after the other in this process, 'auto' Ray when ray[tune] is "
        "installed",
    )
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    small = bench.add_argument_group(
        "smaller runs", "Override the full or --quick settings, e.g. for a smoke test."
    )
    small.add_argument(
        "--max-cells",
        metavar="N",
        type=int,
        default=None,
        help="subsample each dataset to at most N cells (seeded) (default: all cells; with "
        f"--quick: {qs['max_cells']})",
    )
    small.add_argument(
        "--max-epochs",
        metavar="N",
        type=int,
        default=None,
        help="cap every training stage of every model at N epochs, early stopping still on; "
        "models trained in one stage get 2N (default: each method's own cap; with --quick: "
        f"{qs['max_epochs']})",
    )
    small.add_argument(
        "--n-mc-samples",
        metavar="N",
        type=int,
        default=None,
        help="importance samples per test cell for the marginal log-likelihood (default: "
        f"{BENCHMARK_DEFAULTS['n_mc_samples']}; with --quick: {qs['n_mc_samples']})",
    )
    small.add_argument(
        "--probe-epochs",
        metavar="N",
        type=int,
        default=None,
        help="training epochs of the probe, a small neural network that predicts cell types "
        "from each latent space, from the raw counts and from PCA (default: "
        f"{BENCHMARK_DEFAULTS['probe_epochs']}; with --quick: {qs['probe_epochs']})",
    )
    small.add_argument(
        "--probe-ks",
        metavar="K",
        type=int,
        nargs="+",
        default=None,
        help="numbers of principal components for the probe's PCA baselines (default: "
        + " ".join(map(str, BENCHMARK_DEFAULTS["probe_ks"]))
        + ")",
    )
    bench.set_defaults(func=_benchmark, parser=bench)

    # ------------------------------------------------------------------ list
    lst = sub.add_parser(
        "list",
        help="list the benchmark's datasets (and which are available here) and methods",
        description="Lists the datasets `scvi-capvi benchmark` knows, marking those found in "
        "the data folder, and its methods, marking those it runs by default.",
        formatter_class=_HelpFormatter,
    )
    _add_data_dir(lst)
    lst.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``scvi-capvi <command>``."""
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
