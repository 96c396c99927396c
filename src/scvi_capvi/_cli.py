"""Console entry point ``scvi-capvi``."""

from __future__ import annotations

import argparse
import sys


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


def _benchmark(args: argparse.Namespace) -> int:
    import shlex
    from dataclasses import replace

    from scvi_capvi.benchmark import BenchmarkConfig, available_datasets, run_benchmark

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
    if args.datasets:
        datasets = args.datasets
    else:
        datasets = ["pbmc68k_reduced"] if args.quick else available_datasets(args.data_dir)
    run_benchmark(
        datasets, args.methods, config, out_dir=args.out, data_dir=args.data_dir,
        command="scvi-capvi " + shlex.join(sys.argv[1:] if args.argv is None else args.argv),
    )  # fmt: skip
    print(f"Wrote {args.out}/results.csv and {args.out}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``scvi-capvi <command>``."""
    parser = argparse.ArgumentParser(
        prog="scvi-capvi", description="Multimodal latent priors for scRNA-seq VAEs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser(
        "quickstart",
        help="train CapVI and scVI on bundled PBMCs (offline, a few minutes on a CPU)",
    )
    quick.add_argument("--out", default="capvi_quickstart", help="output folder")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--n-mc-samples", type=int, default=1000, help="importance samples")
    quick.add_argument(
        "--max-epochs", type=int, default=None, help="cap every training stage (smoke runs)"
    )
    quick.add_argument("--no-progress", action="store_true", help="hide progress bars")
    quick.set_defaults(func=_quickstart)

    bench = sub.add_parser(
        "benchmark",
        help="methods x datasets x metrics -> results.csv, report.md and figures",
        description="Run the benchmark of SPEC §5. --quick: pbmc68k_reduced, small epoch caps "
        "and grids (minutes on a CPU).",
    )
    bench.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="dataset names (default: all available; --quick: pbmc68k_reduced)",
    )
    bench.add_argument("--methods", nargs="+", default=None, help="method names (default: all)")
    bench.add_argument("--quick", action="store_true", help="small epochs and grids")
    bench.add_argument("--out", required=True, help="report folder")
    bench.add_argument("--data-dir", default=None, help="folder of the .h5ad datasets")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--no-select",
        action="store_true",
        help="skip CapVI model selection (use CapVI's defaults)",
    )
    bench.add_argument(
        "--tune-backend", choices=("auto", "ray", "local"), default="auto",
        help="model selection through scvi.autotune/Ray Tune, or a plain local grid "
        "(auto: Ray when installed)",
    )  # fmt: skip
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    # smoke-test knobs (CI): smaller than --quick
    for flag, kind in (("--max-cells", int), ("--max-epochs", int), ("--n-mc-samples", int),
                       ("--probe-epochs", int)):  # fmt: skip
        bench.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    bench.add_argument("--probe-ks", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    bench.set_defaults(func=_benchmark)
    args = parser.parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
