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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
